"""Spreadsheets: a page per sheet, its name as a heading, rows of non-empty cells."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import openpyxl

from ingestion.errors import ReasonCode
from ingestion.model import Block
from tests.unit.parsers.conftest import Extract, refusal


def _workbook(path: Path, rows: int = 3) -> Path:
    workbook = openpyxl.Workbook()
    sales = workbook.active
    sales.title = "Sales"
    sales.append(["Region", "Amount", "Closed", "Paid"])
    for index in range(rows - 1):
        sales.append([f"Region {index}", 10.0 + index, dt.date(2024, 1, 1) + dt.timedelta(days=index), index % 2 == 0])
    workbook.create_sheet("Empty")
    notes = workbook.create_sheet("Notes")
    notes["B2"] = "Checked by Ana"
    workbook.save(path)
    return path


def test_each_sheet_is_a_page_of_rows(tmp_path: Path, parse: Extract) -> None:
    """Sheets are pages numbered from 1; empty sheets have no blocks; whole floats lose their .0."""
    document = parse(_workbook(tmp_path / "book.xlsx"))
    assert [page.number for page in document.pages] == [1, 2, 3]
    assert list(document.pages[0].blocks) == [
        Block("Sales", 1),
        Block(
            "Region | Amount | Closed | Paid\n"
            "Region 0 | 10 | 2024-01-01T00:00:00 | TRUE\n"
            "Region 1 | 11 | 2024-01-02T00:00:00 | FALSE"
        ),
    ]
    assert document.pages[1].blocks == ()
    assert list(document.pages[2].blocks) == [Block("Notes", 1), Block("Checked by Ana")]


def test_long_sheets_are_grouped_twenty_rows_per_block(tmp_path: Path, parse: Extract) -> None:
    """Rows come in blocks of 20 so chunking finds paragraph boundaries."""
    document = parse(_workbook(tmp_path / "book.xlsx", rows=45))
    rows_per_block = [block.text.count("\n") + 1 for block in document.pages[0].blocks[1:]]
    assert rows_per_block == [20, 20, 5]


def test_text_over_the_limit_stops_the_sheet(tmp_path: Path, parse: Extract) -> None:
    """Reading stops as soon as the text passes max_text_chars: too_large."""
    reason, _ = refusal(lambda: parse(_workbook(tmp_path / "book.xlsx", rows=500), max_text_chars=1000))
    assert reason is ReasonCode.TOO_LARGE


def test_an_empty_workbook_is_empty(corpus: Path, parse: Extract) -> None:
    """A workbook without cells is empty (sheet names alone are not content)."""
    reason, _ = refusal(lambda: parse(corpus / "empty.xlsx"))
    assert reason is ReasonCode.EMPTY


def test_legacy_xls_has_the_same_shape(corpus: Path, parse: Extract) -> None:
    """An Excel 97-2003 workbook gives one page per sheet, its name first."""
    document = parse(corpus / "tests-example.xls")
    assert document.content_type == "application/vnd.ms-excel"
    assert [page.number for page in document.pages] == [1, 2, 3]
    assert document.pages[0].blocks[0] == Block("Example Test", 1)
    assert "MC | What is 2+2? | 4 | correct" in document.pages[0].text


def test_an_encrypted_workbook_is_encrypted(corpus: Path, parse: Extract) -> None:
    """A password-protected xlsx (an OLE2 EncryptedPackage) is refused as encrypted."""
    reason, _ = refusal(lambda: parse(corpus / "password_protected.xlsx"))
    assert reason is ReasonCode.ENCRYPTED


def test_the_file_name_does_not_matter(tmp_path: Path, parse: Extract) -> None:
    """A workbook stored under a name without extension (as the parse stage does) still opens."""
    path = _workbook(tmp_path / "book.xlsx")
    anonymous = path.rename(tmp_path / "source")
    assert "Checked by Ana" in parse(anonymous, name="").text
