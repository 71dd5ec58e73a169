"""Plain text, Markdown and RTF: paragraphs, headings, and any common encoding."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.errors import ReasonCode
from ingestion.model import Block
from tests.unit.parsers.conftest import Extract, refusal


def test_plain_text_is_split_into_paragraphs_on_blank_lines(tmp_path: Path, parse: Extract) -> None:
    """Blank lines (even with spaces) separate blocks; single newlines stay inside a block."""
    path = tmp_path / "notes.txt"
    path.write_text("First line\nstill first.\n \t \nSecond.\n\n\n\nThird.\n")
    assert [block.text for block in parse(path).pages[0].blocks] == ["First line\nstill first.", "Second.", "Third."]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "cp1252"])
def test_text_in_other_encodings_decodes(tmp_path: Path, parse: Extract, encoding: str) -> None:
    """UTF-16/32 with or without a BOM and cp1252 give the same text as UTF-8."""
    text = "Café crème, s'il vous plaît.\n\nÇa coûte 5 €, señor — gracias.\n"
    path = tmp_path / "text.txt"
    path.write_bytes(text.encode(encoding))
    assert parse(path).text == "Café crème, s'il vous plaît.\n\nÇa coûte 5 €, señor — gracias."


def test_whitespace_only_text_is_empty(tmp_path: Path, parse: Extract) -> None:
    """Spaces and newlines alone: empty."""
    path = tmp_path / "blank.txt"
    path.write_text("  \n\n\t\n")
    reason, _ = refusal(lambda: parse(path))
    assert reason is ReasonCode.EMPTY


@pytest.mark.timeout(60)  # quadratic work on 3 MB would run for hours
def test_a_long_novel_parses_into_its_paragraphs(corpus: Path, parse: Extract) -> None:
    """The 3 MB War and Peace splits into its ten thousand paragraphs."""
    document = parse(corpus / "book-war-and-peace-1225p.txt")
    assert len(document.pages[0].blocks) > 10_000


def test_markdown_headings_and_paragraphs(tmp_path: Path, parse: Extract) -> None:
    """ATX and setext headings become heading blocks; fenced code stays whole; text is kept as is."""
    path = tmp_path / "guide.md"
    path.write_text(
        "# Guide #\n\nIntro with *emphasis*.\n\nSetext title\n============\n\nBody.\n\n"
        "Second level\n---\n```\n# not a heading\n\ncode\n```\n#### Deep\n- item one\n- item two\n"
    )
    document = parse(path)
    assert document.title == "Guide"
    assert list(document.pages[0].blocks) == [
        Block("Guide", 1),
        Block("Intro with *emphasis*."),
        Block("Setext title", 1),
        Block("Body."),
        Block("Second level", 2),
        Block("```\n# not a heading\n\ncode\n```"),
        Block("Deep", 4),
        Block("- item one\n- item two"),
    ]


def test_rtf_control_words_are_stripped(tmp_path: Path, parse: Extract) -> None:
    r"""RTF gives its text, with \'xx escapes decoded."""
    path = tmp_path / "letter.rtf"
    path.write_text(r"{\rtf1\ansi{\fonttbl\f0 Arial;}\f0 Caf\'e9 au lait\par\par Second paragraph\par}")
    assert parse(path).text == "Café au lait\n\nSecond paragraph"


@pytest.mark.timeout(30)  # quadratic backtracking over 300,000 spaces runs for many minutes
def test_a_heading_with_a_long_run_of_spaces_parses_in_linear_time(tmp_path: Path, parse: Extract) -> None:
    """A heading line with 300,000 inner spaces parses in one pass (a lazy-text regex is quadratic)."""
    path = tmp_path / "spaces.md"
    path.write_text("# x" + " " * 300_000 + "y ##\n\nBody.\n")
    document = parse(path)
    assert list(document.pages[0].blocks) == [Block("x" + " " * 300_000 + "y", 1), Block("Body.")]


@pytest.mark.parametrize(
    ("line", "heading"),
    [
        ("# Title", Block("Title", 1)),
        ("### Title ###   ", Block("Title", 3)),
        ("## C#", Block("C#", 2)),
        ("#\tTabbed\t#", Block("Tabbed", 1)),
        ("   ###### Six", Block("Six", 6)),
        ("####### Seven", Block("####### Seven")),
        ("#hashtag", Block("#hashtag")),
        ("    # indented code", Block("# indented code")),
    ],
)
def test_atx_headings_lose_their_closing_hashes_only_after_a_space(
    tmp_path: Path, parse: Extract, line: str, heading: Block
) -> None:
    """A closing "#" run is dropped when a space precedes it; "#hashtag" and 7 "#"s are not headings."""
    path = tmp_path / "line.md"
    path.write_text(line + "\n")
    assert list(parse(path).pages[0].blocks) == [heading]


def test_a_readme_opening_with_html_keeps_its_markdown_headings(tmp_path: Path, parse: Extract) -> None:
    """A README.md that opens with a centred logo (<p align="center">) is Markdown, not HTML."""
    path = tmp_path / "README.md"
    path.write_text(
        '<p align="center"><img src="logo.png" width="200"></p>\n\n# MyProject\n\nA fast library.\n\n'
        "## Install\n\n```\npip install myproject\n```\n"
    )
    document = parse(path)
    assert document.content_type == "text/markdown"
    assert [block for block in document.pages[0].blocks if block.heading_level] == [
        Block("MyProject", 1),
        Block("Install", 2),
    ]


def test_a_markdown_note_mentioning_the_pdf_header_is_markdown(tmp_path: Path, parse: Extract) -> None:
    """A note that quotes "%PDF-1.7" in its first kilobyte is indexed as the Markdown it is."""
    path = tmp_path / "notes.md"
    path.write_text("# About PDF\n\nEvery PDF file begins with the header %PDF-1.7 followed by objects.\n")
    document = parse(path)
    assert document.content_type == "text/markdown"
    assert document.pages[0].blocks[0] == Block("About PDF", 1)


def test_a_text_file_with_a_line_over_the_csv_field_limit_is_read(tmp_path: Path, parse: Extract) -> None:
    """A 200,000-character line (over csv's default 128 KiB field limit) does not fail dialect sniffing."""
    path = tmp_path / "server.log"
    path.write_text("x" * 200_000 + "\nsecond line\n")
    document = parse(path)
    assert document.content_type == "text/plain"
    assert document.text == "x" * 200_000 + "\nsecond line"


def test_rtf_unicode_escapes_out_of_range_are_corrupt(tmp_path: Path, parse: Extract) -> None:
    r"""A \u escape past any code point (\u99999999999) ends as corrupt, not a crash."""
    path = tmp_path / "bad.rtf"
    path.write_bytes(rb"{\rtf1\ansi Hello \u99999999999? world\par}")
    reason, message = refusal(lambda: parse(path))
    assert reason is ReasonCode.CORRUPT
    assert message.startswith("OverflowError")


def test_rtf_surrogate_escapes_pair_up_or_become_replacement_characters(tmp_path: Path, parse: Extract) -> None:
    r"""\u escapes of a surrogate pair give the character; a lone surrogate gives U+FFFD (UTF-8 safe)."""
    path = tmp_path / "emoji.rtf"
    path.write_bytes(rb"{\rtf1\ansi Lone \u-10240? and pair \u-10179?\u-8704? end\par}")
    text = parse(path).text
    assert text == "Lone \ufffd and pair \U0001f600 end"
    assert text.encode("utf-8")
