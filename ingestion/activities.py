"""The bodies of the Durable activities: run one stage, answer with a small JSON envelope.

Expected failures become envelopes (``IngestionError.to_payload``) for the orchestrator's retry
policy; anything else (a bug) raises, so the activity's ``RetryOptions`` net catches it. A transient
failure is counted on the job at once, so "is my file in yet?" shows the retrying stage and its
reason while the orchestrator waits. Outcomes are recorded by ``record_outcome`` only.

Each activity is one span of its run's trace (``telemetry``), and ``record_outcome`` closes the
run: documents finished by outcome and reason, end-to-end latency, and the run's root span.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ingestion import errors, telemetry
from ingestion.errors import IngestionError, Superseded, TransientError
from ingestion.model import Job, JobStatus, from_iso
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
from ingestion.stages.persist import PersistResult, repair_index
from ingestion.telemetry import names
from ingestion.workflow import (
    CHUNK_DOCUMENT,
    EMBED_CHUNKS,
    FETCH_BLOB,
    PARSE_DOCUMENT,
    PERSIST_CHUNKS,
    RECORD_OUTCOME,
    attempt_of,
    instance_of,
)

log = logging.getLogger(__name__)

STAGES: dict[str, Callable[[Services, StageRequest], Any]] = {
    FETCH_BLOB: fetch_blob,
    PARSE_DOCUMENT: parse_document,
    CHUNK_DOCUMENT: chunk_document,
    EMBED_CHUNKS: embed_chunks,
    PERSIST_CHUNKS: persist_chunks,
}


def run_stage(
    services: Services, stage: str, payload: dict[str, Any], traceparent: str | None = None
) -> dict[str, Any]:
    """Run ``stage`` for the request in ``payload``; its result's payload, or an error envelope.
    ``traceparent``: the invocation's W3C trace context, linked from the stage's span."""
    request = StageRequest.from_payload(payload)
    with telemetry.current().activity(
        stage, request.doc_id, request.etag, instance_of(payload), traceparent=traceparent, attempt=attempt_of(payload)
    ) as scope:
        try:
            result = STAGES[stage](services, request)
        except TransientError as error:
            log.warning("%s %s: transient (%s): %s", request.doc_id, stage, error.code, error.message)
            scope.ended("transient", error.code)
            _note_attempt(services, request, stage, error)
            return error.to_payload()
        except IngestionError as error:
            log.info("%s %s: %s: %s", request.doc_id, stage, error.kind, error.message)
            scope.ended(error.kind, error.to_payload().get("code"))
            return error.to_payload()
        return {"ok": True, "result": result.to_payload()}


def record_outcome(services: Services, payload: dict[str, Any], traceparent: str | None = None) -> dict[str, Any]:
    """Record how the run ended (``indexed``, ``failed`` or ``retry_later``): an envelope whose result
    is the job's new state, or a transient error envelope when the job store is failing."""
    request = StageRequest.from_payload(payload["request"])
    instance_id = instance_of(payload["request"])
    current = telemetry.current()
    attempt = attempt_of(payload)
    with current.activity(
        RECORD_OUTCOME, request.doc_id, request.etag, instance_id, traceparent=traceparent, attempt=attempt
    ) as scope:
        try:
            before = services.jobs.get(request.doc_id)
            recorded, job = _record(services, payload)
        except TransientError as error:
            log.warning("recording the outcome failed: %s", error.message)
            scope.ended("transient", error.code)
            return error.to_payload()
        # Count the run's end once. A delivery that wrote nothing new (Durable's at-least-once, the
        # crash net) is a repeat, unless an earlier try may have written and lost its reply.
        wrote = job is None or before is None or before.etag != job.etag
        if wrote or (attempt or 1) > 1:
            _finished(services, current, recorded, job, instance_id)
        return {"ok": True, "result": recorded}


def _record(services: Services, payload: dict[str, Any]) -> tuple[dict[str, Any], Job | None]:
    request = StageRequest.from_payload(payload["request"])
    stage, outcome = str(payload["stage"]), str(payload["outcome"])
    try:
        if outcome == "indexed":
            job = record_success(services, request, PersistResult.from_payload(payload["result"]))
        else:
            error = errors.from_payload(payload["error"])
            retry_at = from_iso(payload["retry_at"]) if outcome == "retry_later" else None
            recorded = record_failure(services, request, stage, error, retry_at=retry_at)
            if recorded is None:
                return {"status": "superseded", "stage": stage}, None
            job = recorded
    except Superseded as superseded:
        if outcome == "indexed":
            repair_index(services, request.doc_id)  # deleted or overtaken after persist: leave the index right
        return {"status": "superseded", "stage": stage, "message": superseded.message}, None
    reason = job.last_error.code if job.last_error else None
    return {"status": job.status.value, "stage": stage, "reason": reason, "chunks": job.chunk_count}, job


def _finished(
    services: Services, current: telemetry.Telemetry, recorded: dict[str, Any], job: Job | None, instance_id: str | None
) -> None:
    """The run's end in metrics and in its trace; never an error of the activity's (the outcome is
    recorded already: a raise here would make the crash net record it again)."""
    try:
        _report_finished(services, current, recorded, job, instance_id)
    except Exception as error:  # noqa: BLE001 -- telemetry must not fail ingestion
        log.warning("%s: the run's end was not reported: %s", recorded.get("status"), error)


def _report_finished(
    services: Services, current: telemetry.Telemetry, recorded: dict[str, Any], job: Job | None, instance_id: str | None
) -> None:
    """The run's end in metrics and in its trace: the document's outcome and reason, the time from
    the blob's last write to searchable, and the ``ingest_document`` span from queued to now."""
    outcome, reason = str(recorded["status"]), recorded.get("reason")
    current.finished.add(1, {names.OUTCOME: outcome, names.REASON: reason or "none"})
    log.info("%s: run finished: %s%s", job.doc_id if job else "document", outcome, f" ({reason})" if reason else "")
    if job is None or not instance_id:
        return
    now = services.clock()
    if job.status is JobStatus.INDEXED:
        current.e2e_latency.record(max(0.0, (now - job.version.last_modified).total_seconds()))
    queued = job.queued_at
    attributes = {
        names.DOC_ID: job.doc_id,
        names.VERSION: job.version.etag,
        names.INSTANCE_ID: instance_id,
        names.OUTCOME: outcome,
        names.REASON: reason,
        names.STAGE: recorded.get("stage"),
        names.CHUNKS: job.chunk_count,
        names.PATH: job.path,
    }
    current.run_span(names.SPAN_ORCHESTRATION, instance_id, min(queued, now), attributes, root=True)


def _note_attempt(services: Services, request: StageRequest, stage: str, error: TransientError) -> None:
    try:
        record_failure(services, request, stage, error)
    except IngestionError as failure:  # the job store is failing too: the envelope still goes back
        log.warning("%s %s: could not record the attempt: %s", request.doc_id, stage, failure.message)
