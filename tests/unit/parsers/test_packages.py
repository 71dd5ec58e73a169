"""XML, EPUB and ODT: text nodes, chapters in reading order, ODF headings."""

from __future__ import annotations

import zipfile
from pathlib import Path

from ingestion.errors import ReasonCode
from ingestion.model import Block
from tests.unit.parsers.conftest import Extract, refusal


def test_xml_text_nodes_become_blocks_per_record(corpus: Path, parse: Extract) -> None:
    """Each child of the root is a block of its text lines; element names are left out."""
    document = parse(corpus / "factbook-utf-16.xml")
    assert document.pages[0].blocks[1] == Block("Canada\nOttawa\nJustin Trudeau\nHockey")
    assert "capital" not in document.text


def test_xml_entities_are_not_expanded(tmp_path: Path, parse: Extract) -> None:
    """A billion-laughs document is read without expanding its entities."""
    path = tmp_path / "laughs.xml"
    path.write_text(
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        "<lolz><item>safe text</item><item>&lol2;</item></lolz>"
    )
    assert parse(path).text == "safe text"


def test_an_xsl_stylesheet_is_unsupported(corpus: Path, parse: Extract) -> None:
    """An XSL stylesheet is a program, not a document."""
    reason, _ = refusal(lambda: parse(corpus / "unsupported_factbook.xsl"))
    assert reason is ReasonCode.UNSUPPORTED_TYPE


def test_malformed_xml_is_corrupt(tmp_path: Path, parse: Extract) -> None:
    """A file that starts like XML but is not well-formed is corrupt."""
    path = tmp_path / "broken.xml"
    path.write_text('<?xml version="1.0"?><root><a>text</b></root>')
    reason, message = refusal(lambda: parse(path))
    assert reason is ReasonCode.CORRUPT
    assert message.startswith("XMLSyntaxError")


def _epub(path: Path) -> Path:
    chapter = '<?xml version="1.0" encoding="utf-8"?><html xmlns="http://www.w3.org/1999/xhtml"><body>{}</body></html>'
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/epub+zip")
        archive.writestr(
            "META-INF/container.xml",
            '<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container"><rootfiles>'
            '<rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/>'
            "</rootfiles></container>",
        )
        archive.writestr(
            "OEBPS/content.opf",
            '<package xmlns="http://www.idpf.org/2007/opf"><metadata xmlns:dc="http://purl.org/dc/elements/1.1/">'
            "<dc:title>Two Chapters</dc:title></metadata><manifest>"
            '<item id="c1" href="text/one.xhtml" media-type="application/xhtml+xml"/>'
            '<item id="c2" href="text/two%20b.xhtml" media-type="application/xhtml+xml"/>'
            '<item id="css" href="style.css" media-type="text/css"/></manifest>'
            '<spine><itemref idref="c2"/><itemref idref="c1"/></spine></package>',
        )
        archive.writestr("OEBPS/text/one.xhtml", chapter.format("<h1>Chapter One</h1><p>Later text.</p>"))
        archive.writestr("OEBPS/text/two b.xhtml", chapter.format("<h1>Prologue</h1><p>First text.</p>"))
        archive.writestr("OEBPS/style.css", "p { margin: 0 }")
    return path


def test_epub_chapters_follow_the_spine(tmp_path: Path, parse: Extract) -> None:
    """Chapters come in spine order (not file order) through the HTML parser; the title is dc:title."""
    document = parse(_epub(tmp_path / "book.epub"))
    assert document.title == "Two Chapters"
    assert list(document.pages[0].blocks) == [
        Block("Prologue", 1),
        Block("First text."),
        Block("Chapter One", 1),
        Block("Later text."),
    ]


def test_odt_headings_and_paragraphs(tmp_path: Path, parse: Extract) -> None:
    """text:h gives headings by outline level; text:p paragraphs; spaces, tabs and breaks are kept."""
    content = (
        '<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0" '
        'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"><office:body><office:text>'
        '<text:h text:outline-level="2">Minutes</text:h>'
        '<text:p>Present:<text:s text:c="2"/>Ana<text:tab/>Rui<text:line-break/>Absent: none</text:p>'
        "<text:p/></office:text></office:body></office:document-content>"
    )
    path = tmp_path / "minutes.odt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.text")
        archive.writestr("content.xml", content)
    assert list(parse(path).pages[0].blocks) == [Block("Minutes", 2), Block("Present:  Ana\tRui\nAbsent: none")]
