"""The embedded ``BlobSource``: a local folder whose regular files are the blobs.

A blob's name is its path relative to the root, with "/" separators. Every name is validated before
the file system is touched, and resolved (symlinks included) to prove it stays inside the root: a
name never reads or writes anything outside it. The ETag is derived from what changes when a file
is rewritten (mtime in ns, size, inode), so an overwrite, in place or by rename, changes it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ingestion.adapters._folders import classify_os_error, walk_files, write_atomically
from ingestion.errors import PermanentError, ReasonCode, Superseded, TransientError
from ingestion.model import DocumentVersion
from ingestion.ports import BlobInfo

log = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_COMPONENT_BYTES = 255  # NAME_MAX of ext4, xfs, btrfs, APFS, NTFS (in UTF-16 units there)


class FolderBlobSource:
    """Blobs as files under ``root`` (created if missing)."""

    def __init__(self, root: Path, container: str = "uploads") -> None:
        root.mkdir(parents=True, exist_ok=True)
        self._root = Path(os.path.realpath(root))
        self._container = container

    @property
    def container(self) -> str:
        return self._container

    @property
    def root(self) -> Path:
        return self._root

    # ------------------------------------------------------------------ the port

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        for name, entry in walk_files(self._root, prefix):
            try:
                if entry.is_symlink() and not self._inside(Path(os.path.realpath(entry.path))):
                    continue  # a link leading out of the root is not one of our blobs
                info = os.stat(entry.path)
            except (FileNotFoundError, NotADirectoryError):
                continue  # deleted (or a dangling link) while we listed: not a blob any more
            except OSError as error:
                problem = classify_os_error(error, name)
                if isinstance(problem, TransientError):
                    raise problem from error  # an incomplete listing must not pass for a complete one
                # A link looping onto itself, a name too long to stat: no content, nothing to ingest.
                log.warning("not a blob: %s", problem.message)
                continue
            if stat.S_ISREG(info.st_mode):
                yield BlobInfo(name, _version(info))

    def properties(self, path: str) -> BlobInfo:
        return BlobInfo(path, _version(self._stat_regular(self._resolve(path), path)))

    def read(self, path: str, etag: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        real = self._resolve(path)
        current = _etag(self._stat_regular(real, path))
        if current != etag:
            raise Superseded(f"{path}: version {etag} replaced by {current}")
        return self._stream(path, real, etag, chunk_size)

    # ------------------------------------------------------------------ for tests and the devhost

    def put(self, path: str, data: bytes, last_modified: datetime | None = None) -> BlobInfo:
        """Write (or overwrite) a blob atomically, as an upload would; returns its new version."""
        # Integer arithmetic: a float timestamp in ns loses precision (2**53 < 1.7e18).
        modified_ns = None if last_modified is None else (last_modified - _EPOCH) // timedelta(microseconds=1) * 1000
        write_atomically(self._resolve(path), [data], path, modified_ns=modified_ns)
        return self.properties(path)

    def delete(self, path: str) -> bool:
        """Remove a blob; ``False`` when there was none."""
        real = self._resolve(path)
        try:
            real.unlink()
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as error:
            raise classify_os_error(error, path) from error
        return True

    # ------------------------------------------------------------------ internals

    def _inside(self, real: Path) -> bool:
        return real.is_relative_to(self._root)

    def _resolve(self, name: str) -> Path:
        """The real path of blob ``name``, or ``PermanentError(INVALID_NAME)`` saying why not."""
        problem = name_problem(name)
        if problem is None:
            real = Path(os.path.realpath(self._root / name))
            if not self._inside(real) or real == self._root:
                problem = "resolves outside the root (through a symlink?)"
        if problem is not None:
            raise PermanentError(ReasonCode.INVALID_NAME, f"{name!r}: {problem}")
        return real

    def _stat_regular(self, real: Path, name: str) -> os.stat_result:
        try:
            info = os.stat(real)
        except OSError as error:
            raise classify_os_error(error, name) from error
        if not stat.S_ISREG(info.st_mode):
            raise PermanentError(ReasonCode.NOT_FOUND, f"{name}: not a file")
        return info

    def _stream(self, name: str, real: Path, etag: str, chunk_size: int) -> Iterator[bytes]:
        # Opened lazily, inside the generator, so an unstarted generator holds no file.
        # O_NOFOLLOW: the path was resolved already; a symlink appearing now is a swap, not a blob.
        # O_NONBLOCK: a FIFO swapped in must not hang the worker (fstat below refuses it).
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(real, flags)
        except OSError as error:
            raise classify_os_error(error, name) from error
        with os.fdopen(fd, "rb", buffering=0) as file:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode) or _etag(opened) != etag:
                raise Superseded(f"{name}: changed before it was opened")
            try:
                pending = file.read(chunk_size)
                while True:
                    following = file.read(chunk_size)
                    if not following:
                        break
                    yield pending
                    pending = following
                # Check before the last chunk leaves: a consumer never sees a torn read complete.
                after = _etag(os.fstat(fd)), _etag(os.stat(real))
            except FileNotFoundError:
                raise Superseded(f"{name}: deleted while it was read") from None
            except OSError as error:
                raise classify_os_error(error, name) from error
            if after != (etag, etag):
                raise Superseded(f"{name}: overwritten while it was read")
            if pending:
                yield pending


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a blob name on a file system, or ``None`` when it can."""
    segments = name.split("/")
    checks = (
        (not name, "empty"),
        (name.startswith("/"), "absolute"),
        ("\\" in name or "\x00" in name, "contains a backslash or NUL"),
        (not _is_unicode(name), "not valid Unicode (undecodable bytes in the file name?)"),
        (any(s in ("", ".", "..") for s in segments), "has an empty, '.' or '..' segment"),
        (
            any(len(s.encode("utf-8", "surrogatepass")) > _MAX_COMPONENT_BYTES for s in segments),
            f"a path segment is longer than {_MAX_COMPONENT_BYTES} bytes",
        ),
    )
    return next((why for failed, why in checks if failed), None)


def _is_unicode(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _etag(info: os.stat_result) -> str:
    identity = f"{info.st_mtime_ns}:{info.st_size}:{info.st_ino}".encode()
    return '"' + hashlib.blake2b(identity, digest_size=8).hexdigest() + '"'


def _version(info: os.stat_result) -> DocumentVersion:
    return DocumentVersion(
        etag=_etag(info),
        size=info.st_size,
        last_modified=_EPOCH + timedelta(microseconds=info.st_mtime_ns // 1000),
    )
