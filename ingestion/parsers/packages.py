"""Zip packages of XML documents: EPUB (XHTML chapters in spine order) and ODT (``content.xml``)."""

from __future__ import annotations

import posixpath
import zipfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import lxml.etree

from ingestion import sniff
from ingestion.config import ParseLimits
from ingestion.errors import PermanentError, ReasonCode
from ingestion.model import Block, Page, ParsedDocument
from ingestion.parsers.base import TextBudget
from ingestion.parsers.html import decode_html, html_blocks
from ingestion.parsers.xmldoc import parse_xml_bytes

_CONTAINER = "{urn:oasis:names:tc:opendocument:xmlns:container}rootfile"
_OPF = {"opf": "http://www.idpf.org/2007/opf", "dc": "http://purl.org/dc/elements/1.1/"}
_XHTML_TYPES = frozenset({"application/xhtml+xml", "text/html"})
_TEXT = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
_H, _P = f"{{{_TEXT}}}h", f"{{{_TEXT}}}p"
_SPACE, _TAB, _BREAK = f"{{{_TEXT}}}s", f"{{{_TEXT}}}tab", f"{{{_TEXT}}}line-break"


def parse_epub(path: Path, limits: ParseLimits) -> ParsedDocument:
    """One page: the spine's XHTML documents in reading order, through the HTML parser."""
    budget = TextBudget(limits.max_text_chars)
    blocks: list[Block] = []
    with zipfile.ZipFile(path) as archive:
        opf_path = _member_xml(archive, "META-INF/container.xml").find(f".//{_CONTAINER}")
        if opf_path is None or not opf_path.get("full-path"):
            raise PermanentError(ReasonCode.CORRUPT, "EPUB container.xml names no package document")
        package_name = str(opf_path.get("full-path"))
        package = _member_xml(archive, package_name)
        base = posixpath.dirname(package_name)
        for name in _spine(package, base):
            markup = decode_html(_member(archive, name))
            blocks.extend(html_blocks(markup, budget)[1])
    title = (package.findtext(".//dc:title", namespaces=_OPF) or "").strip() or None
    return ParsedDocument(sniff.EPUB, (Page(None, tuple(blocks)),), title=title)


def parse_odt(path: Path, limits: ParseLimits) -> ParsedDocument:
    """One page: ``text:h`` as headings (by outline level) and ``text:p`` as paragraphs, in order."""
    budget = TextBudget(limits.max_text_chars)
    with zipfile.ZipFile(path) as archive:
        content = _member_xml(archive, "content.xml")
    blocks: list[Block] = []
    for element in content.iter(_H, _P):
        text = _odf_text(element).strip()
        if not text:
            continue
        level = 0
        if element.tag == _H:
            outline = element.get(f"{{{_TEXT}}}outline-level", "1")
            level = min(max(int(outline), 1), 6) if outline.isdigit() else 1
        blocks.append(Block(budget.take(text), level))
    return ParsedDocument(sniff.ODT, (Page(None, tuple(blocks)),))


def _spine(package: lxml.etree._Element, base: str) -> Iterator[str]:
    manifest = {
        item.get("id"): (item.get("href") or "", item.get("media-type") or "")
        for item in package.iterfind(".//opf:manifest/opf:item", _OPF)
    }
    for reference in package.iterfind(".//opf:spine/opf:itemref", _OPF):
        href, media_type = manifest.get(reference.get("idref"), ("", ""))
        if href and media_type in _XHTML_TYPES:
            yield posixpath.normpath(posixpath.join(base, unquote(href.split("#", 1)[0])))


def _odf_text(element: lxml.etree._Element) -> str:
    """An ODF paragraph's text; nested paragraphs (in frames, notes) are left to their own turn."""
    parts = [element.text or ""]
    for child in element:
        if child.tag == _SPACE:
            count = child.get(f"{{{_TEXT}}}c", "1")
            parts.append(" " * (min(int(count), 100) if count.isdigit() else 1))
        elif child.tag == _TAB:
            parts.append("\t")
        elif child.tag == _BREAK:
            parts.append("\n")
        elif child.tag not in (_H, _P):
            parts.append(_odf_text(child))
        parts.append(child.tail or "")
    return "".join(parts)


def _member(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        return archive.read(name)
    except KeyError as error:
        raise PermanentError(ReasonCode.CORRUPT, f"the package lacks {name}") from error


def _member_xml(archive: zipfile.ZipFile, name: str) -> lxml.etree._Element:
    return parse_xml_bytes(_member(archive, name))
