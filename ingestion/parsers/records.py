"""JSON and NDJSON: values flattened to "key.path: value" lines, grouped into blocks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ingestion import sniff
from ingestion.config import ParseLimits
from ingestion.errors import PermanentError, ReasonCode
from ingestion.model import Block, Page, ParsedDocument
from ingestion.parsers.base import TextBudget, row_blocks
from ingestion.parsers.text import read_text


def parse_json(path: Path, limits: ParseLimits) -> ParsedDocument:
    """A top-level array gives a block per element; an object a block per top-level key."""
    try:
        value = json.loads(read_text(path, limits))
    except RecursionError as error:
        raise PermanentError(ReasonCode.UNSUPPORTED_TYPE, "JSON nested too deeply to read") from error
    budget = TextBudget(limits.max_text_chars)
    groups: Iterator[tuple[str, object]]
    if isinstance(value, list):
        groups = ((f"[{index}]", item) for index, item in enumerate(value))
    elif isinstance(value, dict):
        groups = ((str(key), item) for key, item in value.items())
    else:
        groups = iter([("", value)])
    blocks = [block for prefix, item in groups for block in row_blocks(flatten(item, prefix), budget)]
    return ParsedDocument(sniff.JSON, (Page(None, tuple(blocks)),))


def parse_ndjson(path: Path, limits: ParseLimits) -> ParsedDocument:
    """One block per record (line)."""
    budget = TextBudget(limits.max_text_chars)
    blocks: list[Block] = []
    for line in read_text(path, limits).split("\n"):
        if line.strip():
            blocks.extend(row_blocks(flatten(json.loads(line)), budget))
    return ParsedDocument(sniff.NDJSON, (Page(None, tuple(blocks)),))


def flatten(value: object, prefix: str = "") -> Iterator[str]:
    """``path: value`` for every string, number and boolean in ``value`` (nulls and empties skipped).

    Iterative, so deeply nested input cannot exhaust the Python stack.
    """
    stack: list[tuple[str, object]] = [(prefix, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            children = [(f"{path}.{key}" if path else str(key), child) for key, child in item.items()]
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend(reversed([(f"{path}[{index}]", child) for index, child in enumerate(item)]))
        elif isinstance(item, bool):
            yield _line(path, "true" if item else "false")
        elif isinstance(item, int | float):
            yield _line(path, repr(item))
        elif isinstance(item, str) and item.strip():
            yield _line(path, item.strip())


def _line(path: str, value: str) -> str:
    return f"{path}: {value}" if path else value
