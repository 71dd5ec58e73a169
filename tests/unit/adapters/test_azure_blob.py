"""The Azure blob adapters' own fault paths, with the real SDK over HTTP.

Azurite plays Blob Storage; a scripted HTTP server on 127.0.0.1 plays the faults Azurite never
produces (503, 429), so retry caps, retry counts and ``Retry-After`` are checked end to end.
"""

from __future__ import annotations

import base64
import hashlib
import random
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from azure.storage.blob import BlobServiceClient, StandardBlobTier

from ingestion.adapters.azure_artifacts import AzureArtifactStore
from ingestion.adapters.azure_blob import AzureBlobSource, StorageRetry, connect_container
from ingestion.errors import PermanentError, ReasonCode, Superseded, TransientError
from ingestion.retry import SDK_RETRIES, THROTTLED
from tests.emulators.azurite import ACCOUNT_KEY, Azurite, AzuriteBlobSource, connection_string
from tests.emulators.local_http import LocalHttpServer, QuietHandler
from tests.emulators.process import HOST, free_port

# --------------------------------------------------------------------------- a scripted storage server


CUT = -1  # a scripted "status": a download whose body breaks off after 3 of its 10 bytes
BODY = b"abcdefghij"  # the blob a GET returns once the script runs out (as one 206 range)


class ScriptedStorage:
    """Answers each request with the next scripted status (a 200 blob once the script runs out)."""

    def __init__(self, statuses: list[int], headers: dict[str, str] | None = None) -> None:
        self.requests = 0
        self._statuses = list(statuses)
        self._headers = headers or {}
        self._lock = threading.Lock()
        self._server = LocalHttpServer(self._handler())

    def close(self) -> None:
        self._server.close()

    @property
    def endpoint(self) -> str:
        return f"{self._server.url}/devstoreaccount1"

    def _next_status(self) -> int:
        with self._lock:
            self.requests += 1
            return self._statuses.pop(0) if self._statuses else 200

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        storage = self

        class Handler(QuietHandler):
            def do_HEAD(self) -> None:
                status = storage._next_status()
                self.send_response(status)
                if status == 200:
                    self.send_header("ETag", '"0x8DCAFE"')
                    self.send_header("Last-Modified", "Wed, 01 Jan 2025 00:00:00 GMT")
                    self.send_header("x-ms-blob-type", "BlockBlob")
                    self.send_header("Content-Length", "5")
                else:
                    self.send_header("x-ms-error-code", "ServerBusy")
                    self.send_header("Content-Length", "0")
                    for name, value in storage._headers.items():
                        self.send_header(name, value)
                self.end_headers()

            def do_GET(self) -> None:
                status = storage._next_status()
                if status not in (CUT, 200):
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("ETag", '"0x8DCAFE"')
                self.send_header("Last-Modified", "Wed, 01 Jan 2025 00:00:00 GMT")
                self.send_header("x-ms-blob-type", "BlockBlob")
                self.send_header("Content-Range", f"bytes 0-{len(BODY) - 1}/{len(BODY)}")
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                # A CUT body stops after 3 bytes, and the connection closes: the body is cut short.
                self.wfile.write(BODY[:3] if status == CUT else BODY)

        return Handler


@pytest.fixture
def scripted() -> Iterator[Callable[..., ScriptedStorage]]:
    servers: list[ScriptedStorage] = []

    def start(statuses: list[int], headers: dict[str, str] | None = None) -> ScriptedStorage:
        servers.append(ScriptedStorage(statuses, headers))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def source_at(endpoint: str, service: str, retries: int = 2) -> AzureBlobSource:
    client = connect_container(
        container="uploads", connection_string=connection_string(endpoint), retries=retries, service=service
    )
    return AzureBlobSource(client, service=service)


def retries_of(service: str) -> int:
    return SDK_RETRIES.snapshot().get(service, 0)


