"""Spreadsheets: XLSX (openpyxl, streaming) and legacy XLS (xlrd), one page per sheet."""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import openpyxl
import xlrd

from ingestion import sniff
from ingestion.config import ParseLimits
from ingestion.errors import PermanentError, ReasonCode
from ingestion.model import Block, Page, ParsedDocument
from ingestion.parsers.base import TextBudget, row_blocks, row_text


def parse_xlsx(path: Path, limits: ParseLimits) -> ParsedDocument:
    """Each worksheet as a page: its name as a heading, then rows of non-empty cells."""
    # A file object, not the path: openpyxl refuses paths without an .xlsx-like extension, and
    # the parse stage hands us files named by content hash.
    with path.open("rb") as stream, warnings.catch_warnings():
        # openpyxl warns about workbook features it ignores (data validation, conditional
        # formatting extensions, missing default styles); none of them affect cell values.
        warnings.filterwarnings("ignore", category=UserWarning, module="openpyxl")
        workbook = openpyxl.load_workbook(stream, read_only=True, data_only=True)
        try:
            sheets = workbook.worksheets
            _check_sheet_count(len(sheets), limits)
            budget = TextBudget(limits.max_text_chars)
            pages = tuple(
                _sheet_page(number, sheet.title, _xlsx_rows(sheet), budget) for number, sheet in enumerate(sheets, 1)
            )
        finally:
            workbook.close()  # read-only workbooks keep the file open until closed
    return ParsedDocument(sniff.XLSX, pages)


def parse_xls(path: Path, limits: ParseLimits) -> ParsedDocument:
    """Each sheet of an Excel 97-2003 workbook as a page, like ``parse_xlsx``."""
    # xlrd writes its diagnostics to a log file (stdout by default); keep them out of our output.
    try:
        book = xlrd.open_workbook(str(path), on_demand=True, logfile=io.StringIO())
    except xlrd.XLRDError as error:
        if "encrypted" in str(error).lower():
            raise PermanentError(ReasonCode.ENCRYPTED, "a password-protected Excel 97-2003 workbook") from error
        raise
    try:
        _check_sheet_count(book.nsheets, limits)
        budget = TextBudget(limits.max_text_chars)
        pages = []
        for index in range(book.nsheets):
            sheet = book.sheet_by_index(index)
            rows = (_xls_row(book, sheet.row(row)) for row in range(sheet.nrows))
            pages.append(_sheet_page(index + 1, sheet.name, rows, budget))
            book.unload_sheet(index)
    finally:
        book.release_resources()
    return ParsedDocument(sniff.XLS, tuple(pages))


def _xlsx_rows(sheet: Any) -> Iterator[tuple[object, ...]]:
    """The sheet's rows, each as long as its last cell, not padded to the declared dimension.

    Read-only openpyxl pads every row to the sheet's ``<dimension>``, which the file states and may
    state as A1:XFD1048576: a few kilobytes would become 17 billion empty cells. Forgetting it makes
    openpyxl size each row by its own cells.
    """
    sheet.reset_dimensions()
    # Rows missing from the file still come, as (); skipping them here keeps a far cell cheap.
    return (row for row in sheet.iter_rows(values_only=True) if row)


def _sheet_page(number: int, name: str, rows: Iterable[Iterable[object]], budget: TextBudget) -> Page:
    blocks = list(row_blocks((row_text(row) for row in rows), budget))
    if not blocks:
        return Page(number, ())  # an empty sheet's name alone is not content
    return Page(number, (Block(budget.take(name), heading_level=1), *blocks))


def _xls_row(book: xlrd.book.Book, cells: list[xlrd.sheet.Cell]) -> Iterator[object]:
    for cell in cells:
        if cell.ctype == xlrd.XL_CELL_DATE:
            try:
                yield xlrd.xldate.xldate_as_datetime(cell.value, book.datemode)
            except (xlrd.xldate.XLDateError, ValueError, OverflowError):
                yield cell.value  # a date serial out of range: keep the number
        elif cell.ctype == xlrd.XL_CELL_BOOLEAN:
            yield bool(cell.value)
        elif cell.ctype == xlrd.XL_CELL_ERROR:
            yield None
        else:
            yield cell.value


def _check_sheet_count(count: int, limits: ParseLimits) -> None:
    if count > limits.max_pages:
        raise PermanentError(ReasonCode.TOO_MANY_PAGES, f"{count:,} sheets, over the limit of {limits.max_pages:,}")
