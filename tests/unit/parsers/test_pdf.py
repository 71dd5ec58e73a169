"""PDF: text per page with PDFium, pypdf as the fallback, and a clear reason for every refusal."""

from __future__ import annotations

import io
from pathlib import Path

import pypdf

from ingestion.errors import ReasonCode
from tests.unit.parsers.conftest import Extract, minimal_pdf, refusal


def _write(tmp_path: Path, data: bytes, name: str = "doc.pdf") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_pages_are_numbered_from_one_with_their_own_text(tmp_path: Path, parse: Extract) -> None:
    """Each PDF page becomes a Page numbered from 1 holding that page's text."""
    document = parse(_write(tmp_path, minimal_pdf("Hello first page", "", "Third page text")))
    assert document.content_type == "application/pdf"
    assert [page.number for page in document.pages] == [1, 2, 3]
    assert [page.text for page in document.pages] == ["Hello first page", "", "Third page text"]


def test_a_password_protected_pdf_is_encrypted(tmp_path: Path, parse: Extract) -> None:
    """A PDF that needs a user password is refused as encrypted."""
    writer = pypdf.PdfWriter()
    writer.add_blank_page(100, 100)
    writer.encrypt("secret")
    buffer = io.BytesIO()
    writer.write(buffer)
    reason, _ = refusal(lambda: parse(_write(tmp_path, buffer.getvalue())))
    assert reason is ReasonCode.ENCRYPTED


def test_owner_restrictions_alone_do_not_stop_extraction(corpus: Path, parse: Extract) -> None:
    """A copy-protected PDF (owner password only) still gives its text."""
    document = parse(corpus / "pdf_copy-protected.pdf")
    assert "LayoutParser" in document.text


def test_too_many_pages_is_refused_before_extracting(tmp_path: Path, parse: Extract) -> None:
    """A page count over the limit is refused as too_many_pages."""
    reason, message = refusal(lambda: parse(_write(tmp_path, minimal_pdf("a", "b", "c")), max_pages=2))
    assert reason is ReasonCode.TOO_MANY_PAGES
    assert "3 pages" in message


def test_image_only_pages_have_no_text_layer(tmp_path: Path, parse: Extract) -> None:
    """A PDF with images and no text anywhere needs OCR: no_text_layer."""
    reason, _ = refusal(lambda: parse(_write(tmp_path, minimal_pdf("", "", image_on_blank_pages=True))))
    assert reason is ReasonCode.NO_TEXT_LAYER


def test_a_scanned_corpus_pdf_has_no_text_layer(corpus: Path, parse: Extract) -> None:
    """The flattened lorem-ipsum scan is recognised as image-only."""
    reason, _ = refusal(lambda: parse(corpus / "pdf_loremipsum-flat.pdf"))
    assert reason is ReasonCode.NO_TEXT_LAYER


def test_blank_pages_without_images_are_empty(tmp_path: Path, parse: Extract) -> None:
    """No text and no images: empty."""
    reason, _ = refusal(lambda: parse(_write(tmp_path, minimal_pdf("", ""))))
    assert reason is ReasonCode.EMPTY


def test_pypdf_reads_what_pdfium_cannot_open(tmp_path: Path, parse: Extract) -> None:
    """A trailer without /Root defeats PDFium; pypdf finds the catalog and the text."""
    damaged = minimal_pdf("Recovered by the fallback").replace(b"/Root 1 0 R", b"/Rooo 1 0 R")
    document = parse(_write(tmp_path, damaged))
    assert document.pages[0].number == 1
    assert "Recovered by the fallback" in document.text


def test_a_truncated_pdf_is_corrupt_with_both_libraries_messages(corpus: Path, tmp_path: Path, parse: Extract) -> None:
    """A PDF cut short that neither library can open is corrupt, and the message says why."""
    data = (corpus / "pdf_a1977-backus-p21.pdf").read_bytes()[:3000]
    reason, message = refusal(lambda: parse(_write(tmp_path, data)))
    assert reason is ReasonCode.CORRUPT
    assert "pdfium" in message
    assert "pypdf" in message


def test_pdfium_hyphenation_marks_are_removed(corpus: Path, parse: Extract) -> None:
    """PDFium's U+FFFE line-break hyphen marks do not reach the text (words are rejoined)."""
    document = parse(corpus / "pdf_multi-column.pdf")
    assert "\ufffe" not in document.text
    assert "efficient passage retrieval" in document.text
