"""Spreadsheets: a page per sheet, its name as a heading, rows of non-empty cells."""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from pathlib import Path

import openpyxl
import pytest

from ingestion.errors import ReasonCode
from ingestion.model import Block
from tests.unit.parsers.conftest import Extract, refusal, with_main_content_type


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


def test_a_sheet_declaring_the_whole_grid_reads_only_its_cells(tmp_path: Path, parse: Extract) -> None:
    """A <dimension> of A1:XFD2000 with two real cells parses in well under a second, both cells kept."""
    source = _workbook(tmp_path / "book.xlsx")
    path = tmp_path / "grid.xlsx"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as copy:
        for item in original.infolist():
            data = original.read(item)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = re.sub(rb'<dimension ref="[^"]+"', b'<dimension ref="A1:XFD1048576"', data)
                far = b'<row r="2000"><c r="B2000" t="inlineStr"><is><t>far cell</t></is></c></row>'
                data = data.replace(b"</sheetData>", far + b"</sheetData>")
            copy.writestr(item, data)
    document = parse(path)  # padded to the declared grid, this would be 17 billion cells: a hang
    assert document.pages[0].text.startswith("Sales\n\nRegion | Amount")
    assert document.pages[0].text.endswith("far cell")


def test_a_binary_workbook_is_unsupported_with_advice(tmp_path: Path, parse: Extract) -> None:
    """An .xlsb (binary parts, not XML) is unsupported, and the message says to save it as .xlsx."""
    path = tmp_path / "book.xlsb"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("xl/workbook.bin", b"\x83\x01\x00" * 50)
        archive.writestr("xl/worksheets/sheet1.bin", b"\x81\x01\x00" * 50)
    assert refusal(lambda: parse(path)) == (
        ReasonCode.UNSUPPORTED_TYPE,
        "binary workbook .xlsb is not supported; save as .xlsx",
    )


@pytest.mark.parametrize(
    ("damage", "error"),
    [
        ({10219: 215}, "AssertionError"),  # a compound-document sector chain xlrd asserts on
        ({2580: 29, 4457: 27, 10333: 80, 11855: 241}, "KeyError"),  # a record xlrd looks up unguarded
    ],
)
def test_a_damaged_xls_is_corrupt(
    corpus: Path, tmp_path: Path, parse: Extract, damage: dict[int, int], error: str
) -> None:
    """xlrd's asserts and unguarded lookups on a damaged Excel 97-2003 file end as corrupt, not a crash."""
    data = bytearray((corpus / "tests-example.xls").read_bytes())
    for offset, value in damage.items():
        data[offset] = value
    path = tmp_path / "damaged.xls"
    path.write_bytes(bytes(data))
    reason, message = refusal(lambda: parse(path))
    assert reason is ReasonCode.CORRUPT
    assert message.startswith(error)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/vnd.ms-excel.sheet.macroEnabled.main+xml",  # .xlsm
        "application/vnd.openxmlformats-officedocument.spreadsheetml.template.main+xml",  # .xltx
    ],
)
def test_macro_enabled_workbooks_and_templates_are_read_like_xlsx(
    tmp_path: Path, parse: Extract, content_type: str
) -> None:
    """.xlsm and .xltx hold the same SpreadsheetML: their cells are indexed."""
    path = tmp_path / "book.xlsm"
    path.write_bytes(with_main_content_type(_workbook(tmp_path / "book.xlsx").read_bytes(), content_type))
    assert "Checked by Ana" in parse(path).text
