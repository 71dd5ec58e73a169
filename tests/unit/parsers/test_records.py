"""JSON and NDJSON: values flattened to "key.path: value" lines."""

from __future__ import annotations

import json
from pathlib import Path

from ingestion.errors import ReasonCode
from ingestion.model import Block
from tests.unit.parsers.conftest import Extract, refusal


def test_json_is_flattened_to_key_paths(tmp_path: Path, parse: Extract) -> None:
    """Strings, numbers and booleans keep their path; nulls and empty strings are skipped."""
    path = tmp_path / "order.json"
    path.write_text(json.dumps({"id": 7, "customer": {"name": "Ana", "vip": True}, "items": [{"sku": "A1"}, "gift"]}))
    document = parse(path)
    assert list(document.pages[0].blocks) == [
        Block("id: 7"),
        Block("customer.name: Ana\ncustomer.vip: true"),
        Block("items[0].sku: A1\nitems[1]: gift"),
    ]


def test_a_top_level_array_gives_a_block_per_element(tmp_path: Path, parse: Extract) -> None:
    """Each element of a top-level array is its own block."""
    path = tmp_path / "list.json"
    path.write_text(json.dumps([{"text": "first"}, {"text": "second", "note": None}]))
    assert [block.text for block in parse(path).pages[0].blocks] == ["[0].text: first", "[1].text: second"]


def test_ndjson_gives_one_block_per_record(tmp_path: Path, parse: Extract) -> None:
    """Each line is a record, flattened on its own."""
    path = tmp_path / "events.ndjson"
    path.write_text('{"event": "login", "ok": true}\n\n{"event": "logout", "after": 3.5}\n')
    assert [block.text for block in parse(path).pages[0].blocks] == [
        "event: login\nok: true",
        "event: logout\nafter: 3.5",
    ]


def test_json_without_text_values_is_empty(tmp_path: Path, parse: Extract) -> None:
    """Only nulls and empty containers: empty."""
    path = tmp_path / "nothing.json"
    path.write_text('{"a": null, "b": [], "c": {}}')
    reason, _ = refusal(lambda: parse(path))
    assert reason is ReasonCode.EMPTY


def test_a_lone_surrogate_escape_becomes_a_replacement_character(tmp_path: Path, parse: Extract) -> None:
    r"""JSON's "\ud800" (valid JSON, not valid Unicode) is indexed as U+FFFD, so the text encodes as UTF-8."""
    path = tmp_path / "report.json"
    path.write_text('{"title": "Report \\ud800 draft", "emoji": "\\ud83d\\ude00", "body": "Numbers improved"}')
    document = parse(path)
    assert [block.text for block in document.pages[0].blocks] == [
        "title: Report \ufffd draft",
        "emoji: \U0001f600",
        "body: Numbers improved",
    ]
    assert document.text.encode("utf-8")
