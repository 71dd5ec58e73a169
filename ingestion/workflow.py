"""The orchestrator ``ingest_document``: stage sequencing and the retry policy, with no I/O.

Each stage is one activity call whatever the document's size (activities batch inside), so an
orchestration's history stays small: a 500-page file replays as cheaply as a one-page one.
Activities answer with an envelope (``errors.py``): ``{"ok": true, "result": ...}``, or
``{"ok": false, "kind": "transient" | "permanent" | "superseded", "code", "message", "retry_after_s"}``.
Exception types do not survive the trip from activity to orchestrator, and Python's ``RetryOptions``
has a constant interval and no filter, so the policy for expected failures lives here: transient ->
durable timer with exponential backoff and jitter (derived from the instance id and attempt, since
an orchestrator must replay identically), honouring ``retry_after``; spent -> ``retry_later``;
permanent -> recorded at once; superseded -> stop without writing. Recording the outcome is retried
the same way. ``RetryOptions`` on every call is only the net for crashes (an activity that raised);
a stage still crashing after it leaves the job in ``retry_later`` for a re-drive rather than failing
the orchestration.

Determinism: no clock but ``context.current_utc_datetime``, no randomness, no I/O.
"""

from __future__ import annotations

from collections.abc import Generator
from datetime import timedelta
from typing import Any

import azure.durable_functions as df

from ingestion.errors import TransientError
from ingestion.model import to_iso
from ingestion.retry import RetryPolicy, jitter_for

# Activity names: the single place they are spelled (function_app.py registers these names).
FETCH_BLOB = "fetch_blob"
PARSE_DOCUMENT = "parse_document"
CHUNK_DOCUMENT = "chunk_document"
EMBED_CHUNKS = "embed_chunks"
PERSIST_CHUNKS = "persist_chunks"
RECORD_OUTCOME = "record_outcome"
STAGE_ACTIVITIES = (FETCH_BLOB, PARSE_DOCUMENT, CHUNK_DOCUMENT, EMBED_CHUNKS, PERSIST_CHUNKS)
ORCHESTRATOR = "ingest_document"
INSTANCE_KEY = "instance_id"  # in a stage request: the run it belongs to
ATTEMPT_KEY = "attempt"  # in an activity's input: which try of it this is (1 first)

# The crash net: an activity that raises (a bug, a killed worker) is tried this many times in all.
CRASH_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=5_000, max_number_of_attempts=3)


def orchestration_input(request: dict[str, Any], policy: RetryPolicy) -> dict[str, Any]:
    """What the starter passes to ``ingest_document``: the stage request and the retry policy."""
    return {"request": request, "policy": policy.to_payload()}


def instance_of(request: dict[str, Any]) -> str | None:
    """The orchestration instance a stage request comes from (its trace), if the request names it."""
    found = request.get(INSTANCE_KEY)
    return str(found) if found else None


def attempt_of(payload: dict[str, Any]) -> int | None:
    """Which try of an activity ``payload`` is for (``None`` when the caller did not say)."""
    found = payload.get(ATTEMPT_KEY)
    return int(found) if isinstance(found, int) else None


def ingest_document(context: Any) -> Generator[Any, Any, Any]:
    """fetch -> parse -> chunk -> embed -> persist, then record the outcome on the job."""
    data = context.get_input()
    # Activities learn their run's instance id from the request: their spans join its trace.
    request: dict[str, Any] = data["request"] | {INSTANCE_KEY: context.instance_id}
    policy = RetryPolicy.from_payload(data["policy"])
    result: Any = None
    for stage in STAGE_ACTIVITIES:
        envelope = yield from _call(context, policy, stage, request)
        if envelope["ok"]:
            result = envelope.get("result")
            continue
        if envelope["kind"] == "superseded":
            return {"status": "superseded", "stage": stage, "message": envelope.get("message")}
        if envelope["kind"] == "permanent":
            outcome = _outcome(request, stage, "failed", error=envelope)
        else:  # transient, retries spent: wait for a re-drive
            wait = policy.retry_later_delay(envelope.get("retry_after_s"))
            due = to_iso(context.current_utc_datetime + timedelta(seconds=wait))
            outcome = _outcome(request, stage, "retry_later", error=envelope, retry_at=due)
        break
    else:
        outcome = _outcome(request, PERSIST_CHUNKS, "indexed", result=result)
    recorded = yield from _call(context, policy, RECORD_OUTCOME, outcome)
    if recorded["ok"]:
        return recorded["result"]
    # The job store kept failing: the job stays in progress, where a re-drive resumes it.
    return {"status": "unrecorded", "outcome": outcome["outcome"], "error": recorded}


def _call(context: Any, policy: RetryPolicy, name: str, payload: dict[str, Any]) -> Generator[Any, Any, Any]:
    """Call activity ``name`` until it answers ok, permanent or superseded, or its retries are spent.

    Transient answers wait on a durable timer first. The last envelope is returned; an activity
    that kept crashing past ``CRASH_RETRY`` comes back as a spent transient envelope.
    """
    attempt = 1
    while True:
        try:
            # Which try this is travels with the request: the activity's span says so, and
            # record_outcome counts a run's end once even when a reply was lost and it runs again.
            attempt_payload = payload | {ATTEMPT_KEY: attempt}
            envelope: dict[str, Any] = yield context.call_activity_with_retry(name, CRASH_RETRY, attempt_payload)
        except Exception as crash:  # noqa: BLE001 -- activity failures arrive as plain Exception
            return TransientError(f"{name} kept crashing: {str(crash)[:500]}", code="activity_crashed").to_payload()
        if envelope["ok"] or envelope["kind"] != "transient":
            break
        retry_after = envelope.get("retry_after_s")
        delay = policy.next_delay(attempt, retry_after, jitter_for(context.instance_id, name, str(attempt)))
        if delay is None:
            break
        context.set_custom_status({"activity": name, "attempt": attempt, "retry_in_s": round(delay, 3)})
        yield context.create_timer(context.current_utc_datetime + timedelta(seconds=delay))
        attempt += 1
    if attempt > 1:
        context.set_custom_status(None)  # the retry it described is over
    return envelope


def _outcome(
    request: dict[str, Any],
    stage: str,
    outcome: str,
    *,
    result: Any = None,
    error: dict[str, Any] | None = None,
    retry_at: str | None = None,
) -> dict[str, Any]:
    found = {"request": request, "stage": stage, "outcome": outcome, "result": result, "error": error}
    return found | ({"retry_at": retry_at} if retry_at else {})
