"""The embedded ``ArtifactStore``: checkpoints as files under a folder, written atomically.

Keys are built by our own code from hashes (``<doc_id>/v-<version>/<stage>``), so a key outside the
safe alphabet is a bug and raises ``ValueError`` rather than an ingestion error. Every write goes to
a temp file in the target's directory, is fsynced, then renamed over the target: a reader (or a
crash) sees the old content or the new, never a part.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

from ingestion.adapters._folders import classify_os_error, prune_empty_directories, walk_files, write_atomically

_KEY = re.compile(r"[A-Za-z0-9_.=-]+(/[A-Za-z0-9_.=-]+)*")
_PREFIX = re.compile(r"[A-Za-z0-9_.=/-]*")
_MAX_KEY_CHARS = 1024  # Azure's blob-name limit: the Azure artifact store takes the same keys
_MAX_SEGMENT_BYTES = 255  # a file name's limit on common file systems
_READ_CHUNK = 1 << 20


def validate_key(key: str) -> str:
    """``key`` itself when it is a valid artifact key; ``ValueError`` otherwise."""
    if not _KEY.fullmatch(key) or len(key) > _MAX_KEY_CHARS:
        raise ValueError(f"invalid artifact key {key!r}")
    for segment in key.split("/"):
        if segment in (".", "..") or len(segment) > _MAX_SEGMENT_BYTES:
            raise ValueError(f"invalid artifact key {key!r}: segment {segment[:40]!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """``prefix`` when it can start a key (its last segment may be partial); ``ValueError`` otherwise."""
    if not _PREFIX.fullmatch(prefix) or prefix.startswith("/") or len(prefix) > _MAX_KEY_CHARS:
        raise ValueError(f"invalid artifact key prefix {prefix!r}")
    if any(segment in ("", ".", "..") for segment in prefix.split("/")[:-1]):
        raise ValueError(f"invalid artifact key prefix {prefix!r}")
    return prefix


class FolderArtifactStore:
    """Artifacts as files under ``root`` (created if missing)."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self._root = Path(os.path.realpath(root))

    @property
    def root(self) -> Path:
        return self._root

    def put(self, key: str, data: bytes) -> None:
        self.put_stream(key, [data])

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        target = self._path(key)
        try:
            return write_atomically(target, chunks, key)
        except BaseException:
            # Nothing of a failed write stays behind, not even the directories made for it.
            prune_empty_directories(target.parent, self._root)
            raise

    def get(self, key: str) -> bytes | None:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as error:
            raise classify_os_error(error, key) from error

    def open(self, key: str) -> Iterator[bytes]:
        path = self._path(key)
        if not self._is_file(path, key):
            raise KeyError(key)
        return self._stream(path, key)

    def exists(self, key: str) -> bool:
        return self._is_file(self._path(key), key)

    def delete_prefix(self, prefix: str) -> int:
        count = 0
        for key in list(self.list(prefix)):  # listed first: deleting while walking skips entries
            path = self._path(key)
            try:
                path.unlink()
            except FileNotFoundError:
                continue  # a concurrent delete got there first
            except OSError as error:
                raise classify_os_error(error, key) from error
            count += 1
            prune_empty_directories(path.parent, self._root)
        return count

    def list(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        for key, entry in walk_files(self._root, prefix):
            if entry.is_file(follow_symlinks=False):
                yield key

    # ------------------------------------------------------------------ internals

    def _path(self, key: str) -> Path:
        path = self._root / validate_key(key)
        # Only our code writes here, but a symlink planted inside the store must not let a write
        # land outside it.
        if not Path(os.path.realpath(path)).is_relative_to(self._root):
            raise ValueError(f"artifact key {key!r} resolves outside the store")
        return path

    def _is_file(self, path: Path, key: str) -> bool:
        try:
            return stat.S_ISREG(os.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as error:
            raise classify_os_error(error, key) from error

    def _stream(self, path: Path, key: str) -> Iterator[bytes]:
        try:
            file = path.open("rb")
        except (FileNotFoundError, NotADirectoryError):
            raise KeyError(key) from None  # deleted between open() and the first read
        except OSError as error:
            raise classify_os_error(error, key) from error
        with file:
            # The open file keeps this version: a concurrent put renames a new file in, it never
            # rewrites this one.
            while True:
                try:
                    chunk = file.read(_READ_CHUNK)
                except OSError as error:
                    raise classify_os_error(error, key) from error
                if not chunk:
                    return
                yield chunk
