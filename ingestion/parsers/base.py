"""What every parser shares: the text budget, the zip-bomb check, paragraph splitting, cell text."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Iterator
from datetime import date, datetime, time
from pathlib import Path

import olefile  # type: ignore[import-untyped]  # olefile ships no type hints

from ingestion.errors import PermanentError, ReasonCode
from ingestion.model import Block

ROWS_PER_BLOCK = 20  # table rows per block: paragraph boundaries for the chunker
CELL_SEPARATOR = " | "
_ZIP_ENCRYPTED = 0x1 | 0x40  # general purpose flag bits 0 (encrypted) and 6 (strong encryption)
_ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})

# A blank line: a newline, then whitespace-only lines. Linear: the class cannot match "\n" twice
# in different ways, so there is no backtracking blow-up on long texts.
_BLANK_LINES = re.compile(r"\n(?:[ \t\f\v]*\n)+")


class TextBudget:
    """Counts extracted characters and stops a parser as soon as it passes ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, text: str) -> str:
        """``text``, counted against the budget; TOO_LARGE once the total passes the limit."""
        self.used += len(text)
        if self.used > self.limit:
            raise PermanentError(ReasonCode.TOO_LARGE, f"extracted text passes the limit of {self.limit:,} characters")
        return text


def check_zip(path: Path, max_unzipped_bytes: int) -> None:
    """Refuse a zip whose entries would unpack past ``max_unzipped_bytes`` (a zip bomb), that is
    damaged, or whose entries zipfile cannot read (encrypted, an unsupported compression method).

    The central directory's sizes are enough: ``zipfile`` stops every entry at its declared size
    (and fails its CRC check), so an entry cannot inflate past what is summed here.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            for info in entries:
                _check_entry(archive, info)
    # zipfile raises NotImplementedError for a newer zip version or flags it cannot honour, and
    # UnicodeDecodeError (a ValueError) for a damaged entry name.
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as error:
        raise PermanentError(ReasonCode.CORRUPT, f"damaged zip container: {error}") from error
    total = sum(info.file_size for info in entries)
    if total > max_unzipped_bytes:
        raise PermanentError(
            ReasonCode.TOO_LARGE,
            f"unpacks to {total:,} bytes, over the limit of {max_unzipped_bytes:,} (zip bomb?)",
        )


def _check_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """An entry zipfile can read: not encrypted, a known compression method, a sound local header."""
    if info.flag_bits & _ZIP_ENCRYPTED:
        raise PermanentError(ReasonCode.ENCRYPTED, f"the zip entry {info.filename!r} is password-protected")
    if info.compress_type not in _ZIP_METHODS:
        raise PermanentError(
            ReasonCode.UNSUPPORTED_TYPE,
            f"the zip entry {info.filename!r} uses compression method {info.compress_type}, which cannot be read",
        )
    # Opening reads the local header only (no data): its name and flags must agree with the directory.
    with archive.open(info):
        pass


def check_ole(path: Path) -> None:
    """Refuse an OLE2 compound file whose directory cannot be read (damaged, not merely unknown)."""
    try:
        with olefile.OleFileIO(str(path)):
            pass
    except (OSError, ValueError, IndexError) as error:
        raise PermanentError(ReasonCode.CORRUPT, f"damaged OLE2 container: {error}") from error


def paragraphs(text: str) -> Iterator[str]:
    """The non-blank paragraphs of ``text`` (split on blank lines), stripped."""
    for paragraph in _BLANK_LINES.split(text):
        stripped = paragraph.strip()
        if stripped:
            yield stripped


def paragraph_blocks(text: str) -> list[Block]:
    return [Block(paragraph) for paragraph in paragraphs(text)]


def collapse(text: str) -> str:
    """Runs of whitespace as one space (inline text from markup)."""
    return " ".join(text.split())


def cell_text(value: object) -> str:
    """A spreadsheet or table value as text: whole floats without ``.0``, dates in ISO form."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value).strip()


def row_text(values: Iterable[object]) -> str:
    """A table row: its non-empty cells joined by ``CELL_SEPARATOR``."""
    return CELL_SEPARATOR.join(text for text in map(cell_text, values) if text)


def row_blocks(rows: Iterable[str], budget: TextBudget) -> Iterator[Block]:
    """Rows grouped ``ROWS_PER_BLOCK`` at a time, so a long table still has paragraph boundaries."""
    group: list[str] = []
    for row in rows:
        if not row:
            continue
        group.append(budget.take(row))
        if len(group) == ROWS_PER_BLOCK:
            yield Block("\n".join(group))
            group = []
    if group:
        yield Block("\n".join(group))
