"""Sniffing: types come from bytes and structure; a name only breaks ties between text dialects."""

from __future__ import annotations

import codecs
import io
import json
import zipfile
from pathlib import Path

import pytest

from ingestion import sniff
from ingestion.errors import PermanentError, ReasonCode
from ingestion.sniff import classify_text, decode_text, sniff_file, sniff_head


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"%PDF-1.7\n", "application/pdf"),
        (b"\x00" * 100 + b"%PDF-1.4", "application/pdf"),
        (b"PK\x03\x04rest", "application/zip"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 8, "application/x-ole-storage"),
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0JFIF", "image/jpeg"),
        (b"GIF89a..", "image/gif"),
        (b"II*\x00....", "image/tiff"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio/wav"),
        (b"ID3\x04\x00", "audio/mpeg"),
        (b"ID3 tags are metadata.\n", "text/plain"),
        (b"abcdftyp is text\n", "text/plain"),
        (b"\xff\xfb\x90\x00", "audio/mpeg"),
        (b"\x00\x00\x00\x18ftypmp42", "video/mp4"),
        (b"\x1f\x8b\x08\x00", "application/gzip"),
        (b"\x7fELF\x02\x01", "application/x-executable"),
        (b"MZ\x90\x00\x03\x00\x00\x00", "application/x-executable"),
        (b"\x30\x82\x01\x00\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02", "application/pkcs7"),
        (b"Hello, world.\nSecond line.\n", "text/plain"),
        (codecs.BOM_UTF16_LE + "text".encode("utf-16-le"), "text/plain"),
        (codecs.BOM_UTF32_LE + "text".encode("utf-32-le"), "text/plain"),
        ("plain words in utf-16 without a mark".encode("utf-16-be"), "text/plain"),
        ("Grüße, café".encode("cp1252"), "text/plain"),
        (bytes(range(256)) * 4, "application/octet-stream"),
        (b"", "text/plain"),
    ],
)
def test_sniff_head_recognises_magic_numbers_and_text(head: bytes, expected: str) -> None:
    """The coarse type of a file's first bytes."""
    assert sniff_head(head) == expected


def test_decode_text_reads_boms_and_unmarked_utf16_32() -> None:
    """UTF-8/16/32 with a BOM, and UTF-16/32 without one (by NUL pattern), decode to the same text."""
    text = "Grüße – ☸ naïve\nline two"
    for encoding in ("utf-8-sig", "utf-16", "utf-32", "utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"):
        assert decode_text(text.encode(encoding)) == text, encoding


def test_decode_text_guesses_legacy_encodings() -> None:
    """Text that is not UTF-8 is decoded with the best legacy guess (cp1252 wins Western ties)."""
    western = "Die schöne Frau sagte: «Das war köstlich!» und zahlte 15,50 €. Niño, señora."
    assert decode_text(western.encode("cp1252")) == western
    japanese = "日本語のテキストです。これはテストの文章です。句読点もあります。"
    assert decode_text(japanese.encode("shift_jis")) == japanese


def test_decode_text_normalises_newlines() -> None:
    """CRLF and lone CR become LF."""
    assert decode_text(b"one\r\ntwo\rthree\n") == "one\ntwo\nthree\n"


def test_decode_text_refuses_binary() -> None:
    """Bytes that are not text in any encoding are refused as unsupported."""
    with pytest.raises(PermanentError) as caught:
        decode_text(bytes(range(256)) * 8)
    assert caught.value.reason is ReasonCode.UNSUPPORTED_TYPE
    assert "binary content" in caught.value.message


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ({"[Content_Types].xml": b"<x/>", "word/document.xml": b"<x/>"}, sniff.DOCX),
        ({"[Content_Types].xml": b"<x/>", "ppt/presentation.xml": b"<x/>"}, sniff.PPTX),
        ({"[Content_Types].xml": b"<x/>", "xl/workbook.xml": b"<x/>"}, sniff.XLSX),
        ({"mimetype": b"application/epub+zip", "META-INF/container.xml": b"<x/>"}, sniff.EPUB),
        ({"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"<x/>"}, sniff.ODT),
        ({"word/document.xml": b"<x/>"}, sniff.ZIP),
        ({"photos/a.jpg": b"\xff\xd8\xff"}, sniff.ZIP),
    ],
)
def test_zip_packages_are_told_apart_by_their_entries(tmp_path: Path, entries: dict[str, bytes], expected: str) -> None:
    """Office, EPUB and ODF packages are recognised by entry names, whatever the file is called."""
    assert sniff_file(_zip(tmp_path / "upload.bin", entries), "upload.bin") == expected


def test_a_damaged_zip_is_still_a_zip(tmp_path: Path) -> None:
    """A zip signature with a broken directory sniffs as a zip (the registry calls it corrupt)."""
    path = tmp_path / "broken.docx"
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    assert sniff_file(path, path.name) == sniff.ZIP


