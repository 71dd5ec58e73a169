"""The Azure ``BlobSource``: users' files in a Blob Storage container, through azure-storage-blob.

``connect_container`` builds the client once (``bootstrap`` calls it) with the SDK's retries capped
and counted. The storage SDK does not use azure-core's ``RetryPolicy``: its pipeline is a fixed list
with its own ``ExponentialRetry`` (15 s first backoff, then 15 + 3**n s; ``per_retry_policies`` is
not part of that list, so it would be ignored). ``StorageRetry`` replaces it, with the caps of
``sdk_retry_kwargs`` and a count of every retry in ``SDK_RETRIES``.

Reads are pinned to one version: the first request carries ``If-Match: <etag>`` and the SDK pins every
later range request to the same ETag, so an overwrite at any point is a 412, which becomes
``Superseded``. Content is streamed in pieces of the caller's size; at most one download chunk
(``max_chunk_get_size``, 4 MiB) is held in memory. A body that breaks off is asked for again by the
SDK's downloader itself (3 tries a range); ``DownloadRetries`` counts those in ``SDK_RETRIES`` too.
Folder markers (a Data Lake account's directories, empty folders kept by tools) are not blobs: never
listed, ``NOT_FOUND`` to ``properties``, as a local folder's directories are. The helpers at the
bottom are shared with ``azure_artifacts``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.exceptions import AzureError, HttpResponseError, ResourceModifiedError, ResourceNotFoundError
from azure.core.paging import PageIterator
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.storage.blob import BlobProperties, BlobServiceClient, ContainerClient, ExponentialRetry
from azure.storage.blob import StorageStreamDownloader as Download

from ingestion.adapters.azure_errors import ThrottleCountingHook, classify, sdk_retry_kwargs, translated
from ingestion.errors import IngestionError, PermanentError, ReasonCode, Superseded, TransientError
from ingestion.model import DocumentVersion
from ingestion.ports import BlobInfo, BlobPage
from ingestion.retry import SDK_RETRIES, RetryCounts

T = TypeVar("T")

DOWNLOAD_CHUNK = 4 * 1024 * 1024  # per range request; also the first request's size (SDK default: 32 MiB)


class StorageRetry(ExponentialRetry):
    """The storage SDK's retry policy with azure-core's capped backoff, counting its retries."""

    def __init__(
        self, service: str, *, retries: int, backoff_s: float, backoff_max_s: float, counts: RetryCounts = SDK_RETRIES
    ) -> None:
        # initial_backoff / increment_base are unused: get_backoff_time below replaces the SDK's formula.
        super().__init__(
            retry_total=retries,
            retry_connect=retries,
            retry_read=retries,
            retry_status=retries,
            retry_to_secondary=False,
            random_jitter_range=0,
        )
        self._service = service
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._counts = counts

    def get_backoff_time(self, settings: dict[str, Any]) -> float:
        # ``count`` is the number of the retry about to happen (1 for the first): 0.5, 1, 2, 4 s... capped.
        backoff = min(self._backoff_max_s, self._backoff_s * 2 ** max(0, settings["count"] - 1))
        return random.uniform(backoff / 2, backoff)  # jitter: concurrent callers do not retry in step

    def increment(
        self,
        settings: dict[str, Any],
        request: PipelineRequest[Any],
        response: PipelineResponse[Any, Any] | None = None,
        error: AzureError | None = None,
    ) -> bool:
        retrying = super().increment(settings, request, response, error)
        if retrying:
            self._counts.add(self._service)
        return retrying


def connect_container(
    *,
    container: str,
    connection_string: str | None = None,
    account_url: str | None = None,
    credential: object | None = None,
    retries: int = 2,
    timeout_s: float = 30.0,
    service: str = "blob",
    max_chunk_get_size: int = DOWNLOAD_CHUNK,
) -> ContainerClient:
    """A client for ``container`` (which must exist: it is never created here).

    A connection string wins when given; else ``account_url`` with ``credential`` (bootstrap's
    ``DefaultAzureCredential``). At most ``retries`` SDK retries per request, counted as ``service``.
    """
    caps = sdk_retry_kwargs(retries, timeout_s)
    options: dict[str, Any] = {
        "retry_policy": StorageRetry(
            service,
            retries=caps["retry_total"],
            backoff_s=caps["retry_backoff_factor"],
            backoff_max_s=caps["retry_backoff_max"],
        ),
        "connection_timeout": caps["connection_timeout"],
        "read_timeout": caps["read_timeout"],
        # Streaming: no request fetches more than one chunk (the SDK's first GET is 32 MiB by default).
        "max_single_get_size": max_chunk_get_size,
        "max_chunk_get_size": max_chunk_get_size,
        # The storage SDK does not retry a 429 (its policy never sees one): a response hook counts them.
        "raw_response_hook": ThrottleCountingHook(service),
    }
    if connection_string:
        client = BlobServiceClient.from_connection_string(connection_string, **options)
    elif account_url:
        if credential is not None and not isinstance(credential, TokenCredential):
            raise TypeError("credential must be a TokenCredential (bootstrap's DefaultAzureCredential)")
        client = BlobServiceClient(account_url, credential=credential, **options)
    else:
        raise ValueError("connect_container needs a connection string or an account URL")
    return client.get_container_client(container)


class DownloadRetries:
    """Counts the storage downloader's own re-requests in ``SDK_RETRIES``; one per download.

    A body that breaks off (``IncompleteRead``) is asked for again by the downloader itself, up to 3
    times a range with a 1 s sleep (``_download.py``, not configurable), in a new pipeline run that
    ``StorageRetry`` sees as a first attempt. Passed to ``download_blob`` as ``raw_request_hook``, this
    is called once per pipeline run (``StorageRequestHook`` pops it), so a run asking for the same
    range as the run before it is such a re-request.
    """

    def __init__(self, service: str, counts: RetryCounts = SDK_RETRIES) -> None:
        self._service = service
        self._counts = counts
        self._last: str | None = None

    def __call__(self, request: PipelineRequest[Any]) -> None:
        headers = request.http_request.headers
        asked = headers.get("x-ms-range") or headers.get("Range")
        if asked is not None and asked == self._last:
            self._counts.add(self._service)
        self._last = asked


class AzureBlobSource:
    """The blobs of one container (``uploads``).

    ``service`` names the SDK retries of its downloads in ``SDK_RETRIES``: the same name as
    ``connect_container`` was given, which counts the others.
    """

    def __init__(self, container_client: ContainerClient, *, page_size: int = 5000, service: str = "blob") -> None:
        if page_size <= 0:
            raise ValueError("page_size must be positive")
        self._client = container_client
        self._page_size = page_size
        self._service = service

    @property
    def container(self) -> str:
        return str(self._client.container_name)

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        for page in self._pages(prefix, None, self._page_size):
            yield from page.blobs

    def page(self, continuation: str | None = None, limit: int = 1000) -> BlobPage:
        if limit <= 0:
            raise ValueError("limit must be positive")
        # The first page of a listing always exists (an empty container gives an empty one, no token).
        return next(self._pages("", continuation, limit))

    def properties(self, path: str) -> BlobInfo:
        what = f"properties of {self.container}/{path}"
        with translated(what, rejected=ReasonCode.INVALID_NAME, classifier=storage_error):
            blob = self._client.get_blob_client(path).get_blob_properties()
        if is_directory(blob):
            raise PermanentError(ReasonCode.NOT_FOUND, f"{path}: a directory, not a file")
        return blob_info(blob)

    def read(self, path: str, etag: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        try:
            download = self._client.download_blob(
                path,
                etag=etag,
                match_condition=MatchConditions.IfNotModified,
                raw_request_hook=DownloadRetries(self._service),
            )
        except Exception as error:  # every SDK error is translated, none swallowed
            raise self._refused(error, path, etag) from error
        return self._stream(download, path, etag, chunk_size)

    # ------------------------------------------------------------------ internals

    def _pages(self, prefix: str, continuation: str | None, size: int) -> Iterator[BlobPage]:
        """The listing from ``continuation`` on, one service page (at most ``size`` blobs) at a time.

        The token is the service's ``NextMarker``: it names where the next page starts, not a cursor
        held by the service, so it stays valid for as long as it is kept, whatever was created or
        deleted meanwhile. The service returns at most 5000 blobs a page (a larger ``size`` gets
        5000), and may return fewer, even none, with a marker: only a ``None`` token ends the listing.
        """
        what = f"list {self.container}/{prefix}*"
        # by_page() returns the SDK's BlobPropertiesPaged, a PageIterator: it holds the next marker.
        pages = cast(
            "PageIterator[BlobProperties]",
            self._client.list_blobs(
                name_starts_with=prefix or None, include=["metadata"], results_per_page=size
            ).by_page(continuation_token=continuation),
        )
        for page in guarded(pages, lambda error: storage_error(error, what)):
            with translated(what):
                blobs = list(page)  # already fetched; the items are parsed from the page's response
            yield BlobPage([blob_info(blob) for blob in blobs if not is_directory(blob)], pages.continuation_token)

    def _refused(self, error: Exception, path: str, etag: str) -> IngestionError:
        """The first request failed: a 412 means another version, or (Azurite) no blob at all."""
        if not is_condition_failure(error):
            return storage_error(error, f"read {self.container}/{path}", rejected=ReasonCode.INVALID_NAME)
        current = self.properties(path)  # NOT_FOUND when the blob is gone
        return Superseded(f"{path}: version {etag} replaced by {current.version.etag}")

    def _stream(self, download: Download[bytes], path: str, etag: str, chunk_size: int) -> Iterator[bytes]:
        what = f"read {self.container}/{path}"

        def mid_read(error: Exception) -> IngestionError:
            if is_condition_failure(error) or is_missing_blob(error):
                return Superseded(f"{path}: overwritten or deleted while it was read")
            return storage_error(error, what)  # a container gone is not a newer version

        pieces = guarded(rechunk(download.chunks(), chunk_size), mid_read)
        held = next(pieces, None)
        while held is not None:
            following = next(pieces, None)
            if following is None:
                # Checked before the last piece leaves: a consumer never completes a superseded read.
                self._confirm_unchanged(path, etag)
            yield held
            held = following

    def _confirm_unchanged(self, path: str, etag: str) -> None:
        blob = self._client.get_blob_client(path)
        try:
            blob.get_blob_properties(etag=etag, match_condition=MatchConditions.IfNotModified)
        except Exception as error:  # every SDK error is translated, none swallowed
            if is_condition_failure(error) or is_missing_blob(error):
                raise Superseded(f"{path}: overwritten or deleted while it was read") from error
            raise storage_error(error, f"read {self.container}/{path}") from error


# --------------------------------------------------------------------------- shared with azure_artifacts


def blob_info(blob: BlobProperties) -> BlobInfo:
    """A listing's or a properties call's view of a blob, with the ETag quoted as the headers give it."""
    etag = str(blob.etag)
    moment: datetime = blob.last_modified
    return BlobInfo(
        str(blob.name),
        DocumentVersion(
            # A listing's XML carries the ETag bare; the ETag header carries it quoted.
            etag=etag if etag.startswith('"') else f'"{etag}"',
            size=int(blob.size),
            last_modified=(moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC),
        ),
    )


def is_directory(blob: BlobProperties) -> bool:
    """A folder marker: how a Data Lake (hierarchical namespace) account lists each directory, and
    how tools (AzCopy, Storage Explorer) keep empty folders in a flat one. It has no content to ingest."""
    metadata = blob.metadata or {}
    return any(key.lower() == "hdi_isfolder" and str(value).lower() == "true" for key, value in metadata.items())


def storage_error(
    error: Exception,
    what: str,
    *,
    rejected: ReasonCode = ReasonCode.PARSE_FAILED,
    not_found: ReasonCode = ReasonCode.NOT_FOUND,
) -> IngestionError:
    """``classify``, plus what only Blob Storage says: a missing container, a body cut short.

    Takes ``classify``'s arguments, so it can be ``translated``'s ``classifier``."""
    code = getattr(error, "error_code", None)
    if code == "ContainerNotFound":
        # Infrastructure, not the file: the deploy step creates containers. Retry later, like auth.
        return TransientError(f"{what}: the container does not exist", code="container_not_found")
    if code in ("BlobArchived", "BlobBeingRehydrated"):
        # 409 for a blob in the Archive tier: the file is fine, but readable only once someone
        # rehydrates it (hours). Like auth: retry later, and the re-drive limit brings it to a person.
        return TransientError(
            f"{what}: the blob is in the Archive tier; rehydrate it (set its tier to Hot or Cool) to ingest it",
            code="blob_archived",
        )
    inner = getattr(error, "inner_exception", None)
    if isinstance(error, HttpResponseError) and error.status_code is None and isinstance(inner, Exception):
        # The downloader wraps a body that broke off three times in a status-less HttpResponseError.
        return classify(inner, what, rejected=rejected, not_found=not_found)
    return classify(error, what, rejected=rejected, not_found=not_found)


def is_condition_failure(error: BaseException) -> bool:
    """An ``If-Match`` that did not hold (HTTP 412)."""
    return isinstance(error, ResourceModifiedError) or getattr(error, "status_code", None) == 412


def is_missing_blob(error: BaseException) -> bool:
    """A 404 for the blob itself (a missing container is another matter: see ``storage_error``)."""
    return isinstance(error, ResourceNotFoundError) and getattr(error, "error_code", None) != "ContainerNotFound"


def guarded(items: Iterator[T], translate: Callable[[Exception], IngestionError]) -> Iterator[T]:
    """``items``, with an error raised while fetching the next one translated (the consumer's are not)."""
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except IngestionError:
            raise
        except Exception as error:  # every SDK error is translated, none swallowed
            raise translate(error) from error
        yield item


def rechunk(blocks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The concatenation of ``blocks`` in pieces of exactly ``size`` bytes (the last may be shorter)."""
    pending = b""
    for block in blocks:
        data = pending + block if pending else block
        view = memoryview(data)
        start = 0
        while len(data) - start >= size:
            yield bytes(view[start : start + size])
            start += size
        pending = bytes(view[start:])
    if pending:
        yield pending
