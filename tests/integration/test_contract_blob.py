"""BlobSource contract: listing order, resumable pages, versions (ETags), streaming reads guarded by the ETag."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from ingestion.adapters.local_blob import FolderBlobSource
from ingestion.errors import PermanentError, ReasonCode, Superseded
from ingestion.ports import BlobInfo, BlobPage
from tests.emulators.azurite import AzuriteBlobSource
from tests.integration.conftest import WritableBlobSource


def read_all(blobs: WritableBlobSource, path: str, etag: str, chunk_size: int = 1 << 20) -> bytes:
    return b"".join(blobs.read(path, etag, chunk_size))


def follow(blobs: WritableBlobSource, limit: int, continuation: str | None = None) -> list[BlobInfo]:
    """Every blob from ``continuation`` to the end, checking each page as the reconciler relies on it."""
    found: list[BlobInfo] = []
    for _ in range(100):  # a listing that never ends fails here instead of hanging
        page = blobs.page(continuation, limit)
        assert len(page.blobs) <= limit
        names = [info.path for info in found + page.blobs]
        assert names == sorted(set(names)), "pages go forward in name order, never repeating a blob"
        if page.continuation is None:
            return found + page.blobs
        # A page may be empty and still have a token (the service may stop early, a page of Azure
        # folder markers lists nothing): only a token that moves on keeps the listing from looping.
        assert page.continuation != continuation, "a token must move on"
        found += page.blobs
        continuation = page.continuation
    raise AssertionError("the listing did not end")


def test_properties_report_size_quoted_etag_and_utc_time(blobs: WritableBlobSource) -> None:
    """properties() gives the size, a quoted ETag and an aware UTC last_modified."""
    blobs.put("report.pdf", b"%PDF-1.7 hello")
    info = blobs.properties("report.pdf")
    assert info.path == "report.pdf"
    assert info.version.size == 14
    assert info.version.etag.startswith('"')
    assert info.version.etag.endswith('"')
    assert info.version.last_modified.utcoffset() == timedelta(0)


# Blob Storage stamps Last-Modified itself (no API writes it), so the Azure adapter cannot take part:
# this test writes through the test-side writer, not through the adapter under contract.
@pytest.mark.parametrize("blobs", ["memory", "embedded"], indirect=True)
def test_put_honours_an_explicit_last_modified(blobs: WritableBlobSource) -> None:
    """A blob written with a given modification time reports exactly that time."""
    moment = datetime(2025, 6, 1, 12, 30, tzinfo=UTC)
    blobs.put("old.txt", b"x", last_modified=moment)
    assert blobs.properties("old.txt").version.last_modified == moment


def test_list_yields_every_blob_in_name_order(blobs: WritableBlobSource) -> None:
    """Listing is in global name order ("a-b" sorts before "a/c", as in a blob container)."""
    names = ["b.txt", "a/c.txt", "a-b.txt", "a/b/z.txt", "A.txt", "a/d e.txt", "ü/ß.txt"]
    for name in names:
        blobs.put(name, name.encode())
    assert [info.path for info in blobs.list()] == sorted(names)


def test_list_filters_by_prefix(blobs: WritableBlobSource) -> None:
    """Only names starting with the prefix are listed; a prefix may end inside a segment."""
    for name in ["reports/2024-01.txt", "reports/2025-01.txt", "reports2/x.txt", "other.txt"]:
        blobs.put(name, b"x")
    assert [i.path for i in blobs.list("reports/")] == ["reports/2024-01.txt", "reports/2025-01.txt"]
    assert [i.path for i in blobs.list("reports/2025")] == ["reports/2025-01.txt"]
    assert [i.path for i in blobs.list("reports")] == ["reports/2024-01.txt", "reports/2025-01.txt", "reports2/x.txt"]
    assert list(blobs.list("nothing/")) == []


def test_list_reports_the_same_version_as_properties(blobs: WritableBlobSource) -> None:
    """A listed blob's version equals what properties() says about it."""
    blobs.put("a.txt", b"hello")
    (listed,) = blobs.list()
    assert listed == blobs.properties("a.txt")


def test_etag_changes_on_every_overwrite(blobs: WritableBlobSource) -> None:
    """Overwriting a blob, even with identical bytes, gives it a new ETag."""
    etags = {blobs.put("doc.txt", b"same bytes").version.etag for _ in range(5)}
    assert len(etags) == 5
    assert blobs.properties("doc.txt").version.etag in etags


def test_read_streams_the_content_in_chunks(blobs: WritableBlobSource) -> None:
    """read() yields the exact bytes, in pieces no larger than chunk_size."""
    data = bytes(range(256)) * 40
    etag = blobs.put("bin.dat", data).version.etag
    pieces = list(blobs.read("bin.dat", etag, chunk_size=1000))
    assert b"".join(pieces) == data
    assert all(0 < len(piece) <= 1000 for piece in pieces)
    assert len(pieces) == 11


