"""Plain text, Markdown and RTF: decoded text split into paragraphs (and Markdown headings)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from striprtf.striprtf import rtf_to_text

from ingestion import sniff, sniff_text
from ingestion.config import ParseLimits
from ingestion.errors import PermanentError, ReasonCode
from ingestion.model import Block, Page, ParsedDocument
from ingestion.parsers.base import paragraph_blocks

# The opening of an ATX heading; its text and optional closing "#"s are taken apart with string
# methods, because a regex for the closing sequence after lazy text backtracks quadratically.
_ATX_OPENING = re.compile(r" {0,3}(#{1,6})(?:[ \t]|$)")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def read_text(path: Path, limits: ParseLimits) -> str:
    """The file decoded (``sniff_text.decode_text``), refused when it alone is over the text limit."""
    text = sniff_text.decode_text(path.read_bytes())
    if len(text) > limits.max_text_chars:
        raise PermanentError(
            ReasonCode.TOO_LARGE, f"{len(text):,} characters, over the limit of {limits.max_text_chars:,}"
        )
    return text


def parse_text(path: Path, limits: ParseLimits) -> ParsedDocument:
    """One page of paragraphs split on blank lines (linear time, so a 3 MB novel stays fast)."""
    blocks = paragraph_blocks(read_text(path, limits))
    return ParsedDocument(sniff.PLAIN, (Page(None, tuple(blocks)),))


def parse_markdown(path: Path, limits: ParseLimits) -> ParsedDocument:
    """One page: ATX (``#``) and setext headings as heading blocks, other text as paragraphs."""
    blocks = tuple(markdown_blocks(read_text(path, limits)))
    title = next((block.text for block in blocks if block.heading_level == 1), None)
    return ParsedDocument(sniff.MARKDOWN, (Page(None, blocks),), title=title)


def parse_rtf(path: Path, limits: ParseLimits) -> ParsedDocument:
    """RTF control words stripped (striprtf), then paragraphs as for plain text."""
    text: str = rtf_to_text(read_text(path, limits), errors="replace")  # type: ignore[no-untyped-call]
    blocks = paragraph_blocks(text.replace("\r\n", "\n").replace("\r", "\n"))
    return ParsedDocument(sniff.RTF, (Page(None, tuple(blocks)),))


def markdown_blocks(text: str) -> Iterator[Block]:
    """Headings and paragraphs of Markdown ``text``; fenced code stays one block, text is kept as is.

    A small line scanner rather than a Markdown library: we need block boundaries and heading
    levels only, not rendering, and no installed library gives those without rendering HTML.
    """
    paragraph: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        if fence is not None:
            paragraph.append(line)
            if line.strip().startswith(fence):
                fence = None
                yield from _paragraph(paragraph)
            continue
        opening = _FENCE.match(line)
        if opening:
            yield from _paragraph(paragraph)
            fence = opening.group(1)[:3]
            paragraph.append(line)
            continue
        atx = _atx_heading(line)
        setext = _SETEXT.match(line) if paragraph else None
        if atx:
            yield from _paragraph(paragraph)
            level, heading = atx
            if heading:
                yield Block(heading, heading_level=level)
        elif setext:
            heading = " ".join(part.strip() for part in paragraph)
            paragraph.clear()
            yield Block(heading, heading_level=1 if setext.group(1)[0] == "=" else 2)
        elif line.strip():
            paragraph.append(line)
        else:
            yield from _paragraph(paragraph)
    yield from _paragraph(paragraph)


def _atx_heading(line: str) -> tuple[int, str] | None:
    """The level and text of an ATX heading line (closing "#"s removed), or None for another line."""
    opening = _ATX_OPENING.match(line)
    if opening is None:
        return None
    text = line[opening.end() :].strip(" \t")
    unclosed = text.rstrip("#")
    # A closing sequence follows a space ("# Title ##"), or is all there is ("## ##"); "# C#" keeps its "#".
    if not unclosed or unclosed[-1] in " \t":
        text = unclosed.rstrip(" \t")
    return len(opening.group(1)), text


def _paragraph(lines: list[str]) -> Iterator[Block]:
    """The collected ``lines`` as one block (if any text), emptying the list."""
    text = "\n".join(lines).strip()
    lines.clear()
    if text:
        yield Block(text)
