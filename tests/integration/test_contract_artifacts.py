"""ArtifactStore contract: atomic puts, streams, prefix listing and deletion, key rules."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from ingestion.ports import ArtifactStore


class Boom(RuntimeError):
    """Raised by a stream that fails halfway."""


def failing_stream(pieces: int) -> Iterator[bytes]:
    for _ in range(pieces):
        yield b"x" * 1000
    raise Boom("the source broke")


def test_put_then_get_round_trips(artifacts: ArtifactStore) -> None:
    """get() returns exactly what put() stored; exists() agrees."""
    artifacts.put("doc/v-1/fetch.json", b'{"ok": true}')
    assert artifacts.get("doc/v-1/fetch.json") == b'{"ok": true}'
    assert artifacts.exists("doc/v-1/fetch.json")


def test_missing_key_reads_as_none(artifacts: ArtifactStore) -> None:
    """get() of a key never written is None, exists() is False, open() raises KeyError."""
    assert artifacts.get("doc/none") is None
    assert not artifacts.exists("doc/none")
    with pytest.raises(KeyError):
        artifacts.open("doc/none")


def test_a_prefix_is_not_a_key(artifacts: ArtifactStore) -> None:
    """A key's parent "directory" holds no value of its own."""
    artifacts.put("doc/v-1/source", b"x")
    assert artifacts.get("doc/v-1") is None
    assert not artifacts.exists("doc")


def test_put_overwrites(artifacts: ArtifactStore) -> None:
    """A second put() replaces the value."""
    artifacts.put("k", b"one")
    artifacts.put("k", b"two")
    assert artifacts.get("k") == b"two"


def test_put_stream_returns_the_size_and_open_streams_it_back(artifacts: ArtifactStore) -> None:
    """put_stream() stores the concatenation and returns its length; open() streams it back."""
    pieces = [bytes([i]) * 300_000 for i in range(10)]
    assert artifacts.put_stream("doc/v-1/source", iter(pieces)) == 3_000_000
    assert b"".join(artifacts.open("doc/v-1/source")) == b"".join(pieces)
    assert all(len(chunk) <= 1 << 20 for chunk in artifacts.open("doc/v-1/source"))


def test_empty_value_is_stored(artifacts: ArtifactStore) -> None:
    """An empty value is a value: get() gives b"", not None."""
    assert artifacts.put_stream("empty", iter([])) == 0
    assert artifacts.get("empty") == b""
    assert artifacts.exists("empty")


def test_failing_stream_stores_nothing_and_reraises(artifacts: ArtifactStore) -> None:
    """When the stream raises, its error propagates and the key stays absent."""
    with pytest.raises(Boom):
        artifacts.put_stream("doc/v-1/source", failing_stream(5))
    assert artifacts.get("doc/v-1/source") is None
    assert list(artifacts.list()) == []


def test_failing_stream_keeps_the_previous_value(artifacts: ArtifactStore) -> None:
    """A failed overwrite leaves the old value whole (atomicity, not just cleanup)."""
    artifacts.put("doc/v-1/source", b"the old value")
    with pytest.raises(Boom):
        artifacts.put_stream("doc/v-1/source", failing_stream(3))
    assert artifacts.get("doc/v-1/source") == b"the old value"


def test_readers_never_see_a_partial_value(artifacts: ArtifactStore) -> None:
    """While one thread keeps overwriting a key, every read returns one whole value."""
    values = [bytes([65 + i]) * 1_000_000 for i in range(3)]
    artifacts.put("hot", values[0])
    stop = threading.Event()

    def writer() -> None:
        for round_ in range(30):
            value = values[round_ % 3]
            artifacts.put_stream("hot", iter([value[:500_000], value[500_000:]]))
        stop.set()

    thread = threading.Thread(target=writer)
    thread.start()
    torn = 0
    while not stop.is_set():
        torn += artifacts.get("hot") not in values
    thread.join()
    assert torn == 0


def test_list_is_sorted_and_filtered_by_prefix(artifacts: ArtifactStore) -> None:
    """list() yields keys under the prefix in string order (prefixes may end mid-segment)."""
    keys = ["b/1", "a/v-2/x", "a/v-1/y", "a/v-1/x", "a-b", "a/v-10/z"]
    for key in keys:
        artifacts.put(key, b"x")
    assert list(artifacts.list()) == sorted(keys)
    assert list(artifacts.list("a/")) == ["a/v-1/x", "a/v-1/y", "a/v-10/z", "a/v-2/x"]
    assert list(artifacts.list("a/v-1")) == ["a/v-1/x", "a/v-1/y", "a/v-10/z"]
    assert list(artifacts.list("a/v-1/")) == ["a/v-1/x", "a/v-1/y"]


def test_delete_prefix_removes_exactly_the_keys_under_it(artifacts: ArtifactStore) -> None:
    """delete_prefix() deletes the keys under the prefix, returns how many, and touches no other."""
    for key in ["doc1/v-1/a", "doc1/v-1/b", "doc1/v-2/a", "doc10/v-1/a", "doc2/v-1/a"]:
        artifacts.put(key, b"x")
    assert artifacts.delete_prefix("doc1/v-1/") == 2
    assert list(artifacts.list()) == ["doc1/v-2/a", "doc10/v-1/a", "doc2/v-1/a"]
    assert artifacts.delete_prefix("doc1/") == 1
    assert artifacts.delete_prefix("doc1/") == 0
    assert list(artifacts.list()) == ["doc10/v-1/a", "doc2/v-1/a"]
    artifacts.put("doc1/v-1/a", b"again")  # the pruned "directories" can be used again
    assert artifacts.get("doc1/v-1/a") == b"again"


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/abs",
        "a/../b",
        "..",
        ".",
        "a/./b",
        "a//b",
        "a/",
        "with space",
        "ünicode",
        "a\\b",
        "a\x00b",
        "a~b",
        "x" * 1025,
    ],
)
def test_invalid_keys_are_refused(artifacts: ArtifactStore, key: str) -> None:
    """Keys outside the safe alphabet, or with empty, "." or ".." segments, raise ValueError."""
    with pytest.raises(ValueError, match="invalid artifact key"):
        artifacts.put(key, b"x")
    with pytest.raises(ValueError, match="invalid artifact key"):
        artifacts.get(key)
    assert list(artifacts.list()) == []


def test_keys_with_every_allowed_character_work(artifacts: ArtifactStore) -> None:
    """Letters, digits, "_", ".", "=" and "-" are fine, including a segment starting with a dot."""
    key = "Doc_1/v=2.0-final/.hidden/part.json"
    artifacts.put(key, b"ok")
    assert artifacts.get(key) == b"ok"
    assert list(artifacts.list()) == [key]
