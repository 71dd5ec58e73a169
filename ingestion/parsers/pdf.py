"""PDF text, page by page: PDFium first (fast, tolerant), pypdf when PDFium cannot open the file."""

from __future__ import annotations

import threading
from pathlib import Path

import pypdf
import pypdf.errors
import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from ingestion import sniff
from ingestion.config import ParseLimits
from ingestion.errors import PermanentError, ReasonCode
from ingestion.model import Page, ParsedDocument
from ingestion.parsers.base import TextBudget, paragraph_blocks

# PDFium puts U+FFFE where a word was hyphenated across a line break ("ef\ufffeficient"); control
# characters come from glyphs without a Unicode mapping. Neither is text.
# PDFium is not thread-safe (pypdfium2 forbids concurrent calls from threads). In production each
# file is parsed in its own child process; parsers run inline (tests, several activity threads)
# take turns here.
_PDFIUM = threading.Lock()
_PDFIUM_JUNK = str.maketrans(dict.fromkeys([*range(9), 11, 12, *range(14, 32), 0xFFFE, 0xFFFF]))


def parse_pdf(path: Path, limits: ParseLimits) -> ParsedDocument:
    """Each page's text as a ``Page`` numbered from 1."""
    with _PDFIUM:
        try:
            document = pdfium.PdfDocument(path)
        except pdfium.PdfiumError as error:
            if getattr(error, "err_code", None) == pdfium_c.FPDF_ERR_PASSWORD:
                raise PermanentError(ReasonCode.ENCRYPTED, "the PDF needs a password to open") from error
            opened = error
        else:
            try:
                return _parse_with_pdfium(document, limits)
            finally:
                document.close()
    return _parse_with_pypdf(path, limits, pdfium_error=opened)


def _parse_with_pdfium(document: pdfium.PdfDocument, limits: ParseLimits) -> ParsedDocument:
    count = len(document)
    _check_page_count(count, limits)
    budget = TextBudget(limits.max_text_chars)
    pages = []
    for index in range(count):
        page = document[index]
        try:
            text_page = page.get_textpage()
            try:
                text = text_page.get_text_range()
            finally:
                text_page.close()
        finally:
            page.close()
        pages.append(Page(index + 1, tuple(paragraph_blocks(budget.take(_clean(text))))))
    if not any(page.blocks for page in pages):
        _raise_without_text(any(_has_images(document, index) for index in range(count)))
    return ParsedDocument(sniff.PDF, tuple(pages), title=_pdfium_title(document))


def _has_images(document: pdfium.PdfDocument, index: int) -> bool:
    page = document[index]
    try:
        # max_depth reaches into form XObjects, where scanners often wrap the page image.
        objects = page.get_objects(filter=[pdfium_c.FPDF_PAGEOBJ_IMAGE], max_depth=5)
        return next(iter(objects), None) is not None
    finally:
        page.close()


def _pdfium_title(document: pdfium.PdfDocument) -> str | None:
    title = document.get_metadata_value("Title").strip()
    return title or None


def _parse_with_pypdf(path: Path, limits: ParseLimits, pdfium_error: Exception) -> ParsedDocument:
    try:
        reader = pypdf.PdfReader(path, strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise PermanentError(ReasonCode.ENCRYPTED, "the PDF needs a password to open")
        count = len(reader.pages)
    except (pypdf.errors.PyPdfError, ValueError, KeyError, TypeError) as error:
        raise PermanentError(
            ReasonCode.CORRUPT,
            f"neither PDF library can open it: pdfium: {pdfium_error}; pypdf: {type(error).__name__}: {error}",
        ) from error
    _check_page_count(count, limits)
    budget = TextBudget(limits.max_text_chars)
    pages = []
    any_images = False
    for index, page in enumerate(reader.pages):
        text = page.extract_text() or ""
        blocks = tuple(paragraph_blocks(budget.take(_clean(text))))
        if not blocks:
            resources = page.get("/Resources")
            any_images = any_images or bool(resources and "/XObject" in resources.get_object())
        pages.append(Page(index + 1, blocks))
    if not any(page.blocks for page in pages):
        _raise_without_text(any_images)
    return ParsedDocument(sniff.PDF, tuple(pages))


def _check_page_count(count: int, limits: ParseLimits) -> None:
    if count > limits.max_pages:
        raise PermanentError(ReasonCode.TOO_MANY_PAGES, f"{count:,} pages, over the limit of {limits.max_pages:,}")


def _raise_without_text(has_images: bool) -> None:
    if has_images:
        raise PermanentError(ReasonCode.NO_TEXT_LAYER, "the PDF has only images, no text layer (needs OCR)")
    raise PermanentError(ReasonCode.EMPTY, "the PDF has no text and no images")


def _clean(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").translate(_PDFIUM_JUNK)
