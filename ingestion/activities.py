"""The bodies of the Durable activities: run one stage, answer with a small JSON envelope.

Expected failures become envelopes (``IngestionError.to_payload``) for the orchestrator's retry
policy; anything else (a bug) raises, so the activity's ``RetryOptions`` net catches it. A transient
failure is counted on the job at once, so "is my file in yet?" shows the retrying stage and its
reason while the orchestrator waits. Outcomes are recorded by ``record_outcome`` only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ingestion import errors
from ingestion.errors import IngestionError, Superseded, TransientError
from ingestion.model import from_iso
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
from ingestion.workflow import CHUNK_DOCUMENT, EMBED_CHUNKS, FETCH_BLOB, PARSE_DOCUMENT, PERSIST_CHUNKS

log = logging.getLogger(__name__)

STAGES: dict[str, Callable[[Services, StageRequest], Any]] = {
    FETCH_BLOB: fetch_blob,
    PARSE_DOCUMENT: parse_document,
    CHUNK_DOCUMENT: chunk_document,
    EMBED_CHUNKS: embed_chunks,
    PERSIST_CHUNKS: persist_chunks,
}


def run_stage(services: Services, stage: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Run ``stage`` for the request in ``payload``; its result's payload, or an error envelope."""
    request = StageRequest.from_payload(payload)
    try:
        result = STAGES[stage](services, request)
    except TransientError as error:
        log.warning("%s %s: transient (%s): %s", request.doc_id, stage, error.code, error.message)
        _note_attempt(services, request, stage, error)
        return error.to_payload()
    except IngestionError as error:
        log.info("%s %s: %s: %s", request.doc_id, stage, error.kind, error.message)
        return error.to_payload()
    return {"ok": True, "result": result.to_payload()}


def record_outcome(services: Services, payload: dict[str, Any]) -> dict[str, Any]:
    """Record how the run ended (``indexed``, ``failed`` or ``retry_later``): an envelope whose result
    is the job's new state, or a transient error envelope when the job store is failing."""
    try:
        return {"ok": True, "result": _record(services, payload)}
    except TransientError as error:
        log.warning("recording the outcome failed: %s", error.message)
        return error.to_payload()


def _record(services: Services, payload: dict[str, Any]) -> dict[str, Any]:
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
                return {"status": "superseded", "stage": stage}
            job = recorded
    except Superseded as superseded:
        if outcome == "indexed":
            repair_index(services, request.doc_id)  # deleted or overtaken after persist: leave the index right
        return {"status": "superseded", "stage": stage, "message": superseded.message}
    reason = job.last_error.code if job.last_error else None
    return {"status": job.status.value, "stage": stage, "reason": reason, "chunks": job.chunk_count}


def _note_attempt(services: Services, request: StageRequest, stage: str, error: TransientError) -> None:
    try:
        record_failure(services, request, stage, error)
    except IngestionError as failure:  # the job store is failing too: the envelope still goes back
        log.warning("%s %s: could not record the attempt: %s", request.doc_id, stage, failure.message)
