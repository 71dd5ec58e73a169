"""Ingesting every file of a blob source at once (the CLI's ``ingest``), on a pool of threads.

Threads suffice: parsing runs in child processes, and the rest waits on I/O or releases the GIL.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

from ingestion.jobs import register_version
from ingestion.model import DocumentRef, Job
from ingestion.pipeline import RetryPolicy, run_document
from ingestion.services import Services
from ingestion.stages import StageRequest

Progress = Callable[[int, int, Job | None], None]


def ingest_all(
    services: Services,
    *,
    prefix: str = "",
    workers: int = 2,
    policy: RetryPolicy | None = None,
    progress: Progress | None = None,
) -> list[Job]:
    """Register every blob under ``prefix``, run what needs running, and return every job at the end."""
    doc_ids: list[str] = []
    pending: list[StageRequest] = []
    for blob in services.blobs.list(prefix):
        registration = register_version(services, DocumentRef(services.blobs.container, blob.path), blob.version)
        doc_ids.append(registration.job.doc_id)
        if registration.start:
            pending.append(StageRequest(registration.job.doc_id, registration.job.version.etag))
    done = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest") as pool:
        futures = [pool.submit(run_document, services, request, policy) for request in pending]
        for future in as_completed(futures):
            done += 1
            if progress:
                progress(done, len(pending), future.result())  # run_document records, never raises
    jobs = [services.jobs.get(doc_id) for doc_id in doc_ids]
    return [job for job in jobs if job is not None]
