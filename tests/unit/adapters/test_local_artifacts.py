"""FolderArtifactStore specifics: the store never writes outside its root, leaves no debris, and
keeps its directory tree tidy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestion.adapters._folders import TEMP_SUFFIX
from ingestion.adapters.local_artifacts import FolderArtifactStore

SECRET = b"outside the store"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the store holding a sentinel file that must stay untouched."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret").write_bytes(SECRET)
    return directory


@pytest.fixture
def store(tmp_path: Path) -> FolderArtifactStore:
    return FolderArtifactStore(tmp_path / "artifacts")


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def test_a_planted_symlink_cannot_redirect_reads_or_writes(store: FolderArtifactStore, outside: Path) -> None:
    """A link inside the store to an outside directory makes keys through it invalid (ValueError)."""
    (store.root / "doc").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ValueError, match="outside the store"):
        store.put("doc/secret", b"overwritten")
    with pytest.raises(ValueError, match="outside the store"):
        store.get("doc/secret")
    with pytest.raises(ValueError, match="outside the store"):
        store.put("doc/new/file", b"planted")
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == SECRET
    assert list(store.list()) == []  # the link is not walked


@pytest.mark.parametrize("key", ["../outside/secret", "a/../../outside/secret", "/tmp/x"])
def test_escaping_keys_touch_nothing(store: FolderArtifactStore, outside: Path, key: str) -> None:
    """Keys that would climb out of the root are refused before any file-system call."""
    with pytest.raises(ValueError, match="invalid artifact key"):
        store.put(key, b"evil")
    assert (outside / "secret").read_bytes() == SECRET
    assert files_under(store.root) == []


def test_a_thousand_character_nested_key_works(store: FolderArtifactStore) -> None:
    """A 1,000-character key of many segments is stored, listed and read back."""
    key = "/".join(["s" * 99] * 10)[:999] + "z"
    assert len(key) == 1000
    store.put(key, b"deep")
    assert store.get(key) == b"deep"
    assert list(store.list()) == [key]


def test_an_over_long_segment_is_invalid(store: FolderArtifactStore) -> None:
    """A segment over 255 characters is refused with ValueError, not an OSError."""
    with pytest.raises(ValueError, match="invalid artifact key"):
        store.put("doc/" + "x" * 256, b"x")


def test_a_failed_stream_leaves_no_file_and_no_directory(store: FolderArtifactStore) -> None:
    """After a failing put_stream, neither the temp file nor the directories made for it remain."""

    def broken() -> Iterator[bytes]:
        yield b"partial"
        raise ConnectionError("source went away")

    with pytest.raises(ConnectionError):
        store.put_stream("doc/v-1/source", broken())
    assert list(store.root.iterdir()) == []


def test_a_failed_stream_keeps_sibling_directories(store: FolderArtifactStore) -> None:
    """Cleanup after a failure removes only directories that became empty."""
    store.put("doc/v-1/fetch.json", b"{}")

    def broken() -> Iterator[bytes]:
        raise ConnectionError("nothing at all")
        yield b""  # pragma: no cover - makes this a generator

    with pytest.raises(ConnectionError):
        store.put_stream("doc/v-1/source", broken())
    assert files_under(store.root) == ["doc/v-1/fetch.json"]


def test_delete_prefix_prunes_empty_directories(store: FolderArtifactStore) -> None:
    """Deleting every key of a document leaves no empty directory behind (the root stays)."""
    store.put("doc/v-1/a", b"1")
    store.put("doc/v-2/b", b"2")
    store.put("other/v-1/a", b"3")
    assert store.delete_prefix("doc/") == 2
    assert [p.name for p in store.root.iterdir()] == ["other"]
    assert store.delete_prefix("") == 1
    assert store.root.is_dir()
    assert list(store.root.iterdir()) == []


def test_temp_files_are_never_listed(store: FolderArtifactStore) -> None:
    """A temp file left by a crash mid-write is not a key."""
    store.put("doc/a", b"x")
    (store.root / "doc" / f".{'de' * 16}{TEMP_SUFFIX}").write_bytes(b"half")  # as write_atomically names it
    assert list(store.list()) == ["doc/a"]
    assert store.delete_prefix("doc/") == 1


def test_puts_leave_no_temp_files(store: FolderArtifactStore) -> None:
    """A successful put renames its temp file away: only the keys remain on disk."""
    for n in range(5):
        store.put(f"doc/{n}", b"x" * n)
    assert files_under(store.root) == [f"doc/{n}" for n in range(5)]


@pytest.mark.parametrize("prefix", ["../", "/abs", "a//", "a/../", "a b"])
def test_invalid_prefixes_are_refused(store: FolderArtifactStore, prefix: str) -> None:
    """A listing or deletion prefix must be the start of a valid key."""
    with pytest.raises(ValueError, match="prefix"):
        list(store.list(prefix))
    with pytest.raises(ValueError, match="prefix"):
        store.delete_prefix(prefix)


def test_values_survive_reopening(tmp_path: Path) -> None:
    """A new store over the same folder sees what the previous one wrote."""
    FolderArtifactStore(tmp_path / "a").put("doc/x", b"kept")
    assert FolderArtifactStore(tmp_path / "a").get("doc/x") == b"kept"
