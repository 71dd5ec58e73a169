"""Runs one document through every stage in-process, with retries: the local, synchronous runner.

The Durable orchestrator (``workflow.py``) sequences the same stages as activities and waits with
durable timers; this runner serves the CLI and tests on one machine. Both share the rules: retry
transient failures with exponential backoff (honouring ``retry_after``), then leave the job in
``retry_later``; end permanent ones at once; stop quietly when superseded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from ingestion.errors import IngestionError, PermanentError, Superseded, TransientError
from ingestion.model import Job
from ingestion.services import Services
from ingestion.stages import (
    StageRequest,
    chunk_document,
    embed_chunks,
    fetch_blob,
    parse_document,
    persist_chunks,
    record_failure,
    record_success,
)
from ingestion.stages.common import current_job

log = logging.getLogger(__name__)

STAGES: tuple[tuple[str, Callable[[Services, StageRequest], Any]], ...] = (
    ("fetch", fetch_blob),
    ("parse", parse_document),
    ("chunk", chunk_document),
    ("embed", embed_chunks),
    ("persist", persist_chunks),
)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # per stage, the first try included
    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    retry_later_s: float = 300.0  # when the reconciler should pick the job up again

    def delay(self, attempt: int, retry_after: float | None) -> float:
        backoff = min(self.max_delay_s, self.first_delay_s * 2 ** (attempt - 1))
        return float(max(backoff, retry_after or 0.0))


def run_document(services: Services, request: StageRequest, policy: RetryPolicy | None = None) -> Job | None:
    """Drive ``request`` to an outcome; returns the job as recorded, or ``None`` if superseded."""
    policy = policy or RetryPolicy()
    try:
        for name, stage in STAGES:
            result = _run_stage(services, request, name, stage, policy)
            if result is None:
                return services.jobs.get(request.doc_id)
            if name == "fetch" and result.unchanged:
                job = current_job(services, request)
                return record_success(services, request, job.chunk_count, job.chunk_ids_digest or "")
        return record_success(services, request, result.chunks, result.chunk_ids_digest)
    except Superseded as superseded:
        log.info("stopped: %s", superseded.message)
        return None


def _run_stage(
    services: Services,
    request: StageRequest,
    name: str,
    stage: Callable[[Services, StageRequest], Any],
    policy: RetryPolicy,
) -> Any:
    """The stage's result, or ``None`` once its failure has been recorded on the job."""
    for attempt in range(1, policy.attempts + 1):
        try:
            return stage(services, request)
        except Superseded:
            raise
        except PermanentError as error:
            record_failure(services, request, name, error)
            return None
        except TransientError as error:
            if attempt == policy.attempts:
                _give_up(services, request, name, error, policy)
                return None
            record_failure(services, request, name, error)
            delay = policy.delay(attempt, error.retry_after)
            log.warning("%s %s: transient (%s), retry %d in %.1fs", request.doc_id, name, error.message, attempt, delay)
            services.sleep(delay)
        except Exception as error:
            log.exception("%s %s: unexpected error", request.doc_id, name)
            _give_up(
                services,
                request,
                name,
                TransientError(f"unexpected {type(error).__name__}: {error}", code="unexpected"),
                policy,
            )
            return None
    return None


def _give_up(services: Services, request: StageRequest, name: str, error: IngestionError, policy: RetryPolicy) -> None:
    retry_at = services.clock() + timedelta(seconds=policy.retry_later_s)
    record_failure(services, request, name, error, retry_at=retry_at)