# --------------------------------------------------------------------------- retries and classification


def test_503s_are_retried_up_to_the_cap_counted_and_end_transient(scripted: Callable[..., ScriptedStorage]) -> None:
    """With retries=2 a 503 is tried 3 times, SDK_RETRIES counts 2, and the result is TransientError."""
    server = scripted([503] * 10)
    with pytest.raises(TransientError) as caught:
        source_at(server.endpoint, "test-503-cap").properties("a.txt")
    assert caught.value.code == "http_503"
    assert server.requests == 3
    assert retries_of("test-503-cap") == 2


def test_503s_that_clear_within_the_cap_succeed_and_are_counted(scripted: Callable[..., ScriptedStorage]) -> None:
    """Two 503s, then the blob: properties() succeeds and both retries are counted."""
    server = scripted([503, 503])
    info = source_at(server.endpoint, "test-503-then-ok").properties("a.txt")
    assert info.version.etag == '"0x8DCAFE"'
    assert info.version.size == 5
    assert server.requests == 3
    assert retries_of("test-503-then-ok") == 2


def test_429_is_transient_with_the_retry_after_the_service_asked_for(scripted: Callable[..., ScriptedStorage]) -> None:
    """A 429 is not retried by the storage SDK; it becomes TransientError with the Retry-After seconds."""
    server = scripted([429], {"Retry-After": "7"})
    throttled = THROTTLED.snapshot().get("test-429", 0)
    with pytest.raises(TransientError) as caught:
        source_at(server.endpoint, "test-429").properties("a.txt")
    assert caught.value.retry_after == 7.0
    assert caught.value.code == "http_429"
    assert server.requests == 1
    assert THROTTLED.snapshot()["test-429"] == throttled + 1  # the throttling metric counts it


def test_a_body_cut_short_is_transient(scripted: Callable[..., ScriptedStorage]) -> None:
    """The downloader's own retries of a broken body end in TransientError, not a permanent failure."""
    # The SDK re-requests a broken download 3 times (not configurable) and then raises a
    # status-less HttpResponseError wrapping the IncompleteReadError.
    server = scripted([CUT] * 3)
    with pytest.raises(TransientError) as caught:
        source_at(server.endpoint, "test-cut").read("a.txt", '"0x8DCAFE"')
    assert caught.value.code == "connection"
    assert server.requests == 3
    assert retries_of("test-cut") == 2  # the downloader's own re-requests are SDK retries too


def test_a_body_cut_once_is_read_again_and_the_retry_counted(scripted: Callable[..., ScriptedStorage]) -> None:
    """One broken body, then the whole range: the read succeeds and SDK_RETRIES counts the one retry."""
    server = scripted([CUT])
    assert b"".join(source_at(server.endpoint, "test-cut-once").read("a.txt", '"0x8DCAFE"')) == BODY
    assert retries_of("test-cut-once") == 1


def test_an_artifact_whose_body_was_cut_is_read_again_and_the_retry_counted(
    scripted: Callable[..., ScriptedStorage],
) -> None:
    """get() and open() of an artifact count the downloader's re-request under the store's service."""
    server = scripted([CUT, 200, CUT])
    client = connect_container(
        container="artifacts", connection_string=connection_string(server.endpoint), service="test-artifact-cut"
    )
    store = AzureArtifactStore(client, service="test-artifact-cut")
    assert store.get("doc/v-1/source") == BODY
    assert b"".join(store.open("doc/v-1/source")) == BODY
    assert server.requests == 4
    assert retries_of("test-artifact-cut") == 2


def test_a_refused_connection_is_transient_after_the_capped_retries() -> None:
    """Nobody listening: a few quick attempts, then TransientError("connection")."""
    endpoint = f"http://{HOST}:{free_port()}/devstoreaccount1"
    with pytest.raises(TransientError) as caught:
        source_at(endpoint, "test-refused", retries=1).properties("a.txt")
    assert caught.value.code == "connection"
    assert retries_of("test-refused") == 1


