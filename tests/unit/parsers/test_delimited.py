"""CSV and TSV: rows as "cell | cell" lines, the header kept, rows grouped into blocks."""

from __future__ import annotations

from pathlib import Path

from tests.unit.parsers.conftest import Extract


def test_csv_rows_become_grouped_lines(tmp_path: Path, parse: Extract) -> None:
    """The header row is kept; quoted delimiters stay inside their cell; 20 rows per block."""
    lines = ["name,city,note"] + [f'person {index},Lisbon,"likes tea, coffee"' for index in range(25)]
    path = tmp_path / "people.csv"
    path.write_text("\n".join(lines) + "\n")
    document = parse(path)
    assert document.content_type == "text/csv"
    blocks = document.pages[0].blocks
    assert [block.text.count("\n") + 1 for block in blocks] == [20, 6]
    assert blocks[0].text.splitlines()[:2] == ["name | city | note", "person 0 | Lisbon | likes tea, coffee"]


def test_semicolon_and_tab_delimiters_are_detected(tmp_path: Path, parse: Extract) -> None:
    """Semicolons (with decimal commas) and tabs are found by content."""
    semicolons = tmp_path / "money.csv"
    semicolons.write_text("Year;Revenue\n2023;143,1\n2024;215,32\n")
    assert parse(semicolons).text == "Year | Revenue\n2023 | 143,1\n2024 | 215,32"
    tabs = tmp_path / "cups.tsv"
    tabs.write_text("Team\tCups\nBlues\t1\n")
    document = parse(tabs)
    assert document.content_type == "text/tab-separated-values"
    assert document.text == "Team | Cups\nBlues | 1"


def test_a_single_column_csv_keeps_whole_lines(corpus: Path, parse: Extract) -> None:
    """Without a consistent delimiter, each line is one cell (commas inside are text)."""
    document = parse(corpus / "single-column.csv")
    assert document.text.splitlines()[0] == "Lorem, ipsum"


def test_fields_longer_than_the_csv_default_limit_are_read(tmp_path: Path, parse: Extract) -> None:
    """A field over csv.field_size_limit's default (128 KiB) does not fail the file."""
    path = tmp_path / "wide.csv"
    path.write_text("id,blob\n1," + "x" * 200_000 + "\n2,short\n")
    assert parse(path).text.endswith("2 | short")
