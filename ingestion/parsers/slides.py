"""PPTX: one page per slide, its title as a heading, then text frames, tables, groups and notes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pptx.opc.package import PartFactory
from pptx.package import Package
from pptx.parts.presentation import PresentationPart
from pptx.shapes.group import GroupShape
from pptx.shapes.picture import Picture

from ingestion import sniff
from ingestion.config import ParseLimits
from ingestion.errors import PermanentError, ReasonCode
from ingestion.model import Block, Page, ParsedDocument
from ingestion.parsers.base import TextBudget, paragraphs, row_blocks, row_text

# Shows and templates (.ppsx, .potx, and their macro-enabled .ppsm, .potm) hold the same
# PresentationML as a .pptx. python-pptx maps most of their content types to its presentation part
# but not the macro-enabled show and template; PartFactory.part_type_for is its registry for this.
for _content_type in (
    "application/vnd.ms-powerpoint.slideshow.macroEnabled.main+xml",
    "application/vnd.ms-powerpoint.template.macroEnabled.main+xml",
):
    PartFactory.part_type_for.setdefault(_content_type, PresentationPart)


def parse_pptx(path: Path, limits: ParseLimits) -> ParsedDocument:
    """Pages numbered by slide (from 1); shows, templates and macro-enabled decks alike."""
    presentation = _open(path)
    slides = presentation.slides
    if len(slides) > limits.max_pages:
        raise PermanentError(
            ReasonCode.TOO_MANY_PAGES, f"{len(slides):,} slides, over the limit of {limits.max_pages:,}"
        )
    budget = TextBudget(limits.max_text_chars)
    pages = tuple(Page(number, tuple(_slide_blocks(slide, budget))) for number, slide in enumerate(slides, 1))
    if not any(block.text.strip() for page in pages for block in page.blocks) and _has_pictures(slides):
        # Like an image-only PDF: the content is there, only not as text. A person should see it.
        raise PermanentError(ReasonCode.NO_TEXT_LAYER, "the slides hold only pictures; OCR is not configured")
    title = (presentation.core_properties.title or "").strip() or None
    return ParsedDocument(sniff.PPTX, pages, title=title)


def _open(path: Path) -> Any:
    """The presentation, as ``pptx.Presentation`` opens it, less its refusal of shows and templates."""
    part = Package.open(str(path)).main_document_part
    if not isinstance(part, PresentationPart):
        raise PermanentError(
            ReasonCode.UNSUPPORTED_TYPE,
            f"a PowerPoint package whose main part is {part.content_type}, not a presentation",
        )
    return part.presentation


def _slide_blocks(slide: Any, budget: TextBudget) -> Iterator[Block]:
    title_shape = slide.shapes.title
    if title_shape is not None and title_shape.has_text_frame:
        title = " ".join(title_shape.text_frame.text.split())
        if title:
            yield Block(budget.take(title), heading_level=1)
    title_id = title_shape.shape_id if title_shape is not None else None
    for shape in _shapes(slide.shapes):
        if shape.shape_id == title_id:
            continue
        if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            for paragraph in paragraphs(shape.text_frame.text):
                yield Block(budget.take(paragraph))
        elif getattr(shape, "has_table", False) and shape.has_table:
            rows = (row_text(cell.text for cell in row.cells) for row in shape.table.rows)
            yield from row_blocks(rows, budget)
    if slide.has_notes_slide:
        notes = slide.notes_slide.notes_text_frame
        if notes is not None:
            for paragraph in paragraphs(notes.text):
                yield Block(budget.take(paragraph))


def _has_pictures(slides: Iterable[Any]) -> bool:
    return any(isinstance(shape, Picture) for slide in slides for shape in _shapes(slide.shapes))


def _shapes(shapes: Iterable[Any]) -> Iterator[Any]:
    """Every shape, groups entered (depth first, in z-order).

    Told apart by class, not ``shape_type``: that raises NotImplementedError for an auto shape
    without a preset geometry, which still holds text.
    """
    for shape in shapes:
        if isinstance(shape, GroupShape):
            yield from _shapes(shape.shapes)
        else:
            yield shape
