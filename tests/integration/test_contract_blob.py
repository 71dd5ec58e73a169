"""BlobSource contract: listing order, versions (ETags), streaming reads guarded by the ETag."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ingestion.errors import PermanentError, ReasonCode, Superseded
from tests.emulators.azurite import AzuriteBlobSource
from tests.integration.conftest import WritableBlobSource


def read_all(blobs: WritableBlobSource, path: str, etag: str, chunk_size: int = 1 << 20) -> bytes:
    return b"".join(blobs.read(path, etag, chunk_size))


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
