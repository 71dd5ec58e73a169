"""CSV and TSV: rows as "cell | cell" lines, header row kept, grouped into blocks of rows."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

from ingestion import sniff
from ingestion.config import ParseLimits
from ingestion.model import Page, ParsedDocument
from ingestion.parsers.base import TextBudget, row_blocks, row_text
from ingestion.parsers.text import read_text


def parse_csv(path: Path, limits: ParseLimits) -> ParsedDocument:
    """Comma, semicolon or pipe separated values, whichever splits the lines consistently.

    A file with no consistent delimiter (a one-column CSV) is read as one cell per line.
    """
    text = read_text(path, limits)
    delimiter = sniff.csv_delimiter(text, (",", ";", "|"))
    return _parse(text, delimiter, sniff.CSV, limits)


def parse_tsv(path: Path, limits: ParseLimits) -> ParsedDocument:
    """Tab separated values."""
    return _parse(read_text(path, limits), "\t", sniff.TSV, limits)


def _parse(text: str, delimiter: str | None, content_type: str, limits: ParseLimits) -> ParsedDocument:
    rows = _rows(text, delimiter)
    blocks = tuple(row_blocks(rows, TextBudget(limits.max_text_chars)))
    return ParsedDocument(content_type, (Page(None, blocks),))


def _rows(text: str, delimiter: str | None) -> Iterator[str]:
    if delimiter is None:
        yield from (line.strip() for line in text.split("\n"))
        return
    # Fields of any length: ingestion.sniff lifts csv's field_size_limit (128 KiB by default).
    for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
        yield row_text(row)
