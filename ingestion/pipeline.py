"""Runs one document through every stage in-process, with retries: the local, synchronous runner.

The Durable orchestrator (``workflow.py``) sequences the same stages as activities and waits with
durable timers; this runner serves tests and library callers that want one document done in
process, without a host. Both apply ``RetryPolicy`` (``retry.py``): retry transient failures
with exponential backoff and jitter, honouring ``retry_after``; when retries run out, or the service
asks for a longer wait than a worker should sleep, leave the job in ``retry_later`` (never terminal);
end permanent failures at once; stop quietly when superseded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from ingestion.activities import STAGES
from ingestion.errors import IngestionError, PermanentError, Superseded, TransientError
from ingestion.model import Job
from ingestion.retry import RetryPolicy, jitter_for
from ingestion.services import Services
from ingestion.stages import StageRequest, record_failure, record_success

log = logging.getLogger(__name__)


def run_document(services: Services, request: StageRequest, policy: RetryPolicy | None = None) -> Job | None:
    """Drive ``request`` to an outcome; returns the job as recorded, or ``None`` if superseded.

    Never raises for a file's or a service's failure: when even recording the outcome fails, the
    job is left in its in-progress state, which a re-drive (or the reconciler) picks up.
    """
    policy = policy or services.settings.retry
    try:
        result: Any = None
        for step in STAGES.items():
            result = _run_stage(services, request, step, policy)
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
            record_failure(services, request, name, error)  # counts the attempt, as an activity does
            delay = policy.next_delay(
                attempt, error.retry_after, jitter_for(request.doc_id, request.etag, name, str(attempt))
            )
            if delay is None:
                _give_up(services, request, name, error, policy.retry_later_delay(error.retry_after))
                return None
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
