"""DOCX: paragraphs and tables in body order, headings from paragraph styles (python-docx)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from docx.document import Document
from docx.opc.part import PartFactory
from docx.oxml.ns import qn
from docx.package import Package
from docx.parts.document import DocumentPart
from docx.table import Table, _Cell
from docx.text.paragraph import Paragraph

from ingestion import sniff
from ingestion.config import ParseLimits
from ingestion.errors import PermanentError, ReasonCode
from ingestion.model import Block, Page, ParsedDocument
from ingestion.parsers.base import CELL_SEPARATOR, TextBudget, row_blocks

_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)
_SDT_CONTENT = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}sdtContent"

# Templates (.dotx) and macro-enabled files (.docm, .dotm) hold the same WordprocessingML as a
# .docx under other content types. python-docx maps only the .docx type to its document part;
# PartFactory.part_type_for is its registry for exactly this, so the other types are added to it.
for _content_type in (
    "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml",
    "application/vnd.ms-word.document.macroEnabled.main+xml",
    "application/vnd.ms-word.template.macroEnabledTemplate.main+xml",
):
    PartFactory.part_type_for.setdefault(_content_type, DocumentPart)


def parse_docx(path: Path, limits: ParseLimits) -> ParsedDocument:
    """One page (``number=None``) of heading, paragraph and table blocks; headers/footers skipped.

    Templates and macro-enabled documents read the same way (macros are never run, nor read).
    """
    document = _open(path)
    budget = TextBudget(limits.max_text_chars)
    blocks: list[Block] = []
    for item in _body_items(document):
        if isinstance(item, Paragraph):
            text = item.text.strip()
            if text:
                blocks.append(Block(budget.take(text), _heading_level(item)))
        else:
            blocks.extend(row_blocks(_table_rows(item), budget))
    title = (document.core_properties.title or "").strip() or None
    return ParsedDocument(sniff.DOCX, (Page(None, tuple(blocks)),), title=title)


def _open(path: Path) -> Document:
    """The document, as ``docx.Document`` opens it, less its refusal of templates and macro-enabled files."""
    part = Package.open(str(path)).main_document_part
    if not isinstance(part, DocumentPart):
        raise PermanentError(
            ReasonCode.UNSUPPORTED_TYPE, f"a Word package whose main part is {part.content_type}, not a document"
        )
    document: Document = part.document
    return document


def _body_items(document: Document) -> Iterator[Paragraph | Table]:
    """Body paragraphs and tables in order, including those inside content controls (``w:sdt``),
    which ``iter_inner_content`` does not enter."""
    body = document.element.body
    stack = [iter(body.iterchildren())]
    while stack:
        element = next(stack[-1], None)
        if element is None:
            stack.pop()
            continue
        tag = element.tag
        if tag == qn("w:p"):
            yield Paragraph(element, document._body)  # the parent python-docx itself gives body items
        elif tag == qn("w:tbl"):
            yield Table(element, document._body)
        elif tag == qn("w:sdt"):
            content = element.find(_SDT_CONTENT)
            if content is not None:
                stack.append(iter(content.iterchildren()))


def _heading_level(paragraph: Paragraph) -> int:
    style = paragraph.style
    name = (style.name or "") if style is not None else ""
    if name.lower() == "title":
        return 1
    match = _HEADING_STYLE.match(name)
    return min(int(match.group(1)), 6) if match else 0


def _table_rows(table: Table) -> Iterator[str]:
    for row in table.rows:
        seen: set[object] = set()
        cells: list[str] = []
        for cell in row.cells:
            # A merged cell is returned once per grid column it spans; keep it once.
            if cell._tc in seen:  # the cell's XML element is its identity
                continue
            seen.add(cell._tc)
            text = _cell_text(cell)
            if text:
                cells.append(text)
        yield CELL_SEPARATOR.join(cells)


def _cell_text(cell: _Cell) -> str:
    """A cell's paragraphs and nested tables, as one line of text."""
    parts: list[str] = []
    for item in cell.iter_inner_content():
        if isinstance(item, Paragraph):
            parts.append(item.text.strip())
        else:
            parts.extend(f"[{row}]" for row in _table_rows(item) if row)
    return " ".join(part for part in parts if part)
