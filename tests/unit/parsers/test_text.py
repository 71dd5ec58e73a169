"""Plain text, Markdown and RTF: paragraphs, headings, and any common encoding."""

from __future__ import annotations

import time
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


def test_a_long_novel_parses_in_linear_time(corpus: Path, parse: Extract) -> None:
    """The 3 MB War and Peace splits into its paragraphs in well under a second or two."""
    started = time.monotonic()
    document = parse(corpus / "book-war-and-peace-1225p.txt")
    assert time.monotonic() - started < 3
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