def test_the_name_never_turns_binary_into_text(tmp_path: Path) -> None:
    """A PNG called notes.txt is still an image."""
    path = tmp_path / "notes.txt"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    assert sniff_file(path, path.name) == "image/png"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{\\rtf1\\ansi Hello}", sniff.RTF),
        ("<!DOCTYPE html><html><body><p>x</p></body></html>", sniff.HTML),
        ("<div>\n  <p>Test page</p>\n</div>", sniff.HTML),
        ("<h3>Jahresabschluss</h3>", sniff.HTML),
        ('<?xml version="1.0"?><factbook><country>x</country></factbook>', sniff.XML),
        ("<factbook><country>x</country></factbook>", sniff.XML),
        ('<?xml version="1.0"?>\n<html xmlns="http://www.w3.org/1999/xhtml"><body/></html>', sniff.HTML),
        ("From: a@example.com\nTo: b@example.com\nSubject: hi\n\nbody", sniff.EMAIL),
        ("From 123@xxx Wed Jul 16 2008\nFrom: a@example.com\nDate: today\n\nbody", sniff.EMAIL),
        ("Note: one header-looking line\n\nand prose", sniff.PLAIN),
        ('{"a": [1, 2]}', sniff.JSON),
        ("[1, 2, 3]", sniff.JSON),
        ('{"a": 1}\n{"a": 2}\n', sniff.NDJSON),
        ("a,b,c\n1,2,3\n4,5,6\n", sniff.CSV),
        ("a;b;c\n1;2,5;3\n4;5;6\n", sniff.CSV),
        ("a\tb\n1\t2\n", sniff.TSV),
        ("# Title\n\nSome text.\n", sniff.MARKDOWN),
        ("Just some prose, with a comma.\n\nAnother paragraph.\n", sniff.PLAIN),
    ],
)
def test_text_dialects_are_recognised_by_content(text: str, expected: str) -> None:
    """Without a name, the content alone decides the dialect."""
    assert classify_text(text) == expected


def test_the_name_breaks_ties_between_text_dialects_only() -> None:
    """.md/.csv/.tsv/.txt names choose among plain dialects, but never override JSON, HTML or e-mail."""
    table = "Item | Price\n---|---\nApples | 1.99\n"
    assert classify_text(table) == sniff.CSV
    assert classify_text(table, "table.md") == sniff.MARKDOWN
    assert classify_text("one, two\nthree\n", "list.csv") == sniff.CSV
    assert classify_text("a,b\n1,2\n", "numbers.txt") == sniff.PLAIN
    assert classify_text("# not a heading in a .txt\n", "notes.txt") == sniff.PLAIN
    assert classify_text('{"a": 1}', "data.csv") == sniff.JSON
    assert classify_text("From: a@b.c\nTo: d@e.f\n\nhello", "mail.txt") == sniff.EMAIL


def test_ole_containers_are_told_apart_by_their_streams(corpus: Path) -> None:
    """OLE2 files: encrypted OOXML, Word 97, Excel 97 and Outlook messages."""
    assert sniff_file(corpus / "password_protected.xlsx") == sniff.ENCRYPTED_OFFICE
    assert sniff_file(corpus / "fake.doc") == sniff.DOC
    assert sniff_file(corpus / "tests-example.xls") == sniff.XLS
    assert sniff_file(corpus / "fake-email.msg") == sniff.MSG


def test_a_damaged_ole_file_is_an_unknown_ole_container(tmp_path: Path) -> None:
    """An OLE2 signature over garbage sniffs as a bare OLE container instead of raising."""
    path = tmp_path / "damaged.doc"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\xff" * 600)
    assert sniff_file(path, path.name) == sniff.OLE


def test_sniff_file_reads_deeply_nested_json_without_crashing(tmp_path: Path) -> None:
    """JSON nested past Python's recursion limit is not JSON to the sniffer, and does not crash it."""
    path = tmp_path / "deep.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    assert sniff_file(path, path.name) == sniff.PLAIN


def test_sniff_file_detects_ndjson_from_a_stream(tmp_path: Path) -> None:
    """Records written one per line are NDJSON."""
    buffer = io.StringIO()
    for index in range(5):
        buffer.write(json.dumps({"id": index, "name": f"item {index}"}) + "\n")
    path = tmp_path / "records.log"
    path.write_text(buffer.getvalue())
    assert sniff_file(path, path.name) == sniff.NDJSON


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"# About PDF\n\nEvery PDF file begins with the header %PDF-1.7 followed by objects.\n", sniff.PLAIN),
        ("Caf\u00e9 notes: a PDF starts with %PDF-1.4\n".encode("cp1252"), sniff.PLAIN),
        (codecs.BOM_UTF8 + b"%PDF-1.7\n", sniff.PDF),
        (b"\r\n  %PDF-1.7\n", sniff.PDF),
        (b"\x8f\x02\xa3\x00\x17junk%PDF-1.5\n", sniff.PDF),
    ],
)
def test_a_pdf_header_counts_at_the_start_or_after_non_text_only(head: bytes, expected: str) -> None:
    """Text that quotes "%PDF-1.7" is text; a BOM, whitespace or binary junk before the header is a PDF."""
    assert sniff_head(head) == expected


