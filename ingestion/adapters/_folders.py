"""Building blocks of the folder adapters: walking a folder in blob-name order, atomic writes,
and translating ``OSError`` into the error tree."""

from __future__ import annotations

import errno
import heapq
import os
import re
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from io import BufferedWriter
from pathlib import Path

from ingestion.errors import IngestionError, PermanentError, ReasonCode, TransientError

# Temporary files of atomic writes end with this. "~" is not allowed in artifact keys, so no key
# can collide with it; folder listings skip such files (a reader never sees a half-written file).
TEMP_SUFFIX = "~partial"
# Exactly what ``write_atomically`` creates; a user's own "report~partial" is an ordinary file.
_TEMP_NAME = re.compile(r"\.[0-9a-f]{32}" + re.escape(TEMP_SUFFIX))


def classify_os_error(error: OSError, subject: str) -> IngestionError:
    """The error tree's view of an ``OSError`` met while handling ``subject``."""
    code = errno.errorcode.get(error.errno or 0, "?")
    if isinstance(error, FileNotFoundError | NotADirectoryError):
        return PermanentError(ReasonCode.NOT_FOUND, f"{subject}: not found")
    if error.errno in (errno.ENAMETOOLONG, errno.ELOOP):
        return PermanentError(ReasonCode.INVALID_NAME, f"{subject}: {code} ({error.strerror})")
    # Everything else (EIO, EMFILE, ENOSPC, EACCES...) may be fixed by time or by an operator.
    return TransientError(f"{subject}: errno {error.errno} {code} ({error.strerror})", code=f"os_{code.lower()}")


def walk_files(root: Path, prefix: str = "", after: str | None = None) -> Iterator[tuple[str, os.DirEntry[str]]]:
    """Every non-directory entry under ``root`` whose name starts with ``prefix`` (and sorts after
    ``after``, when given: a page of a listing resumes there), in name order.

    Names are relative paths with "/" separators. Sorting each directory by ``name`` for files and
    ``name + "/"`` for directories makes a depth-first walk yield names in global string order (so
    "a-b" comes before "a/c", as in a blob listing), lazily. Directories that cannot hold a match
    are never opened; symlinks are returned as entries, never followed (no loops, no escapes).
    Nor are directories whose every name sorts before ``after`` ("d/" below ``after`` without being
    its prefix), so a resumed listing costs the directories on the way to ``after``, not all before.
    """

    def visit(directory: str, base: str) -> Iterator[tuple[str, os.DirEntry[str]]]:
        try:
            with os.scandir(directory) as scan:
                entries = list(scan)
        except (FileNotFoundError, NotADirectoryError):
            return  # removed while we walked: it holds nothing any more
        except OSError as error:
            raise classify_os_error(error, base or "/") from error
        keyed: list[tuple[str, bool, os.DirEntry[str]]] = []
        for entry in entries:
            is_dir = entry.is_dir(follow_symlinks=False)
            name = f"{base}{entry.name}/" if is_dir else base + entry.name
            if after is not None and name <= after and not (is_dir and after.startswith(name)):
                continue  # before the resume point: listed on an earlier page
            if name.startswith(prefix) or (is_dir and prefix.startswith(name)):
                keyed.append((name, is_dir, entry))
        # A heap, not a sort: a page of a listing takes the first few names of a large directory
        # in O(n + k log n) instead of ordering all n (names are unique, so entries never compare).
        heapq.heapify(keyed)
        while keyed:
            name, is_dir, entry = heapq.heappop(keyed)
            if is_dir:
                yield from visit(entry.path, name)
            elif not _TEMP_NAME.fullmatch(entry.name):
                yield name, entry

    return visit(str(root), "")


def write_atomically(target: Path, chunks: Iterable[bytes], subject: str, *, modified_ns: int | None = None) -> int:
    """Write ``chunks`` to a temp file beside ``target``, fsync, then rename it over ``target``.

    Readers see the old file or the new one, never a part. When ``chunks`` raises, the temp file is
    removed and the error propagates unchanged; our own ``OSError``s become ingestion errors.
    ``modified_ns`` sets the file's mtime before the rename, so the new file never shows another.
    """
    temp = target.parent / f".{uuid.uuid4().hex}{TEMP_SUFFIX}"
    with os_errors(subject):
        file = _create_exclusive(target.parent, temp)
    size = 0
    try:
        with file:
            for chunk in chunks:  # the source's own errors pass through untouched
                with os_errors(subject):
                    file.write(chunk)
                size += len(chunk)
            with os_errors(subject):
                file.flush()
                os.fsync(file.fileno())
        with os_errors(subject):
            if modified_ns is not None:
                os.utime(temp, ns=(modified_ns, modified_ns))
            os.replace(temp, target)
    except BaseException as error:
        try:
            temp.unlink(missing_ok=True)
        except OSError as cleanup:
            error.add_note(f"the temp file {temp} could not be removed: {cleanup}")
        raise
    with os_errors(subject):
        fsync_directory(target.parent)  # the rename survives a crash only once its directory is synced
    return size


@contextmanager
def os_errors(subject: str) -> Iterator[None]:
    """Translate ``OSError`` into the error tree (see ``classify_os_error``)."""
    try:
        yield
    except OSError as error:
        raise classify_os_error(error, subject) from error


def _create_exclusive(directory: Path, temp: Path) -> BufferedWriter:
    # A concurrent prune (delete_prefix, a failed put) may remove an empty directory between our
    # mkdir and our open: create it again a few times before giving up.
    for _ in range(4):
        directory.mkdir(parents=True, exist_ok=True)
        try:
            return open(temp, "xb")  # the caller closes it in a with block
        except FileNotFoundError:
            continue
    return open(temp, "xb")  # last try; its error propagates


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def prune_empty_directories(start: Path, root: Path) -> None:
    """Remove ``start`` and its parents while they are empty, stopping at ``root`` (kept)."""
    directory = start
    while directory != root and directory.is_relative_to(root):
        try:
            directory.rmdir()
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                return  # still in use (a file arrived) or already gone: leave it
            raise classify_os_error(error, str(directory)) from error
        directory = directory.parent


# --------------------------------------------------------------------------- SQLite
