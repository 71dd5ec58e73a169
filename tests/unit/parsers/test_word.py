"""DOCX: paragraphs and tables in body order, headings from styles, merged and nested cells once."""

from __future__ import annotations

import zipfile
from pathlib import Path

import docx
import pytest

from ingestion.errors import ReasonCode
from ingestion.model import Block
from tests.unit.parsers.conftest import Extract, refusal, with_main_content_type


def _report(path: Path) -> Path:
    document = docx.Document()
    document.core_properties.title = "Quarterly report"
    document.add_paragraph("Quarterly report", style="Title")
    document.add_heading("Results", level=1)
    document.add_paragraph("Revenue grew in every region.")
    table = document.add_table(rows=3, cols=3)
    for row, values in enumerate([("Region", "Q1", "Q2"), ("North", "10", "12"), ("South", "", "9")]):
        for column, value in enumerate(values):
            table.cell(row, column).text = value
    table.cell(0, 1).merge(table.cell(0, 2))
    table.cell(0, 1).text = "Quarters"
    document.add_heading("Outlook", level=2)
    document.add_paragraph("   ")
    document.add_paragraph("We expect more of the same.")
    document.save(str(path))
    return path


def test_blocks_follow_body_order_with_heading_levels(tmp_path: Path, parse: Extract) -> None:
    """Title and Heading N styles give heading levels; tables sit where they are in the body."""
    document = parse(_report(tmp_path / "report.docx"))
    assert document.title == "Quarterly report"
    assert [page.number for page in document.pages] == [None]
    assert list(document.pages[0].blocks) == [
        Block("Quarterly report", 1),
        Block("Results", 1),
        Block("Revenue grew in every region."),
        Block("Region | Quarters\nNorth | 10 | 12\nSouth | 9"),
        Block("Outlook", 2),
        Block("We expect more of the same."),
    ]


def test_nested_tables_are_kept_inside_their_cell(corpus: Path, parse: Extract) -> None:
    """A table inside a cell is rendered inline in brackets rather than lost."""
    document = parse(corpus / "docx-tables.docx")
    assert "d | [e | f] [g&t | h] | i" in document.text


def test_a_docx_without_text_is_empty(tmp_path: Path, parse: Extract) -> None:
    """A document with only blank paragraphs is empty."""
    document = docx.Document()
    document.add_paragraph("  ")
    path = tmp_path / "blank.docx"
    document.save(str(path))
    reason, _ = refusal(lambda: parse(path))
    assert reason is ReasonCode.EMPTY


def test_a_docx_with_a_damaged_part_is_corrupt(tmp_path: Path, parse: Extract) -> None:
    """Malformed XML in word/document.xml is reported as corrupt with the library's message."""
    source = _report(tmp_path / "good.docx")
    damaged = tmp_path / "damaged.docx"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(damaged, "w") as copy:
        for item in original.infolist():
            data = original.read(item)
            copy.writestr(item, b"<w:document><unclosed>" if item.filename == "word/document.xml" else data)
    reason, message = refusal(lambda: parse(damaged))
    assert reason is ReasonCode.CORRUPT
    assert message.startswith("XMLSyntaxError")


def test_a_truncated_docx_is_corrupt(tmp_path: Path, parse: Extract) -> None:
    """A docx cut short (no zip directory) is corrupt."""
    path = tmp_path / "cut.docx"
    path.write_bytes(_report(tmp_path / "full.docx").read_bytes()[:2000])
    reason, _ = refusal(lambda: parse(path))
    assert reason is ReasonCode.CORRUPT


@pytest.mark.parametrize(
    "content_type",
    [
        "application/vnd.ms-word.document.macroEnabled.main+xml",  # .docm
        "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml",  # .dotx
        "application/vnd.ms-word.template.macroEnabledTemplate.main+xml",  # .dotm
    ],
)
def test_macro_enabled_documents_and_templates_are_read_like_docx(
    tmp_path: Path, parse: Extract, content_type: str
) -> None:
    """.docm, .dotx and .dotm hold the same WordprocessingML: their text is indexed like a .docx's."""
    path = tmp_path / "macro.docm"
    path.write_bytes(with_main_content_type(_report(tmp_path / "report.docx").read_bytes(), content_type))
    document = parse(path)
    assert document.title == "Quarterly report"
    assert Block("Results", 1) in document.pages[0].blocks
