"""The registry: the parser is chosen by content, limits are enforced, failures have a reason."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import docx
import pytest

from ingestion import parsers, sniff
from ingestion.config import ParseLimits
from ingestion.errors import ReasonCode
from ingestion.model import ParsedDocument, from_iso
from ingestion.parsers import extract
from tests.unit.parsers.conftest import Extract, refusal


def test_the_parser_is_chosen_by_content_not_extension(tmp_path: Path, parse: Extract) -> None:
    """HTML saved as .txt is parsed as HTML."""
    path = tmp_path / "page.txt"
    path.write_text("<html><body><h1>Hi</h1><p>There</p></body></html>")
    document = parse(path)
    assert document.content_type == "text/html"
    assert document.text == "Hi\n\nThere"


def test_an_empty_file_is_empty(tmp_path: Path, parse: Extract) -> None:
    """Zero bytes: empty."""
    path = tmp_path / "nothing.pdf"
    path.touch()
    assert refusal(lambda: parse(path)) == (ReasonCode.EMPTY, "the file is empty (0 bytes)")


def test_a_file_over_the_size_limit_is_too_large(tmp_path: Path, parse: Extract) -> None:
    """A file bigger than max_file_bytes is refused before it is read."""
    path = tmp_path / "big.txt"
    path.write_text("x" * 2000)
    reason, _ = refusal(lambda: parse(path, max_file_bytes=1000))
    assert reason is ReasonCode.TOO_LARGE


def test_text_over_the_character_limit_is_too_large(tmp_path: Path, parse: Extract) -> None:
    """Extracted text over max_text_chars is refused."""
    path = tmp_path / "long.txt"
    path.write_text("word " * 1000)
    reason, _ = refusal(lambda: parse(path, max_text_chars=100))
    assert reason is ReasonCode.TOO_LARGE


def test_a_zip_bomb_is_refused_before_opening(tmp_path: Path, parse: Extract) -> None:
    """A package whose entries unpack past max_unzipped_bytes is too_large (zip bomb)."""
    path = tmp_path / "bomb.docx"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", b"\x00" * 20_000_000)
    assert path.stat().st_size < 100_000
    reason, message = refusal(lambda: parse(path, max_unzipped_bytes=10_000_000))
    assert reason is ReasonCode.TOO_LARGE
    assert "zip bomb" in message


@pytest.mark.parametrize("name", ["upload.zip", "broken.docx"])
def test_a_damaged_zip_is_corrupt(tmp_path: Path, parse: Extract, name: str) -> None:
    """A zip signature without a readable directory is corrupt, whatever the name."""
    path = tmp_path / name
    path.write_bytes(b"PK\x03\x04" + b"\x01" * 500)
    reason, _ = refusal(lambda: parse(path))
    assert reason is ReasonCode.CORRUPT


def test_a_plain_zip_archive_is_unsupported(tmp_path: Path, parse: Extract) -> None:
    """A zip that is not a document package is unsupported, and the message says what it is."""
    path = tmp_path / "photos.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    reason, message = refusal(lambda: parse(path))
    assert reason is ReasonCode.UNSUPPORTED_TYPE
    assert "zip archive" in message


@pytest.mark.parametrize(
    ("file_name", "words"),
    [
        ("fake.doc", "Word 97-2003 .doc"),
        ("fake-email.msg", "Outlook .msg"),
        ("img_DA-1p.png", "OCR is not configured"),
        ("CantinaBand3.wav", "audio/wav"),
        ("unsupported_factbook.xsl", "XSL stylesheet"),
    ],
)
def test_unsupported_types_name_what_was_detected(corpus: Path, parse: Extract, file_name: str, words: str) -> None:
    """Legacy Office, Outlook, images, audio and stylesheets are unsupported, with a message naming the format."""
    reason, message = refusal(lambda: parse(corpus / file_name))
    assert reason is ReasonCode.UNSUPPORTED_TYPE
    assert words in message


def test_unknown_binary_is_unsupported(tmp_path: Path, parse: Extract) -> None:
    """Bytes of no known type are unsupported, named as octet-stream."""
    path = tmp_path / "blob.dat"
    path.write_bytes(bytes(range(256)) * 16)
    reason, message = refusal(lambda: parse(path))
    assert reason is ReasonCode.UNSUPPORTED_TYPE
    assert "application/octet-stream" in message


def _trips_in_library(path: Path, limits: ParseLimits) -> ParsedDocument:
    """Like a parser whose library meets malformed input: the error is raised inside ``json``."""
    return json.loads("{ damaged")  # type: ignore[no-any-return]


def _trips_in_our_code(path: Path, limits: ParseLimits) -> ParsedDocument:
    """Like a parser with a bug: the same error type, raised by a function of this package."""
    from_iso("not a date")
    raise AssertionError("unreachable")


def test_library_errors_are_corrupt_but_our_bugs_propagate(
    tmp_path: Path, limits: ParseLimits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A malformed-input error raised inside a library is corrupt; the same type raised in our code is a bug."""
    path = tmp_path / "data.json"
    path.write_text('{"a": 1}')
    monkeypatch.setitem(parsers.FORMATS, sniff.JSON, parsers.Format(_trips_in_library, malformed=(ValueError,)))
    reason, message = refusal(lambda: extract(path, path.name, limits))
    assert reason is ReasonCode.CORRUPT
    assert message.startswith("JSONDecodeError:")
    monkeypatch.setitem(parsers.FORMATS, sniff.JSON, parsers.Format(_trips_in_our_code, malformed=(ValueError,)))
    with pytest.raises(ValueError, match="not a date"):
        extract(path, path.name, limits)


