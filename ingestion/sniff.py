"""Content sniffing: what a file *is*, judged by its bytes and structure, never by its name.

``sniff_head`` gives a coarse type from the first bytes; ``sniff_file`` refines containers (zip,
OLE2) by their entries and text by its dialect. A file name only breaks ties between text dialects
(plain, Markdown, CSV, TSV): it never turns binary into text, nor text into another family;
and a Markdown name keeps Markdown that opens with inline HTML (a README's centred logo).
Decoding bytes to text lives in ``sniff_text``.
"""

from __future__ import annotations

import csv
import json
import re
import zipfile
import zlib
from pathlib import Path

import olefile  # type: ignore[import-untyped]  # olefile ships no type hints

from ingestion.errors import PermanentError, ReasonCode
from ingestion.sniff_text import BOMS, HEAD_BYTES, decode_text, looks_like_text

# csv refuses fields over field_size_limit (128 KiB by default), and both dialect sniffing and the
# CSV parser meet legitimate long lines; the text limits bound what a file may hold anyway. Set
# once, here, because the limit is process-wide; 2**31 - 1 is the largest every platform accepts.
csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))

PDF = "application/pdf"
ZIP = "application/zip"
OLE = "application/x-ole-storage"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
XLSB = "application/vnd.ms-excel.sheet.binary.macroenabled.12"
EPUB = "application/epub+zip"
ODT = "application/vnd.oasis.opendocument.text"
ENCRYPTED_OFFICE = "application/x-encrypted-office"
DOC = "application/msword"
XLS = "application/vnd.ms-excel"
PPT = "application/vnd.ms-powerpoint"
MSG = "application/vnd.ms-outlook"
PKCS7 = "application/pkcs7"
OCTET_STREAM = "application/octet-stream"
PLAIN = "text/plain"
MARKDOWN = "text/markdown"
CSV = "text/csv"
TSV = "text/tab-separated-values"
HTML = "text/html"
XML = "application/xml"
JSON = "application/json"
NDJSON = "application/x-ndjson"
RTF = "application/rtf"
EMAIL = "message/rfc822"

# (offset, magic, type): checked in order; the first match wins.
_MAGIC: tuple[tuple[int, bytes, str], ...] = (
    (0, b"PK\x03\x04", ZIP),
    (0, b"PK\x05\x06", ZIP),  # an empty archive
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", OLE),
    (0, b"\x89PNG\r\n\x1a\n", "image/png"),
    (0, b"\xff\xd8\xff", "image/jpeg"),
    (0, b"GIF87a", "image/gif"),
    (0, b"GIF89a", "image/gif"),
    (0, b"II*\x00", "image/tiff"),
    (0, b"MM\x00*", "image/tiff"),
    (0, b"ID3\x02", "audio/mpeg"),
    (0, b"ID3\x03", "audio/mpeg"),
    (0, b"ID3\x04", "audio/mpeg"),
    (0, b"\x1f\x8b", "application/gzip"),
    (0, b"\x7fELF", "application/x-executable"),
)
# (stream name prefix, type): the first marker among an OLE2 file's stream names decides.
_OLE_STREAMS: tuple[tuple[str, str], ...] = (
    ("EncryptionInfo", ENCRYPTED_OFFICE),
    ("EncryptedPackage", ENCRYPTED_OFFICE),
    ("WordDocument", DOC),
    ("Workbook", XLS),
    ("Book", XLS),
    ("PowerPoint Document", PPT),
    ("__substg1.0_", MSG),
)
# PKCS#7 content-type OID 1.2.840.113549.1.7, DER-encoded.
_PKCS7_OID = b"\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07"
_HTML_TAGS = frozenset(
    {
        *("html", "head", "body", "div", "span", "p", "a", "ul", "ol", "li", "table", "tr", "td", "th"),
        *("h1", "h2", "h3", "h4", "h5", "h6", "br", "img", "pre", "section", "article", "header"),
        *("footer", "nav", "main", "form", "input", "b", "i", "em", "strong", "blockquote", "title"),
        *("meta", "link", "script", "style"),
    }
)
_TAG = re.compile(r"<([A-Za-z][A-Za-z0-9]*)[\s/>]")
_ELEMENT = re.compile(r"<([A-Za-z_][\w:.-]*)")
# What may precede the root element, as (opening, closing): declarations and processing
# instructions, comments, then other "<!" markup (DOCTYPE). Skipped with str.find, never a regex
# that could backtrack across many comments.
_PROLOG_ITEMS = (("<?", "?>"), ("<!--", "-->"), ("<!", ">"))
_LETTERS = re.compile(rb"[A-Za-z]{2}")
_HEADER_LINE = re.compile(r"^[!-9;-~]+:")
_MAIL_HEADERS = frozenset({"from", "to", "subject", "date", "received", "mime-version", "message-id", "content-type"})
_ATX_HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+\S", re.M)
_DELIMITERS = ("\t", ",", ";", "|")
_NAME_DIALECTS = {".md": MARKDOWN, ".markdown": MARKDOWN, ".csv": CSV, ".tsv": TSV, ".tab": TSV}


