"""The parser registry: sniff a file's content, pick its parser, enforce the limits.

``extract`` is the one entry point. Every known failure ends as a ``PermanentError`` with a reason
a person can act on: unsupported types name what was detected, damaged files are ``corrupt`` with
the library's message, and limits give ``too_large`` / ``too_many_pages``. An exception that did
not come from a library reading malformed input (a bug) propagates unchanged; the sandbox turns it
into ``parse_failed``. Whatever a parser returns is valid Unicode: surrogates that input escapes
smuggle in are joined or replaced here, once for all formats.
"""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import docx.opc.exceptions
import lxml.etree
import pptx.exc
import pypdf.errors
import pypdfium2 as pdfium
import xlrd

from ingestion import sniff
from ingestion.config import ParseLimits
from ingestion.errors import PermanentError, ReasonCode
from ingestion.model import ParsedDocument
from ingestion.parsers.base import check_ole, check_zip
from ingestion.parsers.delimited import parse_csv, parse_tsv
from ingestion.parsers.html import parse_html
from ingestion.parsers.mail import parse_email
from ingestion.parsers.packages import parse_epub, parse_odt
from ingestion.parsers.pdf import parse_pdf
from ingestion.parsers.records import parse_json, parse_ndjson
from ingestion.parsers.sheets import parse_xls, parse_xlsx
from ingestion.parsers.slides import parse_pptx
from ingestion.parsers.text import parse_markdown, parse_rtf, parse_text
from ingestion.parsers.word import parse_docx
from ingestion.parsers.xmldoc import parse_xml

Parser = Callable[[Path, ParseLimits], ParsedDocument]

# What a library raises when its input is damaged (in the file's structure, not in our code).
# zipfile raises NotImplementedError for an entry it cannot read (compression method, flags) and
# UnicodeDecodeError for a damaged entry name in a local header.
_ZIPPED_XML = (
    *(zipfile.BadZipFile, KeyError, EOFError, zlib.error, lxml.etree.XMLSyntaxError),
    *(NotImplementedError, UnicodeDecodeError),
)
_PDF = (pdfium.PdfiumError, pypdf.errors.PyPdfError)
# xlrd checks its structures with assert, and looks records up in dicts without a guard.
_XLS = (xlrd.XLRDError, xlrd.compdoc.CompDocError, struct.error, IndexError, ValueError, AssertionError, KeyError)
# striprtf turns \uN into chr(N) unchecked: out of range is ValueError, or OverflowError past C long.
_RTF = (ValueError, OverflowError)
_SURROGATE = re.compile("[\ud800-\udfff]")  # paired or not, UTF-8 cannot encode it as a code point


@dataclass(frozen=True)
class Format:
    """How to read one content type."""

    parse: Parser
    zipped: bool = False  # a zip package: checked for zip bombs and damage before parsing
    malformed: tuple[type[Exception], ...] = ()  # library exceptions that mean a damaged file


FORMATS: dict[str, Format] = {
    sniff.PDF: Format(parse_pdf, malformed=_PDF),
    sniff.DOCX: Format(parse_docx, zipped=True, malformed=(*_ZIPPED_XML, docx.opc.exceptions.PackageNotFoundError)),
    sniff.PPTX: Format(parse_pptx, zipped=True, malformed=(*_ZIPPED_XML, pptx.exc.PackageNotFoundError)),
    # openpyxl raises ValueError/TypeError for cell values and attributes its schema rejects.
    sniff.XLSX: Format(parse_xlsx, zipped=True, malformed=(*_ZIPPED_XML, ValueError, TypeError)),
    sniff.XLS: Format(parse_xls, malformed=_XLS),
    sniff.EPUB: Format(parse_epub, zipped=True, malformed=_ZIPPED_XML),
    sniff.ODT: Format(parse_odt, zipped=True, malformed=_ZIPPED_XML),
    sniff.HTML: Format(parse_html),
    sniff.XML: Format(parse_xml, malformed=(lxml.etree.XMLSyntaxError,)),
    sniff.EMAIL: Format(parse_email),
    sniff.MARKDOWN: Format(parse_markdown),
    sniff.PLAIN: Format(parse_text),
    sniff.RTF: Format(parse_rtf, malformed=_RTF),
    sniff.CSV: Format(parse_csv),
    sniff.TSV: Format(parse_tsv),
    sniff.JSON: Format(parse_json),
    sniff.NDJSON: Format(parse_ndjson),
}

