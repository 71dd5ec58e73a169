"""fetch: stream the blob into the artifact store, hashing and sniffing it on the way."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from ingestion.errors import PermanentError, ReasonCode
from ingestion.model import Job, JobStatus
from ingestion.services import Services
from ingestion.sniff import sniff_head
from ingestion.stages.common import StageRequest, advance, finished, update_job, version_key, write_json

_HEAD_BYTES = 8192


@dataclass(frozen=True)
class FetchResult:
    source_key: str
    content_hash: str
    size: int
    content_type: str  # from magic bytes; parse refines it (e.g. zip -> docx)

    def to_payload(self) -> dict[str, Any]:
        return {
            "source_key": self.source_key,
            "content_hash": self.content_hash,
            "size": self.size,
            "content_type": self.content_type,
        }

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> FetchResult:
        return cls(**data)


class _Digest:
    """Counts, hashes and keeps the head of a byte stream while it passes through."""

    def __init__(self, source: Iterator[bytes], limit: int) -> None:
        self._source = source
        self._limit = limit
        self.sha256 = hashlib.sha256()
        self.size = 0
        self.head = b""

    def __iter__(self) -> Iterator[bytes]:
        for block in self._source:
            self.size += len(block)
            if self.size > self._limit:
                raise PermanentError(ReasonCode.TOO_LARGE, f"larger than the limit of {self._limit:,} bytes")
            if len(self.head) < _HEAD_BYTES:
                self.head += block[: _HEAD_BYTES - len(self.head)]
            self.sha256.update(block)
            yield block


def fetch_blob(services: Services, request: StageRequest) -> FetchResult:
    """Copy version ``request.etag`` of the blob to ``<doc>/v-<version>/source``; no-op when done."""
    job = advance(services, request, JobStatus.FETCHING)
    checkpoint = version_key(job.doc_id, job.version.key, "fetch.json")
    source_key = version_key(job.doc_id, job.version.key, "source")
    if (done := finished(services, checkpoint, source_key)) is not None:
        result = FetchResult.from_payload(done)
    else:
        limit = services.settings.limits.max_file_bytes
        if job.version.size > limit:
            raise PermanentError(ReasonCode.TOO_LARGE, f"{job.version.size:,} bytes, over the limit of {limit:,} bytes")
        digest = _Digest(services.blobs.read(job.path, job.version.etag), limit)
        services.artifacts.put_stream(source_key, digest)
        if digest.size == 0:
            raise PermanentError(ReasonCode.EMPTY, "the file is empty (0 bytes)")
        content_hash = digest.sha256.hexdigest()
        result = FetchResult(
            source_key=source_key,
            content_hash=content_hash,
            size=digest.size,
            content_type=sniff_head(digest.head),
        )
        write_json(services, checkpoint, result.to_payload())

    def record_hash(current: Job) -> Job | None:
        if current.version.content_hash == result.content_hash:
            return None
        return replace(current, version=replace(current.version, content_hash=result.content_hash))

    update_job(services, request, record_hash)
    return result
