"""persist: put the version's chunks in the search index, then remove the doc's chunks it no longer has.

Replace, never delete first: new chunks are upserted before stale ones are deleted, so a query
during a re-ingest may briefly see both versions but never neither. Batches stay within the
service's limits (at most 1,000 documents, well under 16 MB), and every per-document result is
checked: the SDK reports a partial failure as success of the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ingestion.errors import PermanentError, ReasonCode, TransientError
from ingestion.model import IndexRecord, JobStatus, chunk_ids_digest
from ingestion.ports import IndexResult
from ingestion.services import Services
from ingestion.stages.chunk import load_chunks
from ingestion.stages.common import (
    StageRequest,
    advance,
    bounded_batches,
    content_key,
    current_job,
    read_json,
    require_content_hash,
)
from ingestion.stages.embed import load_vectors

# Azure AI Search: 409 (version conflict), 422 (index temporarily unavailable), 503 (busy) are worth
# retrying for the failed keys only; 429 and other 5xx likewise. 400/404 mean the document is wrong.
RETRYABLE_STATUS = frozenset({409, 422, 429, 500, 502, 503, 504})
_RETRY_DELAYS_S = (0.5, 1.0, 2.0)
_RECORD_OVERHEAD_BYTES = 1024  # field names, metadata and JSON punctuation around content


@dataclass(frozen=True)
class PersistResult:
    chunks: int
    upserted: int
    deleted: int
    chunk_ids_digest: str

    def to_payload(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> PersistResult:
        return cls(**data)


def estimated_bytes(record: IndexRecord) -> int:
    """An upper bound on the record's JSON size (vectors as decimal text take ~20 bytes a float)."""
    return (
        len(record.chunk.text.encode()) * 2
        + len(record.vector) * 20
        + len(record.path.encode())
        + _RECORD_OVERHEAD_BYTES
    )


def persist_chunks(services: Services, request: StageRequest) -> PersistResult:
    """Make the index hold exactly this version's chunks for the document."""
    job = advance(services, request, JobStatus.INDEXING)
    content_hash = require_content_hash(job, "persist")
    parsed = read_json(services, content_key(job.doc_id, content_hash, "parse.json")) or {}
    chunks = load_chunks(services, job.doc_id, content_hash)
    vectors = load_vectors(services, job.doc_id, content_hash)
    now = services.clock()
    title = parsed.get("title") or job.path.rsplit("/", 1)[-1]
    records = [
        IndexRecord(
            chunk=chunk,
            vector=vector,
            path=job.path,
            title=title,
            content_type=str(parsed.get("content_type", "application/octet-stream")),
            last_modified=job.version.last_modified,
            ingested_at=now,
        )
        for chunk, vector in zip(chunks, vectors, strict=True)
    ]
    limits = services.settings.index
    for batch in bounded_batches(records, limits.batch_docs, limits.batch_bytes, cost=estimated_bytes):
        current_job(services, request)  # refuse to write for a version that has moved on
        _upsert_checked(services, batch)

    new_ids = {record.id for record in records}
    current_job(services, request)
    stale = [chunk_id for chunk_id, _ in services.index.ids_for_doc(job.doc_id) if chunk_id not in new_ids]
    for start in range(0, len(stale), limits.batch_docs):
        _require_success(services.index.delete(stale[start : start + limits.batch_docs]), "delete")
    return PersistResult(
        chunks=len(records), upserted=len(records), deleted=len(stale), chunk_ids_digest=chunk_ids_digest(new_ids)
    )


def _upsert_checked(services: Services, batch: list[IndexRecord]) -> None:
    """Upsert, retrying only the records that failed with a retryable status."""
    pending = batch
    for delay in (*_RETRY_DELAYS_S, None):
        results = services.index.upsert(pending)
        answered = {result.key for result in results}
        # A record the index did not answer for is treated as not accepted, never as done.
        failed = [result for result in results if not result.succeeded] + [
            IndexResult(record.id, succeeded=False, status_code=503, message="no result returned")
            for record in pending
            if record.id not in answered
        ]
        rejected = [result for result in failed if result.status_code not in RETRYABLE_STATUS]
        if rejected:
            first = rejected[0]
            raise PermanentError(
                ReasonCode.INDEX_REJECTED,
                f"the index rejected {len(rejected)} chunk(s); first {first.key}: {first.status_code} {first.message}",
            )
        if not failed:
            return
        if delay is None:
            first = failed[0]
            raise TransientError(
                f"{len(failed)} chunk(s) still not accepted after retries; last {first.status_code} {first.message}"
            )
        retry_keys = {result.key for result in failed}
        pending = [record for record in pending if record.id in retry_keys]
        services.sleep(delay)


def _require_success(results: list[IndexResult], operation: str) -> None:
    failed = [result for result in results if not result.succeeded]
    if failed:
        first = failed[0]
        raise TransientError(
            f"index {operation} failed for {len(failed)} id(s); first {first.key}: {first.status_code}"
        )
