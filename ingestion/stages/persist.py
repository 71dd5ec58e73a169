"""persist: make the search index hold exactly this version's chunks for the document.

Replace, never delete first: missing chunks are upserted before stale ones are deleted, so a query
during a re-ingest may briefly see both versions but never neither. Only the difference between what
the index holds and what the version needs is written, so re-running persist (a retry, a re-drive,
an unchanged re-upload) costs one listing. Batches stay within the service's limits (at most 1,000
documents, well under 16 MB), and every per-document result is checked: the SDK reports a partial
failure as the request's success.

The index cannot make a write conditional on the job's version, so a run checks the version before
each write and once more after its last one. A run that finds it was overtaken while writing may
have put old chunks back or deleted the new version's: it repairs the index to the current version
before stopping (``repair_index``), and the final listing check catches anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import Any

from ingestion.errors import IngestionError, PermanentError, ReasonCode, Superseded, TransientError
from ingestion.model import IndexRecord, Job, JobStatus, chunk_ids_digest
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
_REPAIR_ROUNDS = 3


@dataclass(frozen=True)
class PersistResult:
    chunks: int
    upserted: int  # records written by this run (0 when the index already held them)
    deleted: int
    chunk_ids_digest: str

    def to_payload(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> PersistResult:
        return cls(**data)


def estimated_bytes(record: IndexRecord) -> int:
    """An upper bound on the record's JSON size (vectors as decimal text take ~20 bytes a float)."""
    text = len(record.chunk.text.encode()) * 2
    return text + len(record.vector) * 20 + len(record.path.encode()) + _RECORD_OVERHEAD_BYTES


def persist_chunks(services: Services, request: StageRequest) -> PersistResult:
    """Sync the index to this version's chunks; ``Superseded`` (after repairing) if overtaken."""
    job = advance(services, request, JobStatus.INDEXING)
    records = index_records(services, job, require_content_hash(job, "persist"))
    try:
        return _sync(services, job.doc_id, records, partial(current_job, services, request))
    except Superseded:
        repair_index(services, job.doc_id)
        raise


def repair_index(services: Services, doc_id: str) -> None:
    """Best effort: put the current version's chunks back if it has reached persist or finished.

    Called by a run that wrote after being overtaken. A deleted document gets its chunks purged
    (the run may have written after the deletion purged them). An earlier current version is still
    to persist and will sync the index itself; an index fault here is left to that run's final check
    and to the reconciler, since the overtaken run has nothing of its own left to report.
    """
    for _ in range(_REPAIR_ROUNDS):
        job = services.jobs.get(doc_id)
        if job is None or job.status is JobStatus.DELETED:
            with suppress(TransientError):  # left to the reconciler, like any index fault here
                purge_document(services, doc_id)
            return
        if job.status not in (JobStatus.INDEXING, JobStatus.INDEXED) or not job.version.content_hash:
            return
        request = StageRequest(doc_id, job.version.etag)
        try:
            _sync(
                services,
                doc_id,
                index_records(services, job, job.version.content_hash),
                partial(current_job, services, request),
            )
            return
        except Superseded:
            continue
        except IngestionError:  # transient or a rejected chunk: that run's final check and the reconciler see it
            return


def purge_document(services: Services, doc_id: str) -> int:
    """Delete every chunk the index holds for ``doc_id``; returns how many."""
    held = [chunk_id for chunk_id, _ in services.index.ids_for_doc(doc_id)]
    for start in range(0, len(held), services.settings.index.batch_docs):
        _require_success(services.index.delete(held[start : start + services.settings.index.batch_docs]), "delete")
    return len(held)


def index_records(services: Services, job: Job, content_hash: str) -> list[IndexRecord]:
    """The index documents of ``content_hash``'s chunks, from the parse, chunk and embed artifacts."""
    parsed = read_json(services, content_key(job.doc_id, content_hash, "parse.json"))
    if parsed is None:
        raise TransientError(f"{job.doc_id}: the parse checkpoint of {content_hash[:12]} is missing")
    chunks = load_chunks(services, job.doc_id, content_hash)
    vectors = load_vectors(services, job.doc_id, content_hash)
    now = services.clock()
    title = parsed.get("title") or job.path.rsplit("/", 1)[-1]
    return [
        IndexRecord(
            chunk=chunk,
            vector=vector,
            path=job.path,
            title=title,
            content_type=str(parsed["content_type"]),
            last_modified=job.version.last_modified,
            ingested_at=now,
        )
        for chunk, vector in zip(chunks, vectors, strict=True)
    ]


def _sync(services: Services, doc_id: str, records: list[IndexRecord], guard: Callable[[], Job]) -> PersistResult:
    """Upsert what the index lacks, delete what it should not hold, check the result."""
    expected = {record.id: record.chunk.version for record in records}
    held = dict(services.index.ids_for_doc(doc_id))
    guard()
    missing = [record for record in records if held.get(record.id) != record.chunk.version]
    limits = services.settings.index
    for batch in bounded_batches(missing, limits.batch_docs, limits.batch_bytes, cost=estimated_bytes):
        guard()
        _upsert_checked(services, batch)
    stale = sorted(set(held) - set(expected))
    for start in range(0, len(stale), limits.batch_docs):
        guard()
        _require_success(services.index.delete(stale[start : start + limits.batch_docs]), "delete")
    now_held = dict(services.index.ids_for_doc(doc_id))
    guard()  # after the last write: an overtaken run must not report success
    if now_held != expected:
        extra, absent = len(set(now_held) - set(expected)), len(set(expected) - set(now_held))
        raise TransientError(f"{doc_id}: the index changed during persist ({extra} extra, {absent} missing chunks)")
    return PersistResult(
        chunks=len(records), upserted=len(missing), deleted=len(stale), chunk_ids_digest=chunk_ids_digest(expected)
    )


def _upsert_checked(services: Services, batch: Sequence[IndexRecord]) -> None:
    """Upsert, retrying only the records that failed with a retryable status."""
    pending = list(batch)
    for delay in (*_RETRY_DELAYS_S, None):
        results = services.index.upsert(pending)
        answered = {result.key for result in results}
        # A record the index did not answer for is treated as not accepted, never as done.
        failed = [result for result in results if not result.succeeded] + [
            IndexResult(record.id, succeeded=False, status_code=503, message="no result returned")
            for record in pending
            if record.id not in answered
        ]
        _raise_rejected(failed, "upsert")
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
    _raise_rejected(failed, operation)
    if failed:
        first = failed[0]
        raise TransientError(
            f"index {operation} failed for {len(failed)} id(s); first {first.key}: {first.status_code}"
        )


def _raise_rejected(failed: list[IndexResult], operation: str) -> None:
    rejected = [result for result in failed if result.status_code not in RETRYABLE_STATUS]
    if rejected:
        first = rejected[0]
        raise PermanentError(
            ReasonCode.INDEX_REJECTED,
            f"the index rejected {operation} of {len(rejected)} chunk(s); first {first.key}: "
            f"{first.status_code} {first.message}",
        )
