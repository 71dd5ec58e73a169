"""HTML (lxml.html): visible text as heading and paragraph blocks; also used for e-mail and EPUB.

Scripts, styles and other invisible parts are dropped; ``h1``..``h6`` become headings; every block
element starts a new block; a table row without nested blocks becomes one "cell | cell" line;
whitespace is collapsed except inside ``pre``. A page nested deeper than libxml2 builds trees for
is read from parser events instead, with the same rules in a simpler form, so no text is lost.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping
from pathlib import Path

import lxml.etree
import lxml.html

from ingestion import sniff, sniff_text
from ingestion.config import ParseLimits
from ingestion.errors import PermanentError, ReasonCode
from ingestion.model import Block, Page, ParsedDocument
from ingestion.parsers.base import CELL_SEPARATOR, TextBudget, collapse

_DROP = frozenset({"script", "style", "noscript", "template", "svg", "head", "iframe", "object", "canvas"})
_DROP |= frozenset({"select", "button", "math"})
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_BLOCKS = frozenset(
    {
        *("address", "article", "aside", "blockquote", "body", "caption", "center", "dd", "details"),
        *("dialog", "dir", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form"),
        *("header", "hgroup", "hr", "html", "legend", "li", "main", "menu", "nav", "ol", "p"),
        *("section", "summary", "table", "tbody", "thead", "tfoot", "tr", "td", "th", "ul", "option"),
        *_HEADINGS,
    }
)
_CELLS = frozenset({"td", "th"})
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")
# Control characters are not text (and not allowed in XML trees); NUL then marks <br> in buffers.
_CONTROLS = str.maketrans(dict.fromkeys([*range(9), 11, 12, *range(14, 32)]))
_LINE_BREAK = "\x00"


def parse_html(path: Path, limits: ParseLimits) -> ParsedDocument:
    """One page (``number=None``); the ``<title>`` is the document's title."""
    text = decode_html(path.read_bytes())
    if len(text) > limits.max_text_chars * 4:
        # Markup is mostly tags; a page this big is over the text limit in practice, and parsing
        # it would cost memory for nothing.
        raise PermanentError(ReasonCode.TOO_LARGE, f"{len(text):,} characters of HTML")
    title, blocks = html_blocks(text, TextBudget(limits.max_text_chars))
    return ParsedDocument(sniff.HTML, (Page(None, tuple(blocks)),), title=title)


