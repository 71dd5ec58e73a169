"""FolderBlobSource specifics: path safety (nothing outside the root is read, listed or written),
file-system edge cases, and how OSErrors are classified."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from ingestion.adapters._folders import TEMP_SUFFIX, classify_os_error
from ingestion.adapters.local_blob import FolderBlobSource
from ingestion.errors import PermanentError, ReasonCode, Superseded, TransientError

SECRET = b"top secret, outside the root"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the root holding a sentinel file that must stay untouched."""
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "secret.txt").write_bytes(SECRET)
    return directory


@pytest.fixture
def source(tmp_path: Path) -> FolderBlobSource:
    return FolderBlobSource(tmp_path / "root")


def assert_untouched(outside: Path) -> None:
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_bytes() == SECRET


BAD_NAMES = [
    "",
    "/etc/passwd",
    "../outside/secret.txt",
    "a/../../outside/secret.txt",
    "a/./b.txt",
    "./a.txt",
    "a//b.txt",
    "a/",
    "..",
    "a\\b.txt",
    "..\\outside\\secret.txt",
    "nul\x00byte.txt",
    "x" * 256,
    "dir/" + "é" * 128,  # 256 bytes in UTF-8, though only 128 characters
    "bad-\udcff-bytes.txt",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_names_are_refused_before_touching_the_disk(source: FolderBlobSource, outside: Path, name: str) -> None:
    """Empty, absolute, backslash, NUL, "."/".." or empty segments, over-long or non-Unicode names: INVALID_NAME."""
    for attempt in (
        lambda: source.properties(name),
        lambda: b"".join(source.read(name, '"x"')),
        lambda: source.put(name, b"evil"),
        lambda: source.delete(name),
    ):
        with pytest.raises(PermanentError) as caught:
            attempt()
        assert caught.value.reason is ReasonCode.INVALID_NAME
    assert list(source.root.rglob("*")) == []
    assert_untouched(outside)


def test_a_symlinked_file_leading_outside_is_not_listed_or_read(source: FolderBlobSource, outside: Path) -> None:
    """A link inside the root to a file outside it is invisible to list() and refused by name."""
    (source.root / "leak.txt").symlink_to(outside / "secret.txt")
    source.put("real.txt", b"mine")
    assert [info.path for info in source.list()] == ["real.txt"]
    for attempt in (lambda: source.properties("leak.txt"), lambda: b"".join(source.read("leak.txt", '"x"'))):
        with pytest.raises(PermanentError) as caught:
            attempt()
        assert caught.value.reason is ReasonCode.INVALID_NAME
    assert_untouched(outside)


def test_a_symlinked_directory_leading_outside_cannot_be_written_through(
    source: FolderBlobSource, outside: Path
) -> None:
    """A link to an outside directory is neither walked, read through, nor written through."""
    (source.root / "door").symlink_to(outside, target_is_directory=True)
    assert list(source.list()) == []
    with pytest.raises(PermanentError) as caught:
        source.put("door/planted.txt", b"evil")
    assert caught.value.reason is ReasonCode.INVALID_NAME
    with pytest.raises(PermanentError) as caught:
        source.properties("door/secret.txt")
    assert caught.value.reason is ReasonCode.INVALID_NAME
    assert_untouched(outside)


def test_a_symlink_to_the_root_itself_is_not_a_blob(source: FolderBlobSource) -> None:
    """A name resolving to the root directory is refused, not treated as a file."""
    (source.root / "self").symlink_to(source.root, target_is_directory=True)
    with pytest.raises(PermanentError) as caught:
        source.properties("self")
    assert caught.value.reason is ReasonCode.INVALID_NAME


def test_a_symlink_to_a_file_inside_the_root_is_a_blob(source: FolderBlobSource) -> None:
    """Links that stay inside the root are followed: listed and readable under the link's name."""
    info = source.put("target.txt", b"shared")
    (source.root / "alias.txt").symlink_to(source.root / "target.txt")
    assert [i.path for i in source.list()] == ["alias.txt", "target.txt"]
    assert b"".join(source.read("alias.txt", info.version.etag)) == b"shared"


def test_a_thousand_character_nested_name_works(source: FolderBlobSource) -> None:
    """A 1,000-character name made of many directories is written, listed and read."""
    name = "/".join(["d" * 49] * 19) + "/" + "f" * 49  # 20 segments of 49 chars + 19 slashes = 999 chars
    name += "x"
    assert len(name) == 1000
    info = source.put(name, b"deep")
    assert [i.path for i in source.list()] == [name]
    assert b"".join(source.read(name, info.version.etag)) == b"deep"


def test_a_255_byte_component_is_accepted(source: FolderBlobSource) -> None:
    """The file-system limit itself (255 bytes per component) is fine."""
    name = "é" * 127 + "x"  # 255 bytes
    info = source.put(name, b"ok")
    assert source.properties(name) == info


def test_an_over_long_total_path_is_invalid_not_an_oserror(source: FolderBlobSource) -> None:
    """A name beyond the OS path limit (4,096 bytes) reports INVALID_NAME, not a raw OSError."""
    name = "/".join(["d" * 200] * 25)
    with pytest.raises(PermanentError) as caught:
        source.put(name, b"x")
    assert caught.value.reason is ReasonCode.INVALID_NAME


def test_temp_files_of_atomic_writes_are_not_listed(source: FolderBlobSource) -> None:
    """Our own temp files are uploads in progress, not blobs; a user's file with that suffix is one."""
    (source.root / f".{'ab' * 16}{TEMP_SUFFIX}").write_bytes(b"half")
    (source.root / f"report{TEMP_SUFFIX}").write_bytes(b"a user's file")
    source.put("done.txt", b"whole")
    assert [i.path for i in source.list()] == ["done.txt", f"report{TEMP_SUFFIX}"]


def test_a_looping_symlink_does_not_stop_the_listing(source: FolderBlobSource) -> None:
    """A link that points at itself has no content: it is skipped, and every real file is still listed."""
    source.put("a.txt", b"a")
    os.symlink("loop", source.root / "loop")
    source.put("z.txt", b"z")
    assert [i.path for i in source.list()] == ["a.txt", "z.txt"]


def test_oddly_named_files_are_listed_so_they_can_be_reported(source: FolderBlobSource) -> None:
    """A file whose name is not a valid blob name is listed, and properties() says INVALID_NAME."""
    (source.root / "back\\slash.txt").write_bytes(b"x")
    assert [i.path for i in source.list()] == ["back\\slash.txt"]
    with pytest.raises(PermanentError) as caught:
        source.properties("back\\slash.txt")
    assert caught.value.reason is ReasonCode.INVALID_NAME


def test_undecodable_file_names_are_listed_and_reported_invalid(source: FolderBlobSource) -> None:
    """A file name that is not UTF-8 shows up in the listing; using it reports INVALID_NAME."""
    with open(os.path.join(os.fsencode(source.root), b"latin1-\xe9.txt"), "wb") as file:
        file.write(b"x")
    (listed,) = source.list()
    assert listed.path == "latin1-\udce9.txt"
    with pytest.raises(PermanentError) as caught:
        source.properties(listed.path)
    assert caught.value.reason is ReasonCode.INVALID_NAME


def test_special_files_are_not_blobs(source: FolderBlobSource) -> None:
    """A FIFO is neither listed nor opened (opening one could hang the worker); a directory is not found."""
    os.mkfifo(source.root / "pipe")
    (source.root / "folder").mkdir()
    assert list(source.list()) == []
    for name in ("pipe", "folder"):
        with pytest.raises(PermanentError) as caught:
            source.properties(name)
        assert caught.value.reason is ReasonCode.NOT_FOUND


def test_an_in_place_append_during_a_read_is_superseded(source: FolderBlobSource) -> None:
    """Rewriting the same file (no rename) while it is read is caught before the last chunk."""
    info = source.put("log.txt", b"a" * 100)
    stream = source.read("log.txt", info.version.etag, chunk_size=10)
    next(stream)
    with (source.root / "log.txt").open("ab") as file:
        file.write(b"more")
    with pytest.raises(Superseded):
        list(stream)


def test_a_blob_deleted_during_a_read_is_superseded(source: FolderBlobSource) -> None:
    """A blob removed mid-read fails the read instead of completing it."""
    info = source.put("gone.txt", b"a" * 100)
    stream = source.read("gone.txt", info.version.etag, chunk_size=10)
    next(stream)
    source.delete("gone.txt")
    with pytest.raises(Superseded):
        list(stream)


def test_an_unstarted_read_holds_no_file(source: FolderBlobSource) -> None:
    """read() checks the version at once but opens the file only when iterated."""
    info = source.put("a.txt", b"x")
    stream = source.read("a.txt", info.version.etag)
    source.put("a.txt", b"y")
    with pytest.raises(Superseded):
        next(stream)


def test_the_root_is_created_and_reported(tmp_path: Path) -> None:
    """A missing root directory is created; root is its resolved path."""
    source = FolderBlobSource(tmp_path / "new" / "inbox", container="docs")
    assert source.root == (tmp_path / "new" / "inbox").resolve()
    assert source.container == "docs"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OSError(errno.EIO, "Input/output error"), TransientError),
        (OSError(errno.EMFILE, "Too many open files"), TransientError),
        (OSError(errno.ENOSPC, "No space left on device"), TransientError),
        (PermissionError(errno.EACCES, "Permission denied"), TransientError),
        (FileNotFoundError(errno.ENOENT, "No such file"), PermanentError),
        (OSError(errno.ENAMETOOLONG, "File name too long"), PermanentError),
    ],
)
def test_os_errors_are_classified(error: OSError, expected: type[Exception]) -> None:
    """I/O faults are transient (errno in the message); not-found and bad names are permanent."""
    classified = classify_os_error(error, "some/blob.txt")
    assert type(classified) is expected
    assert "some/blob.txt" in classified.message
    if isinstance(classified, TransientError):
        assert f"errno {error.errno} {errno.errorcode[error.errno or 0]}" in classified.message
