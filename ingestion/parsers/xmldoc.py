"""Generic XML: the text nodes (element names left out), one block per child of the root.

XSL stylesheets are programs that render other XML, not documents: refused as unsupported.
"""

from __future__ import annotations

import re
from pathlib import Path

import lxml.etree

from ingestion import sniff, sniff_text
from ingestion.config import ParseLimits
from ingestion.errors import PermanentError, ReasonCode
from ingestion.model import Block, Page, ParsedDocument
from ingestion.parsers.base import TextBudget

_XSL_NAMESPACE = "http://www.w3.org/1999/XSL/Transform"
_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>")


def safe_parser() -> lxml.etree.XMLParser:
    """A parser that neither expands entities (billion laughs) nor fetches DTDs or anything else."""
    return lxml.etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True, remove_pis=True
    )


def parse_xml_bytes(data: bytes) -> lxml.etree._Element:
    """``data`` as an XML tree: lxml reads the BOM and encoding declaration itself; when those are
    missing or wrong, the text decoded our way is tried before the file is called corrupt."""
    try:
        return lxml.etree.fromstring(data, safe_parser())
    except lxml.etree.XMLSyntaxError as first_error:
        try:
            text = _XML_DECLARATION.sub("", sniff_text.decode_text(data), count=1)
            return lxml.etree.fromstring(text, safe_parser())
        except (lxml.etree.XMLSyntaxError, PermanentError):
            raise first_error from None


def parse_xml(path: Path, limits: ParseLimits) -> ParsedDocument:
    """One page; each child of the root element becomes a block of its text lines."""
    root = parse_xml_bytes(path.read_bytes())
    if lxml.etree.QName(root).namespace == _XSL_NAMESPACE:
        raise PermanentError(ReasonCode.UNSUPPORTED_TYPE, "an XSL stylesheet is a program, not a document")
    budget = TextBudget(limits.max_text_chars)
    blocks: list[Block] = []
    lead = (root.text or "").strip()
    if lead:
        blocks.append(Block(budget.take(lead)))
    # Unexpanded entity references (safe_parser keeps them unresolved) are markup, not text.
    references = {str(entity.text) for entity in root.iter(lxml.etree.Entity)}
    for child in root:
        lines = [text.strip() for text in child.itertext() if text.strip() and text not in references]
        tail = (child.tail or "").strip()
        if lines:
            blocks.append(Block(budget.take("\n".join(lines))))
        if tail:
            blocks.append(Block(budget.take(tail)))
    return ParsedDocument(sniff.XML, (Page(None, tuple(blocks)),))