def decode_html(data: bytes) -> str:
    """The page's text: a BOM first, then valid UTF-8, then the ``<meta>`` charset, then a guess.

    UTF-8 beats a declared charset because pages that declare latin-1 yet are UTF-8 are common,
    while bytes that are valid multi-byte UTF-8 by accident are rare.
    """
    if data.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return sniff_text.decode_text(data)
    try:
        return data.decode("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError:
        pass
    declared = _META_CHARSET.search(data[:8192])
    if declared:
        encoding = declared.group(1).decode("ascii").lower()
        # WHATWG: a page labelled latin-1 is decoded as windows-1252.
        encoding = "cp1252" if encoding in ("iso-8859-1", "latin1", "latin-1", "us-ascii", "ascii") else encoding
        try:
            return data.decode(encoding).replace("\r\n", "\n")
        except (LookupError, UnicodeDecodeError):
            pass  # an unknown or wrong label: fall back to guessing
    return sniff_text.decode_text(data)


def html_blocks(text: str, budget: TextBudget) -> tuple[str | None, list[Block]]:
    """The ``<title>`` and the text blocks of an HTML document."""
    text = _XML_DECLARATION.sub("", text, count=1)  # lxml refuses str input with an encoding declaration
    text = text.translate(_CONTROLS)
    if not text.strip():
        return None, []
    # huge_tree lifts libxml2's nesting limit (about 256), past which it silently drops the text
    # of real-world pages; the sandbox bounds the memory this may cost.
    parser = lxml.html.HTMLParser(huge_tree=True)
    try:
        root = lxml.html.document_fromstring(text, parser=parser)
    except lxml.etree.ParserError:
        return None, []  # lxml's "Document is empty": nothing but comments or whitespace
    if _resource_limit(parser):
        # Even huge_tree stops at a depth of 2048 (a page of unclosed <div>s reaches it), and
        # lxml then returns the tree built so far: the rest of the page would be lost without a
        # word. The event interface builds no tree, so it has no depth to exceed.
        return _flat_blocks(text, budget)
    title_element = root.find("head/title")
    title = collapse(title_element.text_content()) if title_element is not None else ""
    walker = _Walker(budget)
    walker.walk(root)
    walker.flush()
    return _titled(title, walker.blocks, budget)


def _flat_blocks(text: str, budget: TextBudget) -> tuple[str | None, list[Block]]:
    """``html_blocks`` from parser events rather than a tree: any nesting depth, simpler structure."""
    events = _Events(budget)
    parser = lxml.etree.HTMLParser(target=events, huge_tree=True)
    lxml.etree.fromstring(text, parser)
    limit = _resource_limit(parser)
    if limit:
        raise PermanentError(ReasonCode.TOO_LARGE, f"the page is beyond the HTML parser's limits: {limit}")
    events.flush()
    return _titled(collapse("".join(events.title)), events.blocks, budget)


def _resource_limit(parser: lxml.etree.HTMLParser) -> str | None:
    """libxml2's message when it stopped at one of its resource limits (the tree is then partial)."""
    for entry in parser.error_log:
        if entry.type == lxml.etree.ErrorTypes.ERR_RESOURCE_LIMIT or "Excessive depth" in entry.message:
            return str(entry.message).strip()
    return None


def _titled(title: str, blocks: list[Block], budget: TextBudget) -> tuple[str | None, list[Block]]:
    """The title, and the blocks led by it as a heading unless they already start with it."""
    if title and blocks and blocks[0].text != title:
        blocks.insert(0, Block(budget.take(title), heading_level=1))
    return title or None, blocks


class _Blocks:
    """Collects inline text into a buffer and turns it into a block at every block boundary."""

    def __init__(self, budget: TextBudget) -> None:
        self.budget = budget
        self.blocks: list[Block] = []
        self.buffer: list[str] = []

    def flush(self, heading_level: int = 0) -> None:
        lines = (collapse(line) for line in "".join(self.buffer).split(_LINE_BREAK))
        text = "\n".join(line for line in lines if line)
        self.buffer = []
        if text:
            self.blocks.append(Block(self.budget.take(text), heading_level))

    def emit(self, text: str, heading_level: int = 0) -> None:
        self.flush()
        if text.strip():
            self.blocks.append(Block(self.budget.take(text), heading_level))


class _Walker(_Blocks):
    """Blocks from a parsed tree: headings, ``pre`` and table rows keep their structure."""

    def walk(self, root: lxml.html.HtmlElement) -> None:
        """Depth first with an explicit stack: hostile pages nest deeper than Python recursion goes."""
        stack: list[tuple[lxml.html.HtmlElement, bool]] = [(root, False)]
        while stack:
            element, closing = stack.pop()
            tag = _tag(element)
            if closing:
                if tag in _BLOCKS:
                    self.flush()
            elif tag in _DROP or not tag or _hidden(element.attrib):
                pass  # invisible, or a comment / processing instruction; its tail text still counts
            elif tag in _HEADINGS:
                self.emit(collapse(element.text_content()), _HEADINGS[tag])
            elif tag == "pre":
                self.emit(element.text_content().strip("\n"))
            elif tag == "tr" and not _has_nested_blocks(element):
                cells = (collapse(cell.text_content()) for cell in element if _tag(cell) in _CELLS)
                self.emit(CELL_SEPARATOR.join(cell for cell in cells if cell))
            elif tag == "br":
                self.buffer.append(_LINE_BREAK)
            else:
                if tag in _BLOCKS:
                    self.flush()
                self.buffer.append(element.text or "")
                stack.append((element, True))
                stack.extend((child, False) for child in reversed(element))
                continue  # the tail follows the children, when the closing entry is popped
            self.buffer.append(element.tail or "")


class _Events(_Blocks):
    """Blocks from lxml's parser-target events (no tree): every block element starts a block, a
    table row's cells are one "cell | cell" line, and a heading's text is one heading block."""

    def __init__(self, budget: TextBudget) -> None:
        super().__init__(budget)
        self.open: list[tuple[str, bool]] = []  # the open elements: (tag, whether it hides its content)
        self.hidden = 0  # open elements that hide their content (scripts, hidden divs, the head)
        self.heading = 0  # the level of the open heading, 0 outside headings
        self.cells = 0  # cells so far in the open table row
        self.in_pre = 0
        self.in_title = False
        self.title: list[str] = []

    def start(self, tag: str, attrib: Mapping[str, str]) -> None:
        name = tag.lower()
        parent = self.open[-1][0] if self.open else ""
        hides = not self.hidden and (name in _DROP or _hidden(attrib))
        self.open.append((name, hides))
        self.in_title = name == "title" and parent == "head" and not self.title
        self.hidden += hides
        if self.hidden:
            return
        if name in _HEADINGS and not self.heading:
            self.flush()
            self.heading = _HEADINGS[name]
        elif name == "br":
            self.buffer.append(_LINE_BREAK)
        elif name in _CELLS and parent == "tr":
            self.buffer.append(CELL_SEPARATOR if self.cells else "")
            self.cells += 1
        elif name in _BLOCKS and not self.heading:
            self.flush()
            self.cells = 0
        self.in_pre += name == "pre"

    def end(self, tag: str) -> None:
        if not self.open:
            return  # libxml2 balances its events; this only guards against a stray one
        name, hides = self.open.pop()
        self.in_title = False
        if self.hidden:
            self.hidden -= hides
            return
        self.in_pre -= name == "pre"
        if name in _HEADINGS and self.heading == _HEADINGS[name]:
            self.flush(self.heading)
            self.heading = 0
        elif name in _BLOCKS and name not in _CELLS and not self.heading:
            self.flush()

    def data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        if not self.hidden:
            self.buffer.append(data.replace("\n", _LINE_BREAK) if self.in_pre else data)

    def close(self) -> None:
        """lxml's end of input; the caller flushes."""


def _tag(element: lxml.html.HtmlElement) -> str:
    """The lower-case local name; empty for comments and processing instructions."""
    tag = element.tag
    return tag.rpartition("}")[2].lower() if isinstance(tag, str) else ""


def _hidden(attributes: Mapping[str, str]) -> bool:
    """Hidden from readers: inline XBRL and templating keep machine data in such elements."""
    style = (attributes.get("style") or "").replace(" ", "").lower()
    return attributes.get("hidden") is not None or "display:none" in style


def _has_nested_blocks(row: lxml.html.HtmlElement) -> bool:
    return any(_tag(node) in _BLOCKS and _tag(node) not in _CELLS for cell in row for node in cell.iterdescendants())
