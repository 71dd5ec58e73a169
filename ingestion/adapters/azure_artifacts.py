"""The Azure ``ArtifactStore``: checkpoints as blobs of one container (``ingestion-artifacts``).

Keys follow the folder store's rules (``validate_key``), so both stores accept exactly the same keys.
Atomicity comes from the service: a Put Blob, and a Put Block List, replace a blob's content in one
step, so readers see the old value or the new one. ``put_stream`` stages blocks and commits them only
after the whole stream was read; when the stream raises, nothing is committed (staged blocks are
never visible and the service discards them) and the old value stays.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence

from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobBlock, BlobClient, ContainerClient

from ingestion.adapters.azure_blob import (
    DownloadRetries,
    guarded,
    is_condition_failure,
    is_missing_blob,
    rechunk,
    storage_error,
)
from ingestion.adapters.azure_errors import translated
from ingestion.adapters.local_artifacts import validate_key, validate_prefix
from ingestion.errors import IngestionError, ReasonCode, TransientError

BLOCK_SIZE = 4 * 1024 * 1024  # a staged block; a blob holds at most 50,000 of them
READ_CHUNK = 1 << 20
_BATCH_DELETE = 256  # the service's limit per batch request
_GET_ATTEMPTS = 3  # a value overwritten between two range requests is read again from the start


class AzureArtifactStore:
    """Artifacts as blobs of one container (which must exist: it is never created here)."""

    def __init__(
        self,
        container_client: ContainerClient,
        *,
        block_size: int = BLOCK_SIZE,
        page_size: int = 5000,
        service: str = "artifacts",
    ) -> None:
        if block_size <= 0 or page_size <= 0:
            raise ValueError("block_size and page_size must be positive")
        self._client = container_client
        self._block_size = block_size
        self._page_size = page_size
        self._service = service  # as connect_container was told: names the downloads' retries in SDK_RETRIES

    @property
    def container(self) -> str:
        return str(self._client.container_name)

    def put(self, key: str, data: bytes) -> None:
        blob = self._blob(key)
        with translated(f"put artifact {key}", classifier=_artifact_error):
            blob.upload_blob(data, overwrite=True)

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        blob = self._blob(key)
        writer = uuid.uuid4().hex  # block ids unique to this write; all of one length, as the service requires
        staged: list[BlobBlock] = []
        buffer = bytearray()
        size = 0
        for chunk in chunks:  # the source's own errors propagate untouched, before anything is committed
            buffer += chunk
            size += len(chunk)
            while len(buffer) >= self._block_size:
                staged.append(self._stage(blob, key, f"{writer}-{len(staged):06d}", bytes(buffer[: self._block_size])))
                del buffer[: self._block_size]
        with translated(f"commit artifact {key}", classifier=_artifact_error):
            if not staged:
                blob.upload_blob(bytes(buffer), overwrite=True)  # one block's worth: a single Put Blob
                return size
            if buffer:
                staged.append(self._stage(blob, key, f"{writer}-{len(staged):06d}", bytes(buffer)))
            blob.commit_block_list(staged)
        return size

    def get(self, key: str) -> bytes | None:
        blob = self._blob(key)
        for _ in range(_GET_ATTEMPTS):
            try:
                return blob.download_blob(raw_request_hook=DownloadRetries(self._service)).readall()
            except Exception as error:  # every SDK error is translated, none swallowed
                if is_missing_blob(error):
                    return None
                if not is_condition_failure(error):
                    raise _artifact_error(error, f"get artifact {key}") from error
                # Overwritten between range requests (the SDK pins them to the first ETag): read again.
        raise TransientError(f"get artifact {key}: overwritten while read, {_GET_ATTEMPTS} times", code="http_412")

    def open(self, key: str) -> Iterator[bytes]:
        blob = self._blob(key)
        try:
            download = blob.download_blob(raw_request_hook=DownloadRetries(self._service))
        except Exception as error:  # every SDK error is translated, none swallowed
            if is_missing_blob(error):
                raise KeyError(key) from None
            raise _artifact_error(error, f"open artifact {key}") from error

        def mid_read(error: Exception) -> IngestionError:
            if is_condition_failure(error) or is_missing_blob(error):
                return TransientError(f"open artifact {key}: overwritten or deleted while read", code="http_412")
            return _artifact_error(error, f"open artifact {key}")

        return guarded(rechunk(download.chunks(), READ_CHUNK), mid_read)

    def exists(self, key: str) -> bool:
        blob = self._blob(key)
        try:
            blob.get_blob_properties()
        except Exception as error:  # every SDK error is translated, none swallowed
            if is_missing_blob(error):
                return False
            raise _artifact_error(error, f"exists artifact {key}") from error
        return True

    def delete_prefix(self, prefix: str) -> int:
        deleted = 0
        # Page by page: a listing continues by name, so deleting what it already returned is safe.
        for page in self._pages(prefix, _BATCH_DELETE):
            if not page:
                continue
            with translated(f"delete artifacts {prefix}*", classifier=_artifact_error):
                responses = list(self._client.delete_blobs(*page, raise_on_any_failure=False))
            for name, response in zip(page, responses, strict=True):
                if response.status_code == 404:
                    continue  # a concurrent delete got there first
                if response.status_code >= 300:
                    failure = HttpResponseError(message=f"batch delete of {name}", response=response)
                    raise _artifact_error(failure, f"delete artifact {name}")
                deleted += 1
        return deleted

    def list(self, prefix: str = "") -> Iterator[str]:
        for page in self._pages(prefix, self._page_size):
            yield from page

    # ------------------------------------------------------------------ internals

    def _blob(self, key: str) -> BlobClient:
        return self._client.get_blob_client(validate_key(key))

    def _pages(self, prefix: str, size: int) -> Iterator[Sequence[str]]:
        validate_prefix(prefix)
        what = f"list artifacts {prefix}*"
        pages = self._client.list_blob_names(name_starts_with=prefix or None, results_per_page=size).by_page()
        for page in guarded(pages, lambda error: _artifact_error(error, what)):
            with translated(what, classifier=_artifact_error):
                names = [str(name) for name in page]  # already fetched; parsed from the page's response
            yield names

    def _stage(self, blob: BlobClient, key: str, block_id: str, data: bytes) -> BlobBlock:
        with translated(f"stage artifact {key}", classifier=_artifact_error):
            blob.stage_block(block_id, data)
        return BlobBlock(block_id)


def _artifact_error(error: Exception, what: str, **reasons: ReasonCode) -> IngestionError:
    """``storage_error``, plus a lost race between two writers of one key (``translated``'s ``classifier``)."""
    if getattr(error, "error_code", None) == "InvalidBlockList":
        # Another writer of this key committed first, which discards our staged blocks. Keys are
        # deterministic, so its value is as good as ours; a retry finds it (or writes again).
        return TransientError(f"{what}: a concurrent write committed first", code="concurrent_write")
    return storage_error(error, what, **reasons)
