"""Registering blob versions as jobs: the decision a trigger (or a folder scan) makes per event.

Events arrive at least once and out of order, so registering is idempotent: the same version
twice changes nothing, an older version never replaces a newer one, and a newer version re-queues
the job (the older run's stages then find themselves superseded and stop). A job waiting in
``retry_later`` whose time has come is re-driven, up to ``Settings.max_redrives`` times; after
that it needs a person, with its last error as the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingestion.errors import ConcurrencyError, PermanentError, ReasonCode, TransientError
from ingestion.model import DocumentRef, DocumentVersion, Job, JobStatus
from ingestion.ports import BlobInfo
from ingestion.services import Services

_ATTEMPTS = 20


@dataclass(frozen=True)
class Registration:
    job: Job
    start: bool  # whether this version needs a run now
    reason: str
    gave_up: bool = False  # re-driven too often: the job now needs review


def register_version(services: Services, ref: DocumentRef, version: DocumentVersion) -> Registration:
    """Create or update the job for ``ref`` so that its current version is the newest one seen."""
    for _ in range(_ATTEMPTS):
        job = services.jobs.get(ref.doc_id)
        try:
            if job is None:
                return Registration(services.jobs.create(_new_job(services, ref, version)), start=True, reason="new")
            if job.version.etag == version.etag:
                return _same_version(services, job)
            if not _supersedes(services, ref, version, job.version):
                return Registration(job, start=False, reason="not the blob's current version")
            requeued = job.transition(
                JobStatus.QUEUED,
                services.clock(),
                "new version",
                version=version,
                attempts=0,
                redrives=0,
                last_error=None,
                retry_at=None,
            )
            return Registration(services.jobs.replace(requeued), start=True, reason="new version")
        except ConcurrencyError:
            continue
    raise TransientError(f"{ref.doc_id}: job document kept changing under {_ATTEMPTS} registrations")


def _new_job(services: Services, ref: DocumentRef, version: DocumentVersion) -> Job:
    now = services.clock()
    job = Job(ref.doc_id, ref.container, ref.path, version, JobStatus.QUEUED, created_at=now, updated_at=now)
    return job.transition(JobStatus.QUEUED, now, "new blob")


def _same_version(services: Services, job: Job) -> Registration:
    """A repeated event for the job's own version: run it if it is unfinished or due for a re-drive."""
    now = services.clock()
    if job.status is JobStatus.RETRY_LATER and (job.retry_at is None or job.retry_at <= now):
        if job.redrives >= services.settings.max_redrives:
            error = job.last_error
            note = f"gave up after {job.redrives} re-drives" + (f": {error.code}" if error else "")
            needs_review = services.jobs.replace(job.transition(JobStatus.NEEDS_REVIEW, now, note))
            return Registration(needs_review, start=False, reason=note, gave_up=True)
        redriven = job.transition(JobStatus.QUEUED, now, f"re-drive {job.redrives + 1}", redrives=job.redrives + 1)
        return Registration(services.jobs.replace(redriven), start=True, reason="re-drive")
    if job.status is JobStatus.DELETED:  # registered from a blob that exists: it came back
        requeued = job.transition(JobStatus.QUEUED, now, "blob uploaded again", attempts=0, redrives=0, last_error=None)
        return Registration(services.jobs.replace(requeued), start=True, reason="uploaded again")
    running = job.status.in_progress
    return Registration(job, start=running, reason="in progress" if running else f"already {job.status}")


def _supersedes(services: Services, ref: DocumentRef, version: DocumentVersion, current: DocumentVersion) -> bool:
    """Whether ``version`` replaces the job's ``current`` one.

    Timestamps order versions, but a copy that keeps its old modification time (``cp -p``,
    ``rsync -t``, an archive restore) arrives "older" than the file it overwrites: so when the
    timestamps say older or cannot tell, the blob itself decides. Its current ETag is the newest
    version by definition; an event for any other version is stale.
    """
    if version.is_newer_than(current):
        return True
    blob = current_blob(services, ref.path)  # gone: the deletion handler (or the reconciler) takes it from here
    return blob is not None and blob.version.etag == version.etag


def current_blob(services: Services, path: str) -> BlobInfo | None:
    """The blob's current properties; ``None`` when it is gone (any other refusal raises)."""
    try:
        return services.blobs.properties(path)
    except PermanentError as error:
        if error.reason is ReasonCode.NOT_FOUND:
            return None
        raise
