"""The embedded ``BlobSource``: a local folder whose regular files are the blobs.

A blob's name is its path relative to the root, with "/" separators. Every name is validated before
the file system is touched, and resolved (symlinks included) to prove it stays inside the root: a
name never reads or writes anything outside it. The ETag is derived from what changes when a file
is rewritten (mtime in ns, size, inode), so an overwrite, in place or by rename, changes it.

A page's continuation token is the last name it returned (see ``_token_of``); the next page is the
walk's names after it, so a token stays valid whatever is created or deleted meanwhile.
``walk_files`` skips what sorts before the token, so a page opens only the directories on the way to it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import logging
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ingestion.adapters._folders import classify_os_error, walk_files, write_atomically
from ingestion.errors import PermanentError, ReasonCode, Superseded, TransientError
from ingestion.model import DocumentVersion
from ingestion.ports import BlobInfo, BlobPage

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
        return self._blobs(prefix)

    def page(self, continuation: str | None = None, limit: int = 1000) -> BlobPage:
        if limit <= 0:
            raise ValueError("limit must be positive")
        after = None if continuation is None else _name_of(continuation)
        # One blob more than asked for tells whether another page exists: the last page says so
        # itself (token None) instead of sending the caller back for an empty one.
        found = list(itertools.islice(self._blobs("", after), limit + 1))
        if len(found) <= limit:
            return BlobPage(found, None)
        return BlobPage(found[:limit], _token_of(found[limit - 1].path))

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

    def _blobs(self, prefix: str, after: str | None = None) -> Iterator[BlobInfo]:
        """Every blob under ``prefix`` whose name sorts after ``after``, in name order."""
        for name, entry in walk_files(self._root, prefix, after):
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


def _token_of(name: str) -> str:
    """The continuation token after blob ``name``: the name itself, or, for a name that is not valid
    Unicode (an undecodable file name, surrogate-escaped), its bytes in base64 after a "/" (no blob
    name starts with one). Either way a token can be stored as text anywhere (JSON, a database)."""
    if _is_unicode(name):
        return name
    return "/" + base64.urlsafe_b64encode(os.fsencode(name)).decode("ascii")


def _name_of(token: str) -> str:
    """The name a continuation token was made from (``ValueError`` for a string no page returned)."""
    if not token.startswith("/"):
        return token
    try:
        raw = base64.b64decode(token[1:].encode("ascii"), altchars=b"-_", validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raw = b""
    if not raw:
        raise ValueError(f"not a continuation token of a folder: {token!r}")
    return os.fsdecode(raw)


def _etag(info: os.stat_result) -> str:
    identity = f"{info.st_mtime_ns}:{info.st_size}:{info.st_ino}".encode()
    return '"' + hashlib.blake2b(identity, digest_size=8).hexdigest() + '"'


def _version(info: os.stat_result) -> DocumentVersion:
    return DocumentVersion(
        etag=_etag(info),
        size=info.st_size,
        last_modified=_EPOCH + timedelta(microseconds=info.st_mtime_ns // 1000),
    )
