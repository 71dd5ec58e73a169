"""finalize: record a document's outcome on its job (indexed, skipped, needs review, retry later)."""

from __future__ import annotations

from datetime import datetime

from ingestion.errors import IngestionError, PermanentError, ReasonCode, Superseded, TransientError
from ingestion.model import ErrorInfo, Job, JobStatus
from ingestion.services import Services
from ingestion.stages.common import StageRequest, update_job


def record_success(services: Services, request: StageRequest, chunk_count: int, digest: str) -> Job:
    """The index holds exactly this version's chunks: the job is ``indexed``."""

    def change(job: Job) -> Job | None:
        if job.status is JobStatus.INDEXED:
            return None
        if not job.status.in_progress:
            raise Superseded(f"{job.doc_id}: job is {job.status}, not in progress")
        now = services.clock()
        if job.status is not JobStatus.INDEXING:  # unchanged content: nothing to persist
            job = job.transition(JobStatus.INDEXING, now, "content unchanged")
        return job.transition(
            JobStatus.INDEXED,
            now,
            f"{chunk_count} chunks",
            indexed_hash=job.version.content_hash,
            chunk_count=chunk_count,
            chunk_ids_digest=digest,
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

    Permanent: the job ends ``skipped`` (empty files) or ``needs_review``. Transient: counted, and
    when ``retry_at`` is given (the caller's retries are spent) the job waits in ``retry_later`` for
    the reconciler; a transient failure is never terminal. Superseded: nothing to record.
    Returns ``None`` when the job has moved on to another version.
    """
    if isinstance(error, Superseded):
        return None

    def change(job: Job) -> Job | None:
        if job.status.is_terminal or job.status is JobStatus.RETRY_LATER:
            return None  # already recorded by an earlier run of this stage
        now = services.clock()
        if isinstance(error, PermanentError):
            info = ErrorInfo(stage, error.kind, error.reason.value, error.message, now)
            target = JobStatus.SKIPPED if error.reason is ReasonCode.EMPTY else JobStatus.NEEDS_REVIEW
            return job.transition(target, now, f"{stage}: {error.reason.value}", last_error=info)
        if not isinstance(error, TransientError):
            raise TypeError(f"not a stage error: {error!r}")
        info = ErrorInfo(stage, error.kind, error.code, error.message, now)
        if retry_at is None:
            return job.transition(
                job.status, now, f"{stage}: transient, retrying", last_error=info, attempts=job.attempts + 1
            )
        return job.transition(
            JobStatus.RETRY_LATER,
            now,
            f"{stage}: retries exhausted",
            last_error=info,
            attempts=job.attempts + 1,
            retry_at=retry_at,
        )

    try:
        return update_job(services, request, change)
    except Superseded:
        return None