def test_read_of_an_empty_blob_yields_nothing(blobs: WritableBlobSource) -> None:
    """An empty blob reads as no bytes (not an error: the fetch stage decides what empty means)."""
    etag = blobs.put("empty.txt", b"").version.etag
    assert read_all(blobs, "empty.txt", etag) == b""


def test_read_with_a_stale_etag_is_superseded(blobs: WritableBlobSource) -> None:
    """Asking for a version that was overwritten raises Superseded, never the new bytes."""
    old = blobs.put("doc.txt", b"version one").version.etag
    blobs.put("doc.txt", b"version two")
    with pytest.raises(Superseded):
        read_all(blobs, "doc.txt", old)


def test_overwrite_during_a_read_is_detected_before_the_end(blobs: WritableBlobSource) -> None:
    """A blob overwritten mid-read raises Superseded before the reader has seen the last chunk."""
    etag = blobs.put("doc.txt", b"a" * 100).version.etag
    stream = blobs.read("doc.txt", etag, chunk_size=10)
    received = [next(stream)]
    blobs.put("doc.txt", b"b" * 100)
    with pytest.raises(Superseded):
        received.extend(stream)
    assert len(b"".join(received)) < 100


def test_missing_blob_is_not_found(blobs: WritableBlobSource) -> None:
    """properties() and read() of a blob that does not exist raise PermanentError(NOT_FOUND)."""
    with pytest.raises(PermanentError) as caught:
        blobs.properties("nope.txt")
    assert caught.value.reason is ReasonCode.NOT_FOUND
    with pytest.raises(PermanentError) as caught:
        read_all(blobs, "nope.txt", '"x"')
    assert caught.value.reason is ReasonCode.NOT_FOUND


def test_deleted_blob_is_gone_from_listing_and_properties(blobs: WritableBlobSource) -> None:
    """After delete, the blob is neither listed nor found; deleting again reports False."""
    blobs.put("a.txt", b"1")
    blobs.put("b.txt", b"2")
    assert blobs.delete("a.txt") is True
    assert [i.path for i in blobs.list()] == ["b.txt"]
    with pytest.raises(PermanentError) as caught:
        blobs.properties("a.txt")
    assert caught.value.reason is ReasonCode.NOT_FOUND
    assert blobs.delete("a.txt") is False


@pytest.mark.parametrize("name", ["with space.txt", "ünïcødé/日本語.txt", "emoji 📄.md", "deep/" * 10 + "x.txt"])
def test_unusual_but_valid_names_round_trip(blobs: WritableBlobSource, name: str) -> None:
    """Names with spaces, non-ASCII letters and nesting are listed and read like any other."""
    etag = blobs.put(name, name.encode()).version.etag
    assert [i.path for i in blobs.list()] == [name]
    assert read_all(blobs, name, etag) == name.encode()


def test_container_is_reported(blobs: WritableBlobSource) -> None:
    """The source names its container (doc ids hash it with the path)."""
    if isinstance(blobs, AzuriteBlobSource):
        # Each test gets a fresh container with a unique name ("uploads-<random>"): the one it was given.
        assert blobs.container == blobs.container_client.container_name
        assert blobs.container.startswith("uploads-")
        return
    assert blobs.container == "uploads"


def test_page_of_an_empty_source_is_empty_and_final(blobs: WritableBlobSource) -> None:
    """An empty source gives one empty page with no continuation."""
    assert blobs.page() == BlobPage([], None)
    assert blobs.page(limit=1) == BlobPage([], None)


@pytest.mark.parametrize("count", [10, 9])
def test_pages_cover_every_blob_once_in_name_order(blobs: WritableBlobSource, count: int) -> None:
    """Pages of 3 cover every blob once, in global name order, as list() does; the last has no token."""
    names = ["b.txt", "a/c.txt", "a-b.txt", "a/b/z.txt", "A.txt", "a/d e.txt", "ü/ß.txt", "z", "m/n/o", "a/b/a"]
    for name in names[:count]:
        blobs.put(name, name.encode())
    first = blobs.page(limit=3)
    assert [info.path for info in first.blobs] == sorted(names[:count])[:3]
    assert first.continuation is not None
    assert follow(blobs, 3) == list(blobs.list())
    assert [info.path for info in follow(blobs, 3)] == sorted(names[:count])
    second = blobs.page(first.continuation, 3)
    assert second.continuation is not None
    third = blobs.page(second.continuation, 3)
    assert [info.path for info in third.blobs] == sorted(names[:count])[6:9]
    if count == 9 and third.continuation is not None:
        # Ending exactly on a page boundary, a source may not know it is done: an empty last page says so.
        assert blobs.page(third.continuation, 3) == BlobPage([], None)