@pytest.mark.timeout(30)  # a backtracking regex doubles its time per comment: 60 of them never finish
def test_comments_before_the_root_element_are_skipped_in_linear_time() -> None:
    """Sixty comments before the content are skipped in one pass, not by trying every grouping."""
    assert classify_text("<!-- c -->\n" * 60 + "plain text after comments\n", "notes") == sniff.PLAIN
    licensed = (
        '<?xml version="1.0"?>\n'
        + "".join(f"<!-- license line {index} -->\n" for index in range(200))
        + '<?xml-stylesheet type="text/xsl" href="s.xsl"?>\n<catalog><book>Title</book></catalog>\n'
    )
    assert classify_text(licensed, "catalog.xml") == sniff.XML


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('<!DOCTYPE note [<!ENTITY a "b>c">]>\n<!-- c --><note>x</note>', sniff.XML),
        ("<!-- a --> <!-- b -->\n<html><body><p>x</p></body></html>", sniff.HTML),
        ('<?xml-stylesheet href="s.xsl"?>\n<!-- c --><rss><channel>x</channel></rss>', sniff.XML),
        ("<!-- never closed <html>", sniff.PLAIN),
    ],
)
def test_the_root_element_is_found_past_the_prolog(text: str, expected: str) -> None:
    """Declarations, processing instructions, comments and a DOCTYPE (internal subset too) are skipped."""
    assert classify_text(text) == expected


def test_csv_sniffing_reads_fields_over_the_default_field_limit() -> None:
    """A field over csv's default 128 KiB limit does not fail the delimiter check."""
    assert sniff.csv_delimiter("id,blob\n1," + "x" * 200_000 + "\n2,short\n") == ","


WESTERN = [
    "Café déjà vu — naïve façade, “quoted” text. Señor Muñoz pagó 50 € por la reunión.\n",
    "Les élèves ont étudié à l'école pendant l'été. Le directeur a félicité chaque élève.\n",
    "Die Bürger müssen ihre Anträge bis Ende März einreichen. Größere Änderungen folgen.\n",
    "Perché la città è così bella? Più di mille persone hanno visitato il museo già.\n",
    "A educação é fundamental. Não há razão para preocupações com as eleições de março.\n",
    "Jeg har spist rødgrød med fløde på øen. Flickan sjöng en sång för sin mormor i går.\n",
    "Þetta er íslenskur texti. Við förum í búðina á morgun og kaupum brauð.\n",
    "Résumé: 10 years experience; skills — Python, SQL; “team player”; references on request.\n",
]


@pytest.mark.parametrize("text", WESTERN)
def test_western_european_cp1252_text_decodes_exactly(text: str) -> None:
    """cp1252 wins over code pages charset-normalizer scores as good or better ("déją" in cp1257)."""
    assert decode_text(text.encode("cp1252")) == text
    assert decode_text((text * 20).encode("cp1252")) == text * 20


@pytest.mark.parametrize(
    ("encoding", "text"),
    [
        ("cp1250", "Proszę o przesłanie faktury do końca miesiąca. Dziękuję bardzo za współpracę."),
        ("cp1250", "Všechny dokumenty jsou připraveny k odeslání. Prosím o potvrzení přijetí zprávy."),
        ("cp1251", "Привет, как дела? Это тестовый документ о погоде в Москве."),
        ("koi8_r", "Привет, как дела? Это тестовый документ о погоде в Москве."),
        ("cp1253", "Καλημέρα σας, αυτό είναι ένα δοκιμαστικό έγγραφο."),
        ("gbk", "这是一个中文测试文档。今天天气很好。"),
    ],
)
def test_other_legacy_encodings_are_not_taken_for_western(encoding: str, text: str) -> None:
    """Polish, Czech, Cyrillic, Greek and Chinese bytes read badly as cp1252, so the detector decides."""
    assert decode_text(text.encode(encoding)) == text


@pytest.mark.parametrize(
    ("text", "name", "expected"),
    [
        ('<p align="center"><img src="logo.png"></p>\n\n# MyProject\n', "README.md", sniff.MARKDOWN),
        ('<div align="center">\n  <h1>Tool</h1>\n</div>\n\n## Usage\n', "docs.markdown", sniff.MARKDOWN),
        ('<?xml version="1.0"?><note>x</note>', "note.md", sniff.MARKDOWN),
        ("<!DOCTYPE html><html><body><p>x</p></body></html>", "page.md", sniff.HTML),
        ("<html><body><h1>x</h1><p>y</p></body></html>", "page.md", sniff.HTML),
        ('<p align="center"><img src="logo.png"></p>\n\n# MyProject\n', "README", sniff.HTML),
    ],
)
def test_a_markdown_name_yields_only_to_an_html_document(text: str, name: str, expected: str) -> None:
    """With a .md/.markdown name, inline HTML stays Markdown; only a doctype or <html> root makes it HTML."""
    assert classify_text(text, name) == expected
