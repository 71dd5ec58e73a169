"""PPTX: a page per slide, the title as a heading, then shapes (groups entered), tables and notes."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pptx
import pytest
from pptx.enum.shapes import MSO_SHAPE
from pptx.oxml.ns import qn
from pptx.util import Inches

from ingestion.errors import ReasonCode
from ingestion.model import Block
from tests.unit.parsers.conftest import Extract, refusal, with_main_content_type


def _deck(path: Path) -> Path:
    presentation = pptx.Presentation()
    first = presentation.slides.add_slide(presentation.slide_layouts[5])  # title only
    first.shapes.title.text = "Roadmap"
    box = first.shapes.add_textbox(Inches(1), Inches(2), Inches(4), Inches(1))
    box.text_frame.text = "Ship the parser"
    group = first.shapes.add_group_shape()
    grouped = group.shapes.add_textbox(Inches(1), Inches(3), Inches(4), Inches(1))
    grouped.text_frame.text = "Inside a group"
    table = first.shapes.add_table(2, 2, Inches(1), Inches(4), Inches(4), Inches(1)).table
    for row, values in enumerate([("Step", "When"), ("Parse", "May")]):
        for column, value in enumerate(values):
            table.cell(row, column).text = value
    first.notes_slide.notes_text_frame.text = "Remember the demo"
    second = presentation.slides.add_slide(presentation.slide_layouts[6])  # blank
    second.shapes.add_textbox(Inches(1), Inches(1), Inches(4), Inches(1)).text_frame.text = "No title here"
    presentation.save(str(path))
    return path


def test_each_slide_is_a_page_with_title_shapes_tables_and_notes(tmp_path: Path, parse: Extract) -> None:
    """Slides become pages numbered from 1; the title is a level-1 heading; groups are entered."""
    document = parse(_deck(tmp_path / "deck.pptx"))
    assert [page.number for page in document.pages] == [1, 2]
    assert list(document.pages[0].blocks) == [
        Block("Roadmap", 1),
        Block("Ship the parser"),
        Block("Inside a group"),
        Block("Step | When\nParse | May"),
        Block("Remember the demo"),
    ]
    assert list(document.pages[1].blocks) == [Block("No title here")]


def test_too_many_slides_is_refused(tmp_path: Path, parse: Extract) -> None:
    """A slide count over the page limit is refused as too_many_pages."""
    reason, _ = refusal(lambda: parse(_deck(tmp_path / "deck.pptx"), max_pages=1))
    assert reason is ReasonCode.TOO_MANY_PAGES


def test_a_malformed_deck_is_corrupt(tmp_path: Path, parse: Extract) -> None:
    """A deck whose slide XML is malformed is corrupt, with the library's message."""
    source = _deck(tmp_path / "good.pptx")
    damaged = tmp_path / "damaged.pptx"
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(damaged, "w") as copy:
        for item in original.infolist():
            data = original.read(item)
            copy.writestr(item, b"<p:sld" if item.filename == "ppt/slides/slide1.xml" else data)
    reason, _ = refusal(lambda: parse(damaged))
    assert reason is ReasonCode.CORRUPT


def test_a_deck_of_pictures_has_no_text_layer(corpus: Path, parse: Extract) -> None:
    """A slide holding only a picture has content but no text: no_text_layer, for a person to review."""
    reason, _ = refusal(lambda: parse(corpus / "picture.pptx"))
    assert reason is ReasonCode.NO_TEXT_LAYER


@pytest.mark.parametrize(
    "content_type",
    [
        "application/vnd.ms-powerpoint.presentation.macroEnabled.main+xml",  # .pptm
        "application/vnd.openxmlformats-officedocument.presentationml.slideshow.main+xml",  # .ppsx
        "application/vnd.openxmlformats-officedocument.presentationml.template.main+xml",  # .potx
        "application/vnd.ms-powerpoint.slideshow.macroEnabled.main+xml",  # .ppsm
        "application/vnd.ms-powerpoint.template.macroEnabled.main+xml",  # .potm
    ],
)
def test_shows_templates_and_macro_enabled_decks_are_read_like_pptx(
    tmp_path: Path, parse: Extract, content_type: str
) -> None:
    """.pptm, .ppsx, .potx, .ppsm and .potm hold the same PresentationML: their slides are indexed."""
    path = tmp_path / "show.ppsx"
    path.write_bytes(with_main_content_type(_deck(tmp_path / "deck.pptx").read_bytes(), content_type))
    document = parse(path)
    assert [page.number for page in document.pages] == [1, 2]
    assert document.pages[0].blocks[0] == Block("Roadmap", 1)


def test_a_shape_of_unknown_type_keeps_its_text_and_the_deck(tmp_path: Path, parse: Extract) -> None:
    """An auto shape without a preset geometry (python-pptx cannot name its type) still gives its text."""
    presentation = pptx.Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[6])
    shape = slide.shapes.add_shape(MSO_SHAPE.RECTANGLE, Inches(1), Inches(1), Inches(2), Inches(1))
    shape.text_frame.text = "Quarterly revenue grew 12 percent"
    geometry = shape._element.spPr.find(qn("a:prstGeom"))
    shape._element.spPr.remove(geometry)
    slide.shapes.add_textbox(Inches(1), Inches(3), Inches(4), Inches(1)).text_frame.text = "Next steps"
    path = tmp_path / "deck.pptx"
    presentation.save(str(path))
    assert parse(path).text == "Quarterly revenue grew 12 percent\n\nNext steps"
