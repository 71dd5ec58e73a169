"""Ingest a folder once through the local host: the CLI's ``ingest`` (bulk, with progress).

The files take the same path as in Azure: the watcher reports each as a BlobCreated event, the
blob trigger starts ``ingest_document``, and the Durable engine runs the stages. This waits until
every file's job has left the pipeline: terminal, or ``retry_later`` (which a re-drive resumes).
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from ingestion.bootstrap import build_services, using_services
from ingestion.config import Settings
from ingestion.devhost.host import Host
from ingestion.model import DocumentRef, Job

log = logging.getLogger(__name__)
APP_DIR = Path(__file__).resolve().parents[2]  # the folder holding function_app.py and host.json
_POLL_S = 0.2

Progress = Callable[[int, int, Counter[str]], None]


def load_app_module(app_dir: Path = APP_DIR) -> ModuleType:
    """Import ``function_app`` from ``app_dir``, as the Functions host does."""
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    return importlib.import_module("function_app")


def ingest_folder(settings: Settings, *, progress: Progress | None = None, timeout_s: float = 24 * 3600.0) -> list[Job]:
    """Run every file of ``settings.inbox_dir`` through the host; every job once none is in progress."""
    services = build_services(settings)
    try:
        with using_services(services):
            app = load_app_module().app
            host_json = APP_DIR / "host.json"
            host = Host(
                app,
                data_dir=settings.data_dir,
                blob_source=services.blobs,
                port=0,
                activity_workers=settings.host.activity_workers,
                watch_interval_s=settings.host.watch_interval_s,
                host_json=host_json if host_json.is_file() else None,
            )
            deadline = time.monotonic() + timeout_s
            with host:
                host.wait_for_events(timeout_s)  # every file's event handled: its job exists, or it failed
                doc_ids = []
                for blob in services.blobs.list():
                    doc_id = DocumentRef(settings.container, blob.path).doc_id
                    if services.jobs.get(doc_id) is None:
                        log.error("%s: its event could not be handled; see %s", blob.path, host.poison_path)
                    else:
                        doc_ids.append(doc_id)
                while True:
                    # Orchestrations first: once none is active, every job they will update is updated.
                    active = host.engine.query(runtime_status=("Pending", "Running"))
                    jobs = [job for job in map(services.jobs.get, doc_ids) if job is not None]
                    statuses = Counter(job.status.value for job in jobs)
                    done = sum(1 for job in jobs if not job.status.in_progress)
                    if progress:
                        progress(done, len(doc_ids), statuses)
                    if not active:
                        for job in jobs:
                            if job.status.in_progress:  # its orchestration failed: a re-drive resumes it
                                log.error("%s: left %s by a failed orchestration", job.path, job.status)
                        return jobs
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{len(doc_ids) - done} files still in progress after {timeout_s:.0f} s")
                    time.sleep(_POLL_S)
    finally:
        services.close()