def test_a_damaged_ole_container_is_corrupt(tmp_path: Path, parse: Extract) -> None:
    """An OLE2 signature over an unreadable directory is corrupt rather than unsupported."""
    path = tmp_path / "damaged.doc"
    path.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\xff" * 600)
    reason, message = refusal(lambda: parse(path))
    assert reason is ReasonCode.CORRUPT
    assert "OLE2" in message


# Where an entry's fields sit: (signature, offsets of "version", "flags", "method", name length, name).
_ZIP_HEADERS = (
    (b"PK\x01\x02", {"version": 6, "flags": 8, "method": 10}, 28, 46),  # central directory
    (b"PK\x03\x04", {"version": 4, "flags": 6, "method": 8}, 26, 30),  # local header
)


def _patch_entry(archive: bytes, name: str, *, rename: bytes = b"", **fields: int) -> bytes:
    """``archive`` with header fields of entry ``name`` overwritten (both headers), or its name bytes."""
    data = bytearray(archive)
    for signature, offsets, length_at, name_at in _ZIP_HEADERS:
        start = data.find(signature)
        while start >= 0:
            (length,) = struct.unpack_from("<H", data, start + length_at)
            if data[start + name_at : start + name_at + length] == name.encode():
                for field, value in fields.items():
                    struct.pack_into("<H", data, start + offsets[field], value)
                if rename:
                    data[start + name_at : start + name_at + length] = rename
            start = data.find(signature, start + 4)
    return bytes(data)


def _docx_bytes() -> bytes:
    buffer = io.BytesIO()
    document = docx.Document()
    document.add_paragraph("Some text")
    document.save(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("patch", "reason", "words"),
    [
        ({"method": 99}, ReasonCode.UNSUPPORTED_TYPE, "compression method 99"),
        ({"version": 255}, ReasonCode.CORRUPT, "zip file version 25.5"),
        ({"flags": 0x20}, ReasonCode.CORRUPT, "flag bit 5"),
        ({"flags": 0x40}, ReasonCode.ENCRYPTED, "password-protected"),
        ({"flags": 0x1}, ReasonCode.ENCRYPTED, "password-protected"),
        ({"flags": 0x800, "rename": b"word/docume\xff\xfe.xml"}, ReasonCode.CORRUPT, "can't decode"),
    ],
)
def test_zip_entries_zipfile_cannot_read_end_with_a_reason(
    tmp_path: Path, parse: Extract, patch: dict[str, Any], reason: ReasonCode, words: str
) -> None:
    """Unknown compression, a newer zip version, unsupported flags or a bad entry name: a reason, not a crash."""
    path = tmp_path / "damaged.docx"
    path.write_bytes(_patch_entry(_docx_bytes(), "word/document.xml", **patch))
    refused, message = refusal(lambda: parse(path))
    assert refused is reason
    assert words in message


def test_an_odt_whose_mimetype_entry_cannot_be_read_is_corrupt(tmp_path: Path, parse: Extract) -> None:
    """The sniffer reads an ODF package's mimetype entry; when zipfile cannot, the file is corrupt."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        archive.writestr("content.xml", "<office:document-content/>")
    path = tmp_path / "notes.odt"
    path.write_bytes(_patch_entry(buffer.getvalue(), "mimetype", flags=0x20))
    reason, message = refusal(lambda: parse(path))
    assert reason is ReasonCode.CORRUPT
    assert "mimetype entry cannot be read" in message