def test_a_wrong_key_is_a_transient_auth_failure(azurite: Azurite, request: pytest.FixtureRequest) -> None:
    """Azurite's 403 for a bad signature is TransientError("auth"), and the message holds no key."""
    container = azurite.fresh_container(request, "uploads")
    wrong_key = base64.b64encode(b"not the account key").decode()
    client = connect_container(
        container=container.container_name, connection_string=connection_string(azurite.blob_endpoint, wrong_key)
    )
    with pytest.raises(TransientError) as caught:
        AzureBlobSource(client).properties("a.txt")
    assert caught.value.code == "auth"
    assert wrong_key not in caught.value.message
    assert ACCOUNT_KEY not in caught.value.message


def test_the_backoff_between_retries_is_capped() -> None:
    """The storage retry policy's backoff grows but never passes the cap (the SDK's own starts at 15 s)."""
    policy = StorageRetry("test-backoff", retries=10, backoff_s=0.5, backoff_max_s=4)
    assert 0.25 <= policy.get_backoff_time({"count": 1}) <= 0.5
    assert all(2 <= policy.get_backoff_time({"count": count}) <= 4 for count in range(4, 12))


def test_connect_container_never_creates_the_container(azurite: Azurite) -> None:
    """Using a container that does not exist fails (transient: the deploy step creates it) and creates none."""
    name = "never-created"
    with pytest.raises(TransientError) as caught:
        list(AzureBlobSource(azurite.connect(name)).list())
    assert caught.value.code == "container_not_found"
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    assert not service.get_container_client(name).exists()


def test_connect_container_needs_an_endpoint() -> None:
    """Neither a connection string nor an account URL is a configuration error."""
    with pytest.raises(ValueError, match="connection string or an account URL"):
        connect_container(container="uploads")


# --------------------------------------------------------------------------- versions while reading


@pytest.fixture
def blobs(azurite: Azurite, request: pytest.FixtureRequest) -> AzuriteBlobSource:
    return AzuriteBlobSource(azurite.fresh_container(request, "uploads"))


@pytest.fixture
def small_ranges(azurite: Azurite, request: pytest.FixtureRequest) -> AzuriteBlobSource:
    """A source whose downloads fetch 1 KiB per request, so one read spans many range requests."""
    return AzuriteBlobSource(azurite.fresh_container(request, "uploads", max_chunk_get_size=1024))


def test_an_overwrite_between_properties_and_read_is_superseded(blobs: AzuriteBlobSource) -> None:
    """The version properties() reported cannot be read once the blob was overwritten."""
    blobs.put("doc.txt", b"version one")
    etag = blobs.properties("doc.txt").version.etag
    blobs.put("doc.txt", b"version two")
    with pytest.raises(Superseded):
        blobs.read("doc.txt", etag)


def test_an_overwrite_between_range_requests_is_superseded(small_ranges: AzuriteBlobSource) -> None:
    """An overwrite in the middle of a multi-request read fails the next range request (pinned by If-Match)."""
    # Given a 10 KiB blob read 1 KiB per request
    etag = small_ranges.put("big.bin", bytes(range(256)) * 40).version.etag
    stream = small_ranges.read("big.bin", etag, chunk_size=1024)
    received = [next(stream)]
    # When it is overwritten after the first piece
    small_ranges.put("big.bin", b"z" * 10240)
    # Then the next range request is refused, long before the end
    with pytest.raises(Superseded):
        received.extend(stream)
    assert len(received) <= 2
    assert all(piece == (bytes(range(256)) * 4) for piece in received)


def test_a_delete_between_range_requests_is_superseded(small_ranges: AzuriteBlobSource) -> None:
    """A blob deleted mid-read ends the read with Superseded (the version being read is gone)."""
    etag = small_ranges.put("big.bin", b"a" * 10240).version.etag
    stream = small_ranges.read("big.bin", etag, chunk_size=1024)
    next(stream)
    small_ranges.delete("big.bin")
    with pytest.raises(Superseded):
        list(stream)


