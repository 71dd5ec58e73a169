"""What each file of the real-world corpus (``../shared/corpus/public``) must end as.

``name -> ("indexed", phrase)``: the phrase, a real phrase of that document (compared case- and
whitespace-insensitively), must appear in the extracted text; for legacy-encoded or UTF-16/32
files it carries a non-ASCII character where the document has one, so mojibake fails.
``name -> ("needs_review", reason)``: parsing ends with that ``ReasonCode`` value.
``name -> ("skipped", "empty")``: the file has no content at all (zero bytes, whitespace, no cells).
Each entry was decided by opening the file and reading it.
"""

from __future__ import annotations

_UNSUPPORTED = ("needs_review", "unsupported_type")
_EMPTY = ("skipped", "empty")

EXPECTED: dict[str, tuple[str, str]] = {
    # Not documents, or formats we do not extract: audio, images (no OCR), legacy Office, Outlook.
    "CantinaBand3.wav": _UNSUPPORTED,
    "duplicate-paragraphs.doc": _UNSUPPORTED,
    "fake-doc-emphasized-text.doc": _UNSUPPORTED,
    "fake.doc": _UNSUPPORTED,
    "fake-email-attachment.msg": _UNSUPPORTED,
    "fake-email.msg": _UNSUPPORTED,
    "img_DA-1p.jpg": _UNSUPPORTED,
    "img_DA-1p.png": _UNSUPPORTED,
    "img_chi_sim_image.jpeg": _UNSUPPORTED,
    "img_double-column-A.jpg": _UNSUPPORTED,
    "img_jpn-vert.jpeg": _UNSUPPORTED,
    "img_layout-parser-paper-with-table.jpg": _UNSUPPORTED,
    "img_table-multi-row-column-cells.png": _UNSUPPORTED,
    "unsupported_factbook.xsl": _UNSUPPORTED,  # an XSL stylesheet: a program, not a document
    # Locked or image-only.
    "eml_fake-encrypted.eml": ("needs_review", "encrypted"),  # PGP/MIME multipart/encrypted
    "password_protected.xlsx": ("needs_review", "encrypted"),  # OLE2 EncryptedPackage
    "pdf_loremipsum-flat.pdf": ("needs_review", "no_text_layer"),  # a scanned page, no text layer
    "picture.pptx": ("needs_review", "no_text_layer"),  # one slide holding one picture
    "test-image-jpg-mime.pptx": ("needs_review", "no_text_layer"),  # one slide holding one picture
    # Nothing to index.
    "empty.txt": _EMPTY,  # zero bytes
    "eml_empty.eml": _EMPTY,  # whitespace only
    "empty.xlsx": _EMPTY,  # one sheet, no cells
    # Plain text and lightweight markup.
    "README-w-include.org": ("indexed", "You can parse this document using the HTML parser."),
    "README.org": ("indexed", "A 10-K SEC filing in HTML format"),
    "README.rst": ("indexed", "instructions for pulling in some sample docs"),
    "book-war-and-peace-1225p.txt": ("indexed", "tête-à-tête"),
    "book-war-and-peace-1p.txt": ("indexed", "so Genoa and Lucca are now just family estates"),
    "fake-text.txt": ("indexed", "Doylestown, PA 18901"),
    "fake-text-utf-16.txt": ("indexed", "I love fuzzy blankets"),
    "fake-text-utf-16-be.txt": ("indexed", "Hamburgers are delicious"),
    "fake-text-utf-16-le.txt": ("indexed", "Dogs are the best"),
    "fake-text-utf-32.txt": ("indexed", "This is a test document to use for unit tests."),
    "language-docs_UDHR_first_article_all.txt": ("indexed", "Geist der Brüderlichkeit begegnen"),
    "language-docs_eng_spa.txt": ("indexed", "dotados como están de razón y conciencia"),
    "language-docs_eng_spa_mult.org": ("indexed", "dotados como están de razón"),
    "language-docs_eng_spa_mult.rst": ("indexed", "como están de razón y conciencia"),
    "language-docs_eng_spa_mult.rtf": ("indexed", "dotados como están de razón y conciencia"),
    "simple-table.md": ("indexed", "Juicy Apples | 1.99 | 739"),
    "umlauts-non-utf8.md": ("indexed", "äöüß"),  # latin-1 bytes
    # Tables and records.
    "arbitrary-records.ndjson": ("indexed", "name: Pruning Shears"),
    "csv-with-long-lines.csv": ("indexed", "SpearmanCorrelationCoefficient"),
    "semicolon-delimited.csv": ("indexed", "tempor incididunt"),
    "single-column.csv": ("indexed", "dolore; magna aliqua"),
    "stanley-cups.csv": ("indexed", "Maple Leafs | TOR | 13"),
    "stanley-cups-with-emoji.tsv": ("indexed", "Flyers | PHI | 2"),
    "table-semicolon-delimiter.csv": ("indexed", "2023 | 2 | 143,1 | -814,38"),
    "simple.json": ("indexed", "DOYLESTOWN, PA 18901"),
    "spring-weather.html.json": ("indexed", "News Around NOAA"),
    "emoji.xlsx": ("indexed", "🤠😅"),
    "language-docs_eng_spa.xlsx": ("indexed", "nacen libres e iguales en dignidad"),
    "stanley-cups.xlsx": ("indexed", "Stanley Cups Since 67"),
    "tests-example.xls": ("indexed", "What C datatypes are 8 bits?"),
    # Markup.
    "example-10k-1p.html": ("indexed", "Commission file number: 000-30653"),
    "example-10k.html": ("indexed", "Galaxy Gaming, Inc."),
    "example-steelJIS-datasheet.html": ("indexed", "SteelJIS: Japanese Steels and Alloys"),
    "example-steelJIS-datasheet-utf-16.html": ("indexed", "About us 日本語"),
    "example-with-scripts.html": ("indexed", "Russian Offensive Campaign Assessment, December 13"),
    "fake-html.html": ("indexed", "Row 2, Cell 1 | Row 2, Cell 2"),
    "fake-html-cp1252.html": ("indexed", "Das war köstlich!"),
    "fake-html-lang-de.html": ("indexed", "Jahresabschluss zum Geschäftsjahr"),
    "fake-html-pre.htm": ("indexed", "USA PATRIOT ACT"),
    "fake-html-with-base64-image.html": ("indexed", "Test page"),
    "fake-html-with-footer-and-header.html": ("indexed", "My first paragraph."),
    "fake-html-with-image-from-url.html": ("indexed", "Test page"),
    "ideas-page.html": ("indexed", "How to Get New Ideas"),
    "factbook-utf-16.xml": ("indexed", "Justin Trudeau"),
    "language-docs_eng_spa_mult.xml": ("indexed", "dotados como están de razón"),
    "language-docs_eng_spa_mult.epub": ("indexed", "dotados como están de razón"),
    "winter-sports.epub": ("indexed", "Winter Sports in Switzerland"),
    "fake.odt": ("indexed", "Lorem ipsum dolor sit amet."),
    # Word processing and slides.
    "contains-pictures.docx": ("indexed", "runs “through” the floating picture"),
    "docx-tables.docx": ("indexed", "Header Col 1 | Header Col 2"),
    "example-list-items-multiple.docx": ("indexed", "dummy text of the printing and typesetting industry"),
    "fake-doc-emphasized-text.docx": ("indexed", "I am a bold italic bold-italic text."),
    "fake.docx": ("indexed", "Lorem ipsum dolor sit amet."),
    "handbook-872p.docx": ("indexed", "Handbook for Chapter 13 Standing Trustees"),
    "language-docs_eng_spa_mult.docx": ("indexed", "dotados como están de razón"),
    "teams_chat.docx": ("indexed", "James Bond"),
    "fake-power-point.pptx": ("indexed", "Here is some text in a text box!"),
    "fake-power-point-many-pages.pptx": ("indexed", "Page 2"),
    "language-docs_eng_spa_mult.pptx": ("indexed", "deben comportarse fraternalmente"),
    "science-exploration-1p.pptx": ("indexed", "Heliophysics Science Division"),
    "simple.pptx": ("indexed", "Where have all the flowers gone?"),
    # E-mail (some named .txt or .p7s: sniffed by content).
    "eml_email-equals-attachment-filename.eml": ("indexed", "Below is an example of an odd filename"),
    "eml_email-no-utf8-2008-07-16.062410.eml": ("indexed", "סלבה היקר"),  # windows-1255 body
    "eml_email-no-utf8-2014-03-17.111517.eml": ("indexed", "The password for your Google Account"),
    "eml_email-replace-mime-encodings-error-1.eml": ("indexed", "Copyright ©2022 Zoom Video Communications"),
    "eml_email-replace-mime-encodings-error-3.eml": ("indexed", "© 2022, Amazon Web Services, Inc."),
    "eml_fake-email-attachment.eml": ("indexed", "Here's the attachments!"),
    "eml_fake-email-b64.eml": ("indexed", "Roses are red"),
    "eml_fake-email-header.eml": ("indexed", "This is a test email to use for unit tests."),
    "eml_fake-email-malformed-encoding.eml": ("indexed", "Violets are blue"),
    "eml_fake-email.txt": ("indexed", "Roses are red"),
    "eml_mime-attach-mp3.eml": ("indexed", "This is an email with an MP3 attachment."),
    "eml_mime-multipart-digest.eml": ("indexed", "This is the second message in the digest."),
    "eml_mime-no-body.eml": ("indexed", "Image Only Email"),
    "eml_mime-no-subject.eml": ("indexed", "This is a simple email message without a subject."),
    "eml_mime-word-encoded-subject.eml": ("indexed", "Simple email with ☸☿ Unicode subject"),
    "eml_signed-doc.p7s": ("indexed", "This is a test"),  # S/MIME signed (not encrypted)
    "eml_simple-rfc-822.eml": ("indexed", "This is an RFC 822 email message."),
    "eml_test-invalid-date.eml": ("indexed", "This is a test-email with an invalid date format."),
    "fake-email.txt": ("indexed", "Violets are blue"),
    "language-docs_eng_spa_mult.eml": ("indexed", "dotados como están de razón"),
    # PDF.
    "language-docs_fr_olap.pdf": ("indexed", "Résumés et interrogations de logs de requêtes OLAP"),
    "pdf_DA-619p.pdf": ("indexed", "please return to Lady Yvette Montilyet"),
    "pdf_a1977-backus-p21.pdf": ("indexed", "permits the definition of new functional"),
    "pdf_all-number-table.pdf": ("indexed", "1400.01"),
    "pdf_chevron-page.pdf": ("indexed", "We’re investing to grow in the Eastern Mediterranean"),
    "pdf_copy-protected.pdf": ("indexed", "LayoutParser: A Unified Toolkit for Deep"),  # owner password only
    "pdf_embedded-cmap-cidfont.pdf": ("indexed", "This text uses an embedded CMap"),
    "pdf_embedded-images-tables.pdf": ("indexed", "Langmuir adsorption isotherm"),
    "pdf_embedded-link.pdf": ("indexed", "This is the phone number."),
    "pdf_emphasis-text.pdf": ("indexed", "Now Italic and bold."),
    "pdf_fake-bold-sample.pdf": ("indexed", "The quick brown fox jumps over the lazy dog."),
    "pdf_header-test-doc.pdf": ("indexed", "Here is a lovely sentences."),
    "pdf_interface-config-guide-p93.pdf": ("indexed", "Multiple PXCs on the same underlying cross-connect"),
    "pdf_invalid-pdf-structure-pdfminer-one-page.pdf": ("indexed", "Leadership in Cybersecurity"),
    "pdf_korean-text-with-tables.pdf": ("indexed", "적립 제외 대상"),
    "pdf_layout-parser-paper-fast.pdf": ("indexed", "Document Image Analysis"),
    "pdf_layout-parser-paper-with-empty-pages.pdf": ("indexed", "Document Image Analysis"),
    "pdf_list-item-example.pdf": ("indexed", "Introduction to Product"),
    "pdf_multi-column-2p.pdf": ("indexed", "Dense Passage Retrieval for Open-Domain Question Answering"),
    "pdf_multi-column.pdf": ("indexed", "What is the body of water between England and Ireland?"),
    "pdf_pdf-bad-color-space.pdf": ("indexed", "2023 Environmental Report"),
    "pdf_pdf2image-memory-error-test-400p.pdf": ("indexed", "IDRS Terminal Responses"),
}
