"""Runs one document through every stage in-process, with retries: the local, synchronous runner.

The Durable orchestrator sequences the same stages as activities and waits with durable timers;
this runner serves the CLI and tests on one machine. Both share the rules: retry transient failures
with exponential backoff and jitter, honouring ``retry_after``; when retries run out, or the service
asks for a longer wait than a worker should sleep, leave the job in ``retry_later`` (never terminal);
end permanent failures at once; stop quietly when superseded.
"""

from __future__ import annotations

import logging
import random
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
    max_delay_s: float = 30.0  # the longest a worker sleeps in-process; longer waits go to retry_later
    retry_later_s: float = 300.0  # when a re-drive should pick the job up again, at the soonest

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Exponential backoff with "equal jitter": between half and all of the exponential step."""
        step = min(self.max_delay_s, self.first_delay_s * float(2 ** (attempt - 1)))
        return step / 2 + rng.uniform(0, step / 2)


def run_document(services: Services, request: StageRequest, policy: RetryPolicy | None = None) -> Job | None:
    """Drive ``request`` to an outcome; returns the job as recorded, or ``None`` if superseded.

    Never raises for a file's or a service's failure: when even recording the outcome fails, the
    job is left in its in-progress state, which a re-drive (or the reconciler) picks up.
    """
    policy = policy or RetryPolicy()
    rng = random.Random(f"{request.doc_id}/{request.etag}")  # jitter only: reproducible per document version
    try:
        result: Any = None
        for step in STAGES:
            result = _run_stage(services, request, step, policy, rng)
            if result is None:
                return services.jobs.get(request.doc_id)
        return record_success(services, request, result)
    except Superseded as superseded:
        log.info("stopped: %s", superseded.message)
        return None
    except IngestionError as error:
        log.error("%s: could not record the outcome (%s); a re-drive will resume it", request.doc_id, error.message)
        return None


def _run_stage(
    services: Services,
    request: StageRequest,
    step: tuple[str, Callable[[Services, StageRequest], Any]],
    policy: RetryPolicy,
    rng: random.Random,
) -> Any:
    """The stage's result, or ``None`` once its failure has been recorded on the job."""
    name, stage = step
    for attempt in range(1, policy.attempts + 1):
        try:
            return stage(services, request)
        except Superseded:
            raise
        except PermanentError as error:
            record_failure(services, request, name, error)
            return None
        except TransientError as error:
            delay = max(policy.delay(attempt, rng), error.retry_after or 0.0)
            if attempt == policy.attempts or delay > policy.max_delay_s:
                _give_up(services, request, name, error, max(policy.retry_later_s, error.retry_after or 0.0))
                return None
            record_failure(services, request, name, error)
            log.warning("%s %s: transient (%s), retry %d in %.1fs", request.doc_id, name, error.message, attempt, delay)
            services.sleep(delay)
        except Exception as error:
            # A bug must not lose the file: it is logged with its traceback and waits in retry_later.
            log.exception("%s %s: unexpected error", request.doc_id, name)
            unexpected = TransientError(f"unexpected {type(error).__name__}: {error}", code="unexpected")
            _give_up(services, request, name, unexpected, policy.retry_later_s)
            return None
    return None


def _give_up(services: Services, request: StageRequest, name: str, error: IngestionError, wait_s: float) -> None:
    record_failure(services, request, name, error, retry_at=services.clock() + timedelta(seconds=wait_s))