def sniff_head(head: bytes) -> str:  # noqa: PLR0911 - a decision list reads best as early returns
    """A coarse MIME type from a file's first bytes (about 8 KB)."""
    if _is_pdf(head):
        return PDF
    if any(head.startswith(bom) for bom, _ in BOMS):
        return PLAIN  # before the magic numbers: UTF-16's BOM looks like an MPEG frame sync
    for offset, magic, content_type in _MAGIC:
        if head[offset : offset + len(magic)] == magic:
            return content_type
    if head[4:8] == b"ftyp" and head[:1] == b"\x00":
        return "video/mp4"  # an ISO media box: a 32-bit size (small, so a leading NUL), then "ftyp"
    if head[:4] == b"RIFF" and head[8:12] in (b"WAVE", b"WEBP"):
        return "audio/wav" if head[8:12] == b"WAVE" else "image/webp"
    if head[:2] == b"MZ" and b"\x00" in head[2:64]:
        return "application/x-executable"
    if len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:
        return "audio/mpeg"  # an MPEG audio frame sync without an ID3 tag
    if head[:1] == b"\x30" and _PKCS7_OID in head[:64]:
        return PKCS7
    return PLAIN if looks_like_text(head) else OCTET_STREAM


def _is_pdf(head: bytes) -> bool:
    """``%PDF-`` at the start, or after a short prefix that is not text.

    Readers accept a PDF header anywhere in the first 1 KB, and real files do carry a BOM or a few
    bytes of binary junk before it; but a text that merely mentions "%PDF-1.7" is not a PDF.
    """
    start = head.find(b"%PDF-", 0, 1024)
    if start < 0:
        return False
    prefix = head[:start]
    bom = next((bom for bom, _ in BOMS if prefix.startswith(bom)), b"")
    prefix = prefix[len(bom) :].strip()
    return not prefix or not (looks_like_text(prefix) and _LETTERS.search(prefix) is not None)


def sniff_file(path: Path, name: str = "") -> str:
    """The exact MIME type of the file at ``path``; ``name`` only breaks ties between text dialects."""
    with path.open("rb") as stream:
        head = stream.read(HEAD_BYTES)
    coarse = sniff_head(head)
    if coarse == ZIP:
        return _zip_type(path)
    if coarse == OLE:
        return _ole_type(path)
    if coarse != PLAIN:
        return coarse
    try:
        text = decode_text(path.read_bytes())
    except PermanentError:
        return OCTET_STREAM
    return classify_text(text, name)


def classify_text(text: str, name: str = "") -> str:  # noqa: PLR0911 - a decision list, as above
    """The dialect of decoded ``text``: strong signals from content first, then the name as a tiebreak."""
    start = text.lstrip("\ufeff \t\n")
    if start.startswith("{\\rtf"):
        return RTF
    suffix = Path(name).suffix.lower()
    hinted = _NAME_DIALECTS.get(suffix)
    if start.startswith("<"):
        markup = _markup_type(start)
        # Markdown may open with inline HTML (a README's centred logo); only an HTML document by
        # its own word (doctype, <html>) overrides a Markdown name.
        if markup and (hinted != MARKDOWN or _declares_html(start, _root_name(start[:65536]))):
            return markup
    if _is_email(start):
        return EMAIL
    if start[:1] in ("{", "[") and _parses_as_container(text):
        return JSON
    if start[:1] in ("{", "[") and _is_ndjson(text):
        return NDJSON
    if hinted:
        return hinted
    delimiter = csv_delimiter(text) if suffix != ".txt" else None
    if delimiter is not None:
        return TSV if delimiter == "\t" else CSV
    if suffix != ".txt" and _ATX_HEADING.search(text, 0, 65536):
        return MARKDOWN
    return PLAIN


