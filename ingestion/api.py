"""What the HTTP endpoints and the CLI answer: search with citations, and document status."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ingestion.model import Job, JobStatus
from ingestion.ports import JobStore, SearchFilter, SearchHit, SearchMode, SearchQuery
from ingestion.reconcile_run import ACTIONS as RECONCILER_ACTIONS
from ingestion.reconcile_run import Report
from ingestion.retry import SDK_RETRIES, THROTTLED
from ingestion.services import Services
from ingestion.telemetry import BACKLOG, JOB_COUNTS, untraced


def search(
    services: Services,
    text: str,
    *,
    top: int = 5,
    mode: SearchMode = SearchMode.HYBRID,
    search_filter: SearchFilter | None = None,
) -> list[SearchHit]:
    """The chunks that best answer ``text``; each hit carries path, page span and ordinal to cite."""
    vector = None
    if mode is not SearchMode.KEYWORD:
        vector = services.embedder.embed([text]).vectors[0]
    query = SearchQuery(text=text, vector=vector, mode=mode, top=top, filter=search_filter or SearchFilter())
    return services.index.search(query)


def citation(hit: SearchHit) -> str:
    """``path, p. 3-4 (chunk 7)``: where a hit comes from, for a person."""
    pages = ""
    if hit.page_start is not None:
        pages = (
            f", p. {hit.page_start}"
            if hit.page_end in (None, hit.page_start)
            else f", pp. {hit.page_start}-{hit.page_end}"
        )
    return f"{hit.path}{pages} (chunk {hit.ordinal})"


def health(services: Services) -> dict[str, Any]:
    """Jobs by status (at most 10 s old); since the process started, how often each Azure SDK retried by itself, the
    429s each service answered and the reconciler's actions by rule; the backlog's age as the
    reconciler last saw it (``None`` before its first full job sweep). The same figures as the metrics."""
    return {
        "status": "ok",
        "jobs": dict(JOB_COUNTS.read(untraced(services.jobs))),  # at most 10 s old: probes do not query each time
        "sdk_retries": SDK_RETRIES.snapshot(),
        "throttled": THROTTLED.snapshot(),
        "reconciler_actions": RECONCILER_ACTIONS.snapshot(),
        "backlog_age_s": BACKLOG.age_s(),
    }


def report_payload(report: Report) -> dict[str, Any]:
    """A reconciler pass as JSON: every action with its rule, reason and outcome."""
    return {
        "actions": [
            {
                "rule": action.rule.value,
                "doc_id": action.doc_id,
                "path": action.path,
                "reason": action.reason,
                "outcome": outcome,
            }
            for action, outcome in report.actions
        ],
        "by_rule": report.by_rule(),
        "seen": dict(report.seen),
        "finished_sweeps": report.finished_sweeps,
        "failed_sweeps": report.failed_sweeps,
        "purged_histories": report.purged_histories,
        "collected_artifacts": report.collected_artifacts,
    }


def all_jobs(jobs: JobStore, status: JobStatus | None = None) -> Iterator[Job]:
    """Every job (with ``status``), page after page."""
    continuation: str | None = None
    while True:
        page = jobs.list(status, continuation=continuation)
        yield from page.jobs
        if page.continuation is None:
            return
        continuation = page.continuation


def job_status(job: Job) -> dict[str, Any]:
    """One document's state for "is my file in yet, and if not, why?"."""
    error = job.last_error
    return {
        "doc_id": job.doc_id,
        "path": job.path,
        "status": job.status.value,
        "reason": error.code if error and job.status is not JobStatus.INDEXED else None,
        "message": error.message if error and job.status is not JobStatus.INDEXED else None,
        "stage": error.stage if error and job.status is not JobStatus.INDEXED else None,
        "chunks": job.chunk_count,
        "updated_at": job.updated_at.isoformat(),
    }