def test_a_container_deleted_mid_read_is_transient_not_superseded(small_ranges: AzuriteBlobSource) -> None:
    """No newer version took over when the whole container went: TransientError("container_not_found")."""
    etag = small_ranges.put("big.bin", b"a" * 10240).version.etag
    stream = small_ranges.read("big.bin", etag, chunk_size=1024)
    next(stream)
    small_ranges.container_client.delete_container()
    with pytest.raises(TransientError) as caught:
        list(stream)
    assert caught.value.code == "container_not_found"


def test_an_archived_blob_is_transient_not_an_invalid_name(blobs: AzuriteBlobSource) -> None:
    """A blob in the Archive tier (409 BlobArchived) cannot be read until rehydrated; its name is fine."""
    etag = blobs.put("cold.txt", b"archived").version.etag
    blobs.container_client.get_blob_client("cold.txt").set_standard_blob_tier(StandardBlobTier.ARCHIVE)
    assert blobs.properties("cold.txt").version.etag == etag  # its properties still read
    with pytest.raises(TransientError) as caught:
        list(blobs.read("cold.txt", etag))
    assert caught.value.code == "blob_archived"
    assert "rehydrate" in caught.value.message


def test_a_deleted_blob_is_not_found(blobs: AzuriteBlobSource) -> None:
    """After a delete, properties() and read() of the old version raise PermanentError(NOT_FOUND)."""
    etag = blobs.put("gone.txt", b"x").version.etag
    blobs.delete("gone.txt")
    with pytest.raises(PermanentError) as caught:
        blobs.properties("gone.txt")
    assert caught.value.reason is ReasonCode.NOT_FOUND
    with pytest.raises(PermanentError) as caught:
        blobs.read("gone.txt", etag)
    assert caught.value.reason is ReasonCode.NOT_FOUND


def test_a_large_blob_streams_in_pieces_of_the_requested_size(blobs: AzuriteBlobSource) -> None:
    """A 9 MiB blob (three download requests) arrives whole, in pieces of exactly chunk_size but the last."""
    data = random.Random(7).randbytes(9 * 1024 * 1024 + 123)
    etag = blobs.put("large.bin", data).version.etag
    digest = hashlib.sha256()
    sizes = []
    for piece in blobs.read("large.bin", etag, chunk_size=1 << 20):
        digest.update(piece)
        sizes.append(len(piece))
    assert digest.digest() == hashlib.sha256(data).digest()
    assert sizes == [1 << 20] * 9 + [123]


# --------------------------------------------------------------------------- listing and names


def test_listing_pages_through_every_blob_in_name_order(azurite: Azurite, request: pytest.FixtureRequest) -> None:
    """With 4 blobs per page, all 25 blobs come back, in order, with their versions."""
    client = azurite.fresh_container(request, "uploads")
    writer = AzuriteBlobSource(client)
    names = [f"doc-{i:02d}.txt" for i in range(25)]
    for name in reversed(names):
        writer.put(name, name.encode())
    listed = list(AzureBlobSource(client, page_size=4).list())
    assert [info.path for info in listed] == names
    assert listed[7] == writer.properties(names[7])


@pytest.mark.parametrize("flag", ["true", "True"])
def test_directory_markers_are_not_blobs(blobs: AzuriteBlobSource, flag: str) -> None:
    """A folder marker (0 bytes, metadata hdi_isfolder=true: every directory of a Data Lake account)
    is neither listed nor found, as a local folder's directories are not; the files in it are."""
    blobs.container_client.upload_blob("reports", b"", metadata={"hdi_isfolder": flag})
    blobs.put("reports/q1.txt", b"q1")
    assert [info.path for info in blobs.list()] == ["reports/q1.txt"]
    with pytest.raises(PermanentError) as caught:
        blobs.properties("reports")
    assert caught.value.reason is ReasonCode.NOT_FOUND
    assert "directory" in caught.value.message