def csv_delimiter(text: str, candidates: tuple[str, ...] = _DELIMITERS) -> str | None:
    """The delimiter that splits the first lines into the same number (>1) of fields, if any.

    Hand-written rather than ``csv.Sniffer``: the sniffer guesses a delimiter for almost any prose,
    where we need a yes/no answer that plain text reliably fails.
    """
    lines = text.split("\n", 50)[:50]  # the first 50 lines, each complete
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) < 2 or any(not line.strip() for line in lines):
        return None
    for delimiter in candidates:
        counts = {len(row) for row in csv.reader(lines, delimiter=delimiter)}
        if len(counts) == 1 and counts.pop() > 1:
            return delimiter
    return None


def _zip_type(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            declared = _declared_mimetype(archive, names)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError):
        # An unreadable directory (bad names, a newer zip version): the registry's zip check,
        # which runs on every zip, reports the damage.
        return ZIP
    if declared is not None:
        return declared or ZIP
    if "[Content_Types].xml" in names:
        if "xl/workbook.bin" in names:
            return XLSB
        for prefix, content_type in (("word/", DOCX), ("ppt/", PPTX), ("xl/", XLSX)):
            if any(entry.startswith(prefix) for entry in names):
                return content_type
    return ZIP


def _declared_mimetype(archive: zipfile.ZipFile, names: set[str]) -> str | None:
    """The type an EPUB or ODF package names in its ``mimetype`` entry; None without one."""
    if "mimetype" not in names:
        return None
    info = archive.getinfo("mimetype")
    if info.file_size > 100 or info.flag_bits & 0x1:
        return None  # not a package's marker (an encrypted entry is left to the zip check)
    try:
        return archive.read(info).decode("ascii", errors="replace").strip()
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as error:
        raise PermanentError(
            ReasonCode.CORRUPT, f"damaged zip container: its mimetype entry cannot be read ({error})"
        ) from error


def _ole_type(path: Path) -> str:
    try:
        with olefile.OleFileIO(str(path)) as ole:
            streams = {"/".join(entry) for entry in ole.listdir(streams=True, storages=True)}
    except (OSError, ValueError, IndexError):
        return OLE  # olefile raises OSError for a damaged directory; the registry reports it
    # Top-level streams only: an embedded object (a workbook attached to a message) has its own.
    top_level = [stream for stream in streams if "/" not in stream]
    for marker, content_type in _OLE_STREAMS:
        if any(stream.startswith(marker) for stream in top_level):
            return content_type
    return OLE


def _markup_type(start: str) -> str | None:
    root_name = _root_name(start[:65536])
    if _declares_html(start, root_name):
        return HTML
    if start.startswith("<?xml"):
        return XML
    tags = {tag.lower() for tag in _TAG.findall(start[:8192])}
    if root_name in _HTML_TAGS or len(tags & _HTML_TAGS) >= 2:
        return HTML
    end = start.rstrip()
    if root_name and end.endswith(">"):
        return XML
    return None


def _declares_html(start: str, root_name: str) -> bool:
    """An HTML document by its own word: a ``<!DOCTYPE html>`` or an ``<html>`` root element."""
    return root_name == "html" or "<!doctype html" in start[:4096].lower()


def _root_name(text: str) -> str:
    """The lower-case name of the first element after the prolog; "" if there is none.

    Linear: each prolog item is skipped with ``str.find`` from where the previous one ended.
    """
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        item = next((item for item in _PROLOG_ITEMS if text.startswith(item[0], position)), None)
        if item is None:
            element = _ELEMENT.match(text, position)
            return element.group(1).lower() if element else ""
        opening, closing = item
        end = text.find(closing, position + len(opening))
        subset = text.find("[", position, end) if opening == "<!" and end >= 0 else -1
        if subset >= 0:  # a DOCTYPE's internal subset holds ">" of its own: its end follows "]"
            bracket = text.find("]", subset)
            end = text.find(closing, bracket) if bracket >= 0 else -1
        if end < 0:
            return ""
        position = end + len(closing)


def _is_email(start: str) -> bool:
    lines = start[:65536].split("\n")
    if len(start) > 65536:
        lines.pop()  # cut short
    if lines and lines[0].startswith("From "):
        lines = lines[1:]  # an mbox separator line
    seen: set[str] = set()
    for index, line in enumerate(lines):
        if not line.strip():
            return index > 0 and len(seen) >= 2
        if line[0] in " \t" and index > 0:
            continue  # a folded continuation of the previous header
        if not _HEADER_LINE.match(line):
            return False
        seen.add(line.split(":", 1)[0].strip().lower())
        seen &= _MAIL_HEADERS
    return len(seen) >= 2


def _parses_as_container(text: str) -> bool:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(value, dict | list)


def _is_ndjson(text: str) -> bool:
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines:
        return False
    try:
        for line in lines:
            json.loads(line)
    except (ValueError, RecursionError):
        return False
    return True
