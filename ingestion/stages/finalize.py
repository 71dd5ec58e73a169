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

    Permanent: the job ends ``skipped`` (empty files), ``deleted`` (the blob is gone) or
    ``needs_review``, and the document's chunks leave the index. Transient: without ``retry_at`` it
    counts one failed attempt; with ``retry_at`` (the caller's retries are spent, each already
    counted) the job waits in ``retry_later`` for a re-drive: a transient failure is never terminal.
    Returns ``None`` when the job has moved on to another version (or was deleted).
    """
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


# A blob that vanished before it was read was deleted: its DeleteBlob event may have been handled
# before this version was registered. Empty files are skipped. Everything else needs a person.
_OUTCOMES = {ReasonCode.EMPTY: JobStatus.SKIPPED, ReasonCode.NOT_FOUND: JobStatus.DELETED}


def _recorded(services: Services, job: Job, stage: str, error: IngestionError, retry_at: datetime | None) -> Job | None:
    if job.status.is_terminal or job.status is JobStatus.RETRY_LATER:
        return None  # already recorded by an earlier run of this stage
    now = services.clock()
    if isinstance(error, PermanentError):
        info = ErrorInfo(stage, error.kind, error.reason.value, error.message, now)
        target = _OUTCOMES.get(error.reason, JobStatus.NEEDS_REVIEW)
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
    if retry_at is None:
        note = f"{stage}: transient, retrying"
        return job.transition(job.status, now, note, last_error=info, attempts=job.attempts + 1)
    return job.transition(JobStatus.RETRY_LATER, now, f"{stage}: retries exhausted", last_error=info, retry_at=retry_at)