@pytest.mark.parametrize(
    "name",
    [
        "with space.txt",
        "ünïcødé/日本語 file.txt",
        "a+b&c=d?e#f.txt",
        "100% sure %2F %41.txt",
        "trailing dot.",
        " padded ",
        "dir./x;y=z",
    ],
)
def test_unusual_names_round_trip(blobs: AzuriteBlobSource, name: str) -> None:
    """Spaces, non-ASCII letters and URL-special characters survive listing, properties and reads."""
    etag = blobs.put(name, name.encode()).version.etag
    assert [info.path for info in blobs.list()] == [name]
    assert blobs.properties(name).path == name
    assert b"".join(blobs.read(name, etag)) == name.encode()


# --------------------------------------------------------------------------- artifacts


class Boom(RuntimeError):
    """Raised by a stream that fails after some blocks were staged."""


def failing_stream() -> Iterator[bytes]:
    for _ in range(5):
        yield b"x" * 1000
    raise Boom("the source broke")


@pytest.fixture
def small_blocks(azurite: Azurite, request: pytest.FixtureRequest) -> AzureArtifactStore:
    """An artifact store staging 1 KiB blocks, so a short stream already stages several."""
    return AzureArtifactStore(azurite.fresh_container(request, "ingestion-artifacts"), block_size=1024)


def test_a_failing_stream_commits_nothing_after_staging_blocks(small_blocks: AzureArtifactStore) -> None:
    """Blocks staged before the stream broke stay invisible: no new key, an old value left whole."""
    small_blocks.put("doc/v-1/old", b"the old value")
    for key in ("doc/v-1/new", "doc/v-1/old"):
        with pytest.raises(Boom):
            small_blocks.put_stream(key, failing_stream())
    assert small_blocks.get("doc/v-1/new") is None
    assert not small_blocks.exists("doc/v-1/new")
    assert small_blocks.get("doc/v-1/old") == b"the old value"
    assert list(small_blocks.list()) == ["doc/v-1/old"]


def test_a_stream_of_many_blocks_round_trips(small_blocks: AzureArtifactStore) -> None:
    """A stream committed as many blocks reads back whole, in pieces of at most 1 MiB."""
    pieces = [bytes([i]) * 777 for i in range(20)]
    assert small_blocks.put_stream("doc/v-1/source", iter(pieces)) == 777 * 20
    assert small_blocks.get("doc/v-1/source") == b"".join(pieces)
    assert b"".join(small_blocks.open("doc/v-1/source")) == b"".join(pieces)


def test_an_artifact_overwritten_while_open_is_transient(azurite: Azurite, request: pytest.FixtureRequest) -> None:
    """open() pins its range requests to the first version; an overwrite in between is TransientError."""
    client = azurite.fresh_container(request, "ingestion-artifacts", max_chunk_get_size=256 * 1024)
    store = AzureArtifactStore(client)
    store.put("doc/v-1/source", b"a" * (3 << 20))
    stream = store.open("doc/v-1/source")
    next(stream)
    store.put("doc/v-1/source", b"b" * (3 << 20))
    with pytest.raises(TransientError):
        list(stream)


def test_delete_prefix_spans_several_batches(azurite: Azurite, request: pytest.FixtureRequest) -> None:
    """More keys than one batch request takes (256) are all deleted and counted; others stay."""
    store = AzureArtifactStore(azurite.fresh_container(request, "ingestion-artifacts"))
    for i in range(260):
        store.put(f"doc/v-1/part-{i:03d}", b"x")
    store.put("doc2/v-1/keep", b"x")
    assert store.delete_prefix("doc/") == 260
    assert list(store.list()) == ["doc2/v-1/keep"]