_REFUSED: dict[str, tuple[ReasonCode, str]] = {
    sniff.DOC: (ReasonCode.UNSUPPORTED_TYPE, "legacy Word 97-2003 .doc is not supported; save as .docx"),
    sniff.XLSB: (ReasonCode.UNSUPPORTED_TYPE, "binary workbook .xlsb is not supported; save as .xlsx"),
    sniff.PPT: (ReasonCode.UNSUPPORTED_TYPE, "legacy PowerPoint 97-2003 .ppt is not supported; save as .pptx"),
    sniff.MSG: (ReasonCode.UNSUPPORTED_TYPE, "Outlook .msg messages are not supported; save as .eml"),
    sniff.ENCRYPTED_OFFICE: (ReasonCode.ENCRYPTED, "a password-protected Office file (encrypted package)"),
    sniff.OLE: (ReasonCode.UNSUPPORTED_TYPE, "an OLE2 compound file of an unknown kind is not supported"),
    sniff.ZIP: (ReasonCode.UNSUPPORTED_TYPE, "a zip archive is not a document; upload its files one by one"),
    sniff.PKCS7: (ReasonCode.UNSUPPORTED_TYPE, "a PKCS#7 signature or envelope (application/pkcs7), not a document"),
}


def extract(path: Path, name: str, limits: ParseLimits) -> ParsedDocument:
    """The text of the file at ``path`` (``name`` is its blob name, a tiebreak for text dialects)."""
    size = path.stat().st_size
    if size == 0:
        raise PermanentError(ReasonCode.EMPTY, "the file is empty (0 bytes)")
    if size > limits.max_file_bytes:
        raise PermanentError(ReasonCode.TOO_LARGE, f"{size:,} bytes, over the limit of {limits.max_file_bytes:,} bytes")
    content_type = sniff.sniff_file(path, name)
    # A damaged container is corrupt, not merely of an unsupported kind.
    if content_type == sniff.ZIP:
        check_zip(path, limits.max_unzipped_bytes)
    if content_type == sniff.OLE:
        check_ole(path)
    if content_type in _REFUSED:
        reason, message = _REFUSED[content_type]
        raise PermanentError(reason, message)
    form = FORMATS.get(content_type)
    if form is None:
        raise PermanentError(ReasonCode.UNSUPPORTED_TYPE, _unsupported_message(content_type))
    if form.zipped:
        check_zip(path, limits.max_unzipped_bytes)
    try:
        document = form.parse(path, limits)
    except form.malformed as error:
        if not _raised_in_library(error):
            raise
        # A bare assert in a library (xlrd) has no message; say what it means.
        detail = str(error) or "the file's structure is inconsistent"
        raise PermanentError(ReasonCode.CORRUPT, f"{type(error).__name__}: {detail}") from error
    document = _without_lone_surrogates(document)
    _check_text(document, limits)
    return document


def _without_lone_surrogates(document: ParsedDocument) -> ParsedDocument:
    """``document`` with surrogate pairs joined and lone surrogates as U+FFFD, in every parser's text.

    Parsers pass on what their input escapes say: JSON "\\ud800", RTF "\\u-10240?". A lone
    surrogate cannot be encoded as UTF-8, so every later stage that writes the text would fail.
    """
    title = document.title
    if not _SURROGATE.search(title or "") and not any(
        _SURROGATE.search(block.text) for page in document.pages for block in page.blocks
    ):
        return document
    pages = tuple(
        replace(page, blocks=tuple(replace(block, text=_valid_unicode(block.text)) for block in page.blocks))
        for page in document.pages
    )
    return replace(document, pages=pages, title=_valid_unicode(title) if title is not None else None)


def _valid_unicode(text: str) -> str:
    # Through UTF-16 and back: the decoder joins a high and low surrogate into one character and
    # replaces each unpaired one, in one linear pass.
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _check_text(document: ParsedDocument, limits: ParseLimits) -> None:
    chars = sum(len(block.text) for page in document.pages for block in page.blocks)
    if chars > limits.max_text_chars:
        raise PermanentError(
            ReasonCode.TOO_LARGE, f"{chars:,} characters of text, over the limit of {limits.max_text_chars:,}"
        )
    if not any(block.text.strip() for page in document.pages for block in page.blocks):
        raise PermanentError(ReasonCode.EMPTY, f"no text found in this {document.content_type} file")


def _raised_in_library(error: BaseException) -> bool:
    """Whether ``error`` was raised inside a library rather than in this package (where it is a bug)."""
    trace = error.__traceback__
    if trace is None:
        return False
    while trace.tb_next is not None:
        trace = trace.tb_next
    module = str(trace.tb_frame.f_globals.get("__name__", ""))
    return module != "ingestion" and not module.startswith("ingestion.")


def _unsupported_message(content_type: str) -> str:
    family = content_type.partition("/")[0]
    if family == "image":
        return f"an image ({content_type}); OCR is not configured, so it has no text to index"
    if family in ("audio", "video"):
        return f"{family} ({content_type}) has no text to extract"
    if content_type == "application/x-executable":
        return "an executable program (application/x-executable), not a document"
    if content_type == sniff.OCTET_STREAM:
        return "unrecognised binary content (application/octet-stream)"
    return f"{content_type} is not a supported document type"
