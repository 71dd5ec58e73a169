"""finalize: record a document's outcome on its job (indexed, skipped, needs review, retry later).

A version that ends ``skipped`` or ``needs_review`` also takes its document's chunks out of the index:
they are an older version's, and the file no longer says what they say. A transient failure leaves
them: the version that replaces them is only delayed.
"""

from __future__ import annotations

from datetime import datetime

from ingestion.errors import IngestionError, PermanentError, ReasonCode, Superseded, TransientError
from ingestion.model import ErrorInfo, Job, JobStatus
from ingestion.services import Services
from ingestion.stages.common import StageRequest, update_job
from ingestion.stages.persist import PersistResult, purge_document, repair_index


def record_success(services: Services, request: StageRequest, persisted: PersistResult) -> Job:
    """The index holds exactly this version's chunks: the job is ``indexed``."""

    def change(job: Job) -> Job | None:
        if job.status is JobStatus.INDEXED:
            return None
        if job.status is not JobStatus.INDEXING:
            raise Superseded(f"{job.doc_id}: job is {job.status}, not indexing")
        return job.transition(
            JobStatus.INDEXED,
            services.clock(),
            f"{persisted.chunks} chunks ({persisted.upserted} written, {persisted.deleted} removed)",
            indexed_hash=job.version.content_hash,
            chunk_count=persisted.chunks,
            chunk_ids_digest=persisted.chunk_ids_digest,
            attempts=0,
            last_error=None,
            retry_at=None,
        )

    return update_job(services, request, change)


def record_failure(
    services: Services,
    request: StageRequest,
    stage: str,
    error: IngestionError,
    *,
    retry_at: datetime | None = None,
) -> Job | None:
    """Record ``error`` from ``stage``.

    Permanent: the job ends ``skipped`` (empty files) or ``needs_review``, and the document's chunks
    leave the index. Transient: counted, and when ``retry_at`` is given (the caller's retries are
    spent) the job waits in ``retry_later`` for a re-drive; a transient failure is never terminal.
    Superseded: nothing to record. Returns ``None`` when the job has moved on to another version.
    """
    if isinstance(error, Superseded):
        return None
    try:
        job = update_job(services, request, lambda job: _recorded(services, job, stage, error, retry_at))
    except Superseded:
        return None
    if isinstance(error, PermanentError):
        purge_document(services, request.doc_id)
        current = services.jobs.get(request.doc_id)
        if current is not None and current.version.etag != request.etag:
            repair_index(services, request.doc_id)  # a newer version finished while we purged
    return job


def _recorded(services: Services, job: Job, stage: str, error: IngestionError, retry_at: datetime | None) -> Job | None:
    if job.status.is_terminal or job.status is JobStatus.RETRY_LATER:
        return None  # already recorded by an earlier run of this stage
    now = services.clock()
    if isinstance(error, PermanentError):
        info = ErrorInfo(stage, error.kind, error.reason.value, error.message, now)
        target = JobStatus.SKIPPED if error.reason is ReasonCode.EMPTY else JobStatus.NEEDS_REVIEW
        return job.transition(
            target,
            now,
            f"{stage}: {error.reason.value}",
            last_error=info,
            indexed_hash=None,
            chunk_count=0,
            chunk_ids_digest=None,
        )
    if not isinstance(error, TransientError):
        raise TypeError(f"not a stage error: {error!r}")
    info = ErrorInfo(stage, error.kind, error.code, error.message, now)
    attempts = job.attempts + 1
    if retry_at is None:
        return job.transition(job.status, now, f"{stage}: transient, retrying", last_error=info, attempts=attempts)
    note = f"{stage}: retries exhausted"
    return job.transition(JobStatus.RETRY_LATER, now, note, last_error=info, attempts=attempts, retry_at=retry_at)
