"""Registering blob versions as jobs: the decision a trigger (or a folder scan) makes per event.

Events arrive at least once and out of order, so registering is idempotent: the same version
twice changes nothing, an older version never replaces a newer one, and a newer version re-queues
the job (the older run's stages then find themselves superseded and stop).
"""

from __future__ import annotations

from dataclasses import dataclass

from ingestion.errors import ConcurrencyError, TransientError
from ingestion.model import DocumentRef, DocumentVersion, Job, JobStatus
from ingestion.services import Services

_ATTEMPTS = 20


@dataclass(frozen=True)
class Registration:
    job: Job
    start: bool  # whether this version needs a run now
    reason: str


def register_version(services: Services, ref: DocumentRef, version: DocumentVersion) -> Registration:
    """Create or update the job for ``ref`` so that its current version is the newest one seen."""
    for _ in range(_ATTEMPTS):
        now = services.clock()
        job = services.jobs.get(ref.doc_id)
        try:
            if job is None:
                created = Job(
                    doc_id=ref.doc_id,
                    container=ref.container,
                    path=ref.path,
                    version=version,
                    status=JobStatus.QUEUED,
                    created_at=now,
                    updated_at=now,
                ).transition(JobStatus.QUEUED, now, "new blob")
                return Registration(services.jobs.create(created), start=True, reason="new")
            if job.version.etag == version.etag:
                running = job.status.in_progress
                return Registration(job, start=running, reason="in progress" if running else f"already {job.status}")
            if not version.is_newer_than(job.version):
                return Registration(job, start=False, reason="older than the job's version")
            requeued = job.transition(
                JobStatus.QUEUED,
                now,
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
