"""HTML: visible text only, headings and blocks, the page's own encoding respected."""

from __future__ import annotations

from pathlib import Path

from ingestion.errors import ReasonCode
from ingestion.model import Block
from tests.unit.parsers.conftest import Extract, refusal

PAGE = """<!DOCTYPE html>
<html><head><title>Visible  title</title><style>p { color: red }</style>
<script>var secret = "script text";</script></head>
<body>
<noscript>Enable JavaScript</noscript>
<template><p>template text</p></template>
<svg><title>svg title</title><text>svg text</text></svg>
<h1>Main   heading</h1>
<p>First <b>bold</b>
   paragraph.</p>
<div hidden>hidden text</div><div style="display: none">xbrl facts</div>
<ul><li>One</li><li>Two<br>lines</li></ul>
<table><tr><th>Name</th><th>Age</th></tr><tr><td>Ana</td><td>41</td></tr></table>
<pre>  keep   this
    spacing</pre>
<h3>Small heading</h3>Tail text after heading
</body></html>"""


def test_visible_text_becomes_heading_and_paragraph_blocks(tmp_path: Path, parse: Extract) -> None:
    """Scripts, styles, templates, SVG and hidden elements are dropped; block elements start blocks."""
    path = tmp_path / "page.html"
    path.write_text(PAGE, encoding="utf-8")
    document = parse(path)
    assert document.title == "Visible title"
    assert list(document.pages[0].blocks) == [
        Block("Visible title", 1),
        Block("Main heading", 1),
        Block("First bold paragraph."),
        Block("One"),
        Block("Two\nlines"),
        Block("Name | Age"),
        Block("Ana | 41"),
        Block("  keep   this\n    spacing"),
        Block("Small heading", 3),
        Block("Tail text after heading"),
    ]


def test_a_cp1252_page_keeps_its_accents(corpus: Path, parse: Extract) -> None:
    """A page in windows-1252 without a charset declaration decodes correctly."""
    document = parse(corpus / "fake-html-cp1252.html")
    assert 'Sie sagte: "Das war köstlich!" und lächelte dabei. Der Preis betrug 15,50 €.' in document.text


def test_a_utf16_page_is_decoded_before_parsing(corpus: Path, parse: Extract) -> None:
    """A UTF-16 page gives the same text as its UTF-8 twin."""
    utf16 = parse(corpus / "example-steelJIS-datasheet-utf-16.html")
    utf8 = parse(corpus / "example-steelJIS-datasheet.html")
    assert "日本語" in utf16.text
    assert utf16.text == utf8.text


def test_the_meta_charset_is_respected(tmp_path: Path, parse: Extract) -> None:
    """A declared legacy charset is used when the bytes are not UTF-8."""
    path = tmp_path / "ru.html"
    html = '<html><head><meta charset="koi8-r"></head><body><p>Привет, мир</p></body></html>'
    path.write_bytes(html.encode("koi8-r"))
    assert parse(path).text == "Привет, мир"


def test_a_page_without_visible_text_is_empty(tmp_path: Path, parse: Extract) -> None:
    """Only scripts and comments: empty."""
    path = tmp_path / "blank.html"
    path.write_text("<html><head><title></title><script>x()</script></head><body><!-- nothing --></body></html>")
    reason, _ = refusal(lambda: parse(path))
    assert reason is ReasonCode.EMPTY


def test_deeply_nested_markup_does_not_exhaust_the_stack(tmp_path: Path, parse: Extract) -> None:
    """Nesting deeper than libxml2's default limit and Python's recursion limit keeps its text."""
    path = tmp_path / "deep.html"
    path.write_text("<html><body>" + "<div>" * 1500 + "deep text" + "</div>" * 1500 + "</body></html>")
    assert "deep text" in parse(path).text


def test_a_page_nested_past_the_parser_depth_limit_keeps_all_its_text(tmp_path: Path, parse: Extract) -> None:
    """5,000 unclosed <div>s (past libxml2's 2,048 even with huge_tree) lose no text, nor show scripts."""
    rows = "".join(f"<div class=row>entry number {index}\n" for index in range(5000))
    path = tmp_path / "unclosed.html"
    path.write_text(
        "<html><head><title>Log</title></head><body>\n"
        f"{rows}<script>var hidden = 1;</script><h2>Summary</h2><p>THE END</p></body></html>"
    )
    document = parse(path)
    blocks = list(document.pages[0].blocks)
    assert document.title == "Log"
    assert blocks[:2] == [Block("Log", 1), Block("entry number 0")]
    assert [block.text for block in blocks].count("entry number 4999") == 1
    assert blocks[-2:] == [Block("Summary", 2), Block("THE END")]
    assert "hidden" not in document.text