def test_a_page_larger_than_the_source_is_the_whole_listing(blobs: WritableBlobSource) -> None:
    """A limit above the number of blobs returns them all in one final page."""
    for name in ["x", "y", "z"]:
        blobs.put(name, b"1")
    page = blobs.page(limit=1000)
    assert page == BlobPage(list(blobs.list()), None)


def test_a_token_can_be_used_again(blobs: WritableBlobSource) -> None:
    """The same token, stored as text and used twice, gives the same page (a run may be retried)."""
    for index in range(5):
        blobs.put(f"doc-{index}", b"1")
    token = blobs.page(limit=2).continuation
    assert token is not None
    stored = json.loads(json.dumps(token))  # kept between runs as plain text
    assert blobs.page(stored, 2) == blobs.page(token, 2)
    assert [info.path for info in blobs.page(stored, 2).blobs] == ["doc-2", "doc-3"]


def test_a_token_survives_deletions_and_new_blobs(blobs: WritableBlobSource) -> None:
    """After the last blob returned (and the next one) are deleted and blobs are created, resuming
    skips nothing that existed throughout, repeats nothing, and lists the new names after the token."""
    for index in range(0, 20, 2):
        blobs.put(f"doc-{index:02}", b"1")
    first = blobs.page(limit=3)
    assert [info.path for info in first.blobs] == ["doc-00", "doc-02", "doc-04"]
    assert first.continuation is not None
    for name in ("doc-04", "doc-06", "doc-08"):
        assert blobs.delete(name)
    for name in ("doc-01", "doc-13", "doc-99"):  # one before the token, two after it
        blobs.put(name, b"new")
    rest = [info.path for info in follow(blobs, 3, first.continuation)]
    assert rest == ["doc-10", "doc-12", "doc-13", "doc-14", "doc-16", "doc-18", "doc-99"]


@pytest.mark.parametrize("limit", [0, -1])
def test_a_limit_below_one_is_refused(blobs: WritableBlobSource, limit: int) -> None:
    """A page of no blobs cannot make progress: the limit must be positive."""
    with pytest.raises(ValueError, match="limit"):
        blobs.page(None, limit)


# The folder adapter's own names: files that are not blobs, and names that are not valid Unicode.
@pytest.mark.parametrize("blobs", ["embedded"], indirect=True)
def test_folder_pages_count_only_blobs(blobs: WritableBlobSource) -> None:
    """Partial files of atomic writes, directories and FIFOs neither appear in nor use up a page."""
    assert isinstance(blobs, FolderBlobSource)
    for name in ["a.txt", "c.txt", "e/f.txt"]:
        blobs.put(name, b"x")
    (blobs.root / f".{uuid.uuid4().hex}~partial").write_bytes(b"half")
    (blobs.root / "b").mkdir()
    os.mkfifo(blobs.root / "d")
    first = blobs.page(limit=2)
    assert [info.path for info in first.blobs] == ["a.txt", "c.txt"]
    assert first.continuation is not None
    assert blobs.page(first.continuation, 2) == BlobPage([blobs.properties("e/f.txt")], None)


@pytest.mark.parametrize("blobs", ["embedded"], indirect=True)
def test_folder_tokens_after_undecodable_names_are_plain_text(blobs: WritableBlobSource) -> None:
    """A page ending at a file name that is not UTF-8 gives a token storable as text, which resumes after it."""
    assert isinstance(blobs, FolderBlobSource)
    for raw in (b"a.txt", b"latin1-\xe9.txt", b"latin1-\xff/x.txt", b"z.txt"):
        path = os.path.join(os.fsencode(blobs.root), raw)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(b"x")
    names: list[str] = []
    token: str | None = None
    for _ in range(4):
        page = blobs.page(token, 1)
        names += [info.path for info in page.blobs]
        token = page.continuation
        if token is None:
            break
        token.encode("utf-8")  # storable as text: no lone surrogates
        token = json.loads(json.dumps(token, ensure_ascii=False))
    assert names == ["a.txt", "latin1-\udce9.txt", "latin1-\udcff/x.txt", "z.txt"]
    assert token is None


@pytest.mark.parametrize("blobs", ["embedded"], indirect=True)
def test_folder_refuses_a_token_it_did_not_make(blobs: WritableBlobSource) -> None:
    """A token that is no name and no encoded name is a caller's mistake, not a place to start over."""
    with pytest.raises(ValueError, match="not a continuation token"):
        blobs.page("/not base64!", 1)


@pytest.mark.parametrize("blobs", ["azure"], indirect=True)
def test_azure_pages_skip_directory_markers(blobs: WritableBlobSource) -> None:
    """Folder markers (hdi_isfolder) are not listed in pages, as in list()."""
    assert isinstance(blobs, AzuriteBlobSource)
    blobs.put("a.txt", b"x")
    blobs.container_client.upload_blob("b", b"", metadata={"hdi_isfolder": "true"})
    blobs.put("b/c.txt", b"x")
    assert [info.path for info in follow(blobs, 1)] == ["a.txt", "b/c.txt"]
