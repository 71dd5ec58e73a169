"""The orchestrator's sequencing and retry policy, driven step by step with a recording context."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ingestion.errors import PermanentError, ReasonCode, Superseded, TransientError
from ingestion.model import from_iso
from ingestion.retry import RetryPolicy, jitter_for
from ingestion.workflow import (
    CRASH_RETRY,
    EMBED_CHUNKS,
    FETCH_BLOB,
    PERSIST_CHUNKS,
    RECORD_OUTCOME,
    STAGE_ACTIVITIES,
    ingest_document,
    orchestration_input,
)

REQUEST = {"doc_id": "doc-1", "etag": "etag-1"}
POLICY = RetryPolicy(attempts=3, first_delay_s=2.0, max_delay_s=30.0, retry_later_s=600.0)
OK = {"ok": True, "result": {"chunks": 1}}


def recorded(status: str) -> dict[str, Any]:
    """record_outcome's answer: the job's new state."""
    return {"ok": True, "result": {"status": status}}


PERSISTED = {"ok": True, "result": {"chunks": 3, "upserted": 3, "deleted": 0, "chunk_ids_digest": "d"}}


@dataclass
class RecordingContext:
    """Just enough of DurableOrchestrationContext: records what the orchestrator asks for."""

    input: dict[str, Any]
    instance_id: str = "doc-1-abc"
    current_utc_datetime: datetime = datetime(2026, 11, 1, tzinfo=UTC)
    custom_status: Any = None
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def get_input(self) -> dict[str, Any]:
        return self.input

    def call_activity_with_retry(self, name: str, options: Any, payload: Any) -> tuple[str, str, Any]:
        assert options is CRASH_RETRY
        self.calls.append((name, payload))
        return ("activity", name, payload)

    def create_timer(self, fire_at: datetime) -> tuple[str, datetime]:
        self.calls.append(("timer", fire_at))
        return ("timer", fire_at)

    def set_custom_status(self, status: Any) -> None:
        self.custom_status = status


def drive(answers: dict[str, list[Any]]) -> tuple[RecordingContext, Any]:
    """Run the orchestrator, answering each activity from ``answers[name]`` in turn."""
    context = RecordingContext(orchestration_input(REQUEST, POLICY))
    generator: Generator[Any, Any, Any] = ingest_document(context)
    sent: Any = None
    throw: BaseException | None = None
    while True:
        try:
            task = generator.throw(throw) if throw else generator.send(sent)
        except StopIteration as done:
            return context, done.value
        throw, sent = None, None
        if task[0] == "timer":
            context.current_utc_datetime = task[1]
            continue
        answer = answers[task[1]].pop(0)
        if isinstance(answer, BaseException):
            throw = answer
        else:
            sent = answer


def names(context: RecordingContext) -> list[str]:
    return [name for name, _ in context.calls]


def test_happy_path_calls_each_stage_once_then_records_indexed() -> None:
    """Every stage runs once with the same request, then record_outcome gets the persist result."""
    answers: dict[str, list[Any]] = {name: [OK] for name in STAGE_ACTIVITIES}
    answers[PERSIST_CHUNKS] = [PERSISTED]
    answers[RECORD_OUTCOME] = [recorded("indexed")]
    context, output = drive(answers)
    assert names(context) == [*STAGE_ACTIVITIES, RECORD_OUTCOME]
    # Each request names its run, so the activities' spans join the run's trace, and its try.
    assert all(payload == REQUEST | {"instance_id": "doc-1-abc", "attempt": 1} for name, payload in context.calls[:5])
    outcome = context.calls[-1][1]
    assert outcome["outcome"] == "indexed"
    assert outcome["result"] == PERSISTED["result"]
    assert output == {"status": "indexed"}


def test_transient_failure_waits_on_a_durable_timer_and_retries() -> None:
    """A transient envelope is retried after a timer of the policy's jittered backoff."""
    transient = TransientError("503", code="http_503").to_payload()
    answers: dict[str, list[Any]] = {name: [OK] for name in STAGE_ACTIVITIES}
    answers[EMBED_CHUNKS] = [transient, transient, OK]
    answers[PERSIST_CHUNKS] = [PERSISTED]
    answers[RECORD_OUTCOME] = [recorded("indexed")]
    context, _ = drive(answers)
    assert names(context).count(EMBED_CHUNKS) == 3
    timers = [value for name, value in context.calls if name == "timer"]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    first = POLICY.delay(1, jitter_for("doc-1-abc", EMBED_CHUNKS, "1"))
    second = POLICY.delay(2, jitter_for("doc-1-abc", EMBED_CHUNKS, "2"))
    assert timers == [start + timedelta(seconds=first), start + timedelta(seconds=first + second)]
    assert 1.0 <= first <= 2.0
    assert 2.0 <= second <= 4.0


def test_retry_after_longer_than_the_backoff_is_honoured() -> None:
    """The service's retry_after wins over a shorter backoff step."""
    throttled = TransientError("429", retry_after=17.0, code="http_429").to_payload()
    answers: dict[str, list[Any]] = {name: [OK] for name in STAGE_ACTIVITIES}
    answers[FETCH_BLOB] = [throttled, OK]
    answers[PERSIST_CHUNKS] = [PERSISTED]
    answers[RECORD_OUTCOME] = [recorded("indexed")]
    context, _ = drive(answers)
    timers = [value for name, value in context.calls if name == "timer"]
    assert timers == [datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=17.0)]


def test_spent_retries_end_in_retry_later_with_a_due_time() -> None:
    """After the policy's attempts the job is recorded retry_later, due after retry_later_s."""
    transient = TransientError("timeout", code="timeout").to_payload()
    answers: dict[str, list[Any]] = {
        FETCH_BLOB: [transient] * POLICY.attempts,
        RECORD_OUTCOME: [recorded("retry_later")],
    }
    context, output = drive(answers)
    assert names(context).count(FETCH_BLOB) == POLICY.attempts
    # Each try says which it is (its span shows it; record_outcome uses it to count a run's end once)
    assert [payload["attempt"] for name, payload in context.calls if name == FETCH_BLOB] == [1, 2, 3]
    outcome = context.calls[-1][1]
    assert (outcome["outcome"], outcome["stage"], outcome["error"]["code"]) == ("retry_later", FETCH_BLOB, "timeout")
    assert from_iso(outcome["retry_at"]) == context.current_utc_datetime + timedelta(seconds=POLICY.retry_later_s)
    assert output == {"status": "retry_later"}


def test_a_wait_longer_than_max_delay_goes_to_retry_later_at_once() -> None:
    """A retry_after beyond max_delay_s is not slept on in the orchestration: retry_later, due then."""
    throttled = TransientError("quota", retry_after=3600.0, code="http_429").to_payload()
    answers: dict[str, list[Any]] = {FETCH_BLOB: [throttled], RECORD_OUTCOME: [recorded("retry_later")]}
    context, _ = drive(answers)
    assert "timer" not in names(context)
    outcome = context.calls[-1][1]
    assert from_iso(outcome["retry_at"]) == datetime(2026, 11, 1, tzinfo=UTC) + timedelta(seconds=3600.0)


@pytest.mark.parametrize("stage", STAGE_ACTIVITIES)
def test_permanent_failure_is_recorded_at_once(stage: str) -> None:
    """A permanent envelope from any stage is recorded without retrying or running later stages."""
    permanent = PermanentError(ReasonCode.CORRUPT, "broken").to_payload()
    answers: dict[str, list[Any]] = {name: [OK] for name in STAGE_ACTIVITIES}
    answers[stage] = [permanent]
    answers[RECORD_OUTCOME] = [recorded("needs_review")]
    context, output = drive(answers)
    ran = names(context)
    assert ran == [*STAGE_ACTIVITIES[: STAGE_ACTIVITIES.index(stage) + 1], RECORD_OUTCOME]
    outcome = context.calls[-1][1]
    assert (outcome["outcome"], outcome["stage"], outcome["error"]["code"]) == ("failed", stage, "corrupt")
    assert output == {"status": "needs_review"}


def test_superseded_stops_without_recording() -> None:
    """A superseded run stops quietly: no later stage, no outcome written."""
    answers: dict[str, list[Any]] = {FETCH_BLOB: [OK], "parse_document": [Superseded("newer").to_payload()]}
    context, output = drive(answers)
    assert names(context) == [FETCH_BLOB, "parse_document"]
    assert output["status"] == "superseded"


def test_an_activity_that_keeps_crashing_leaves_the_job_in_retry_later() -> None:
    """When the crash net's attempts are spent the job waits for a re-drive, never lost."""
    answers: dict[str, list[Any]] = {FETCH_BLOB: [Exception("KeyError: 'x' \n Traceback ...")]}
    answers[RECORD_OUTCOME] = [recorded("retry_later")]
    context, _ = drive(answers)
    outcome = context.calls[-1][1]
    assert (outcome["outcome"], outcome["error"]["code"]) == ("retry_later", "activity_crashed")


def test_recording_is_retried_and_a_failing_job_store_leaves_the_run_unrecorded() -> None:
    """record_outcome's transient failures are retried on timers; when spent the run says so."""
    store_down = TransientError("job store 503", code="http_503").to_payload()
    answers: dict[str, list[Any]] = {name: [OK] for name in STAGE_ACTIVITIES}
    answers[PERSIST_CHUNKS] = [PERSISTED]
    answers[RECORD_OUTCOME] = [store_down, recorded("indexed")]
    context, output = drive(answers)
    assert names(context)[-3:] == [RECORD_OUTCOME, "timer", RECORD_OUTCOME]
    assert output == {"status": "indexed"}
    answers = {name: [OK] for name in STAGE_ACTIVITIES}
    answers[PERSIST_CHUNKS] = [PERSISTED]
    answers[RECORD_OUTCOME] = [store_down] * POLICY.attempts
    context, output = drive(answers)
    assert (output["status"], output["outcome"]) == ("unrecorded", "indexed")
    assert context.custom_status is None


def test_the_policy_is_deterministic_per_instance_and_attempt() -> None:
    """Jitter depends only on its inputs, so a replay schedules the same timers."""
    assert jitter_for("a", "fetch", "1") == jitter_for("a", "fetch", "1")
    assert jitter_for("a", "fetch", "1") != jitter_for("b", "fetch", "1")
    assert all(0.0 <= jitter_for(str(n)) < 1.0 for n in range(200))
    assert POLICY.next_delay(POLICY.attempts, None, 0.5) is None
    assert POLICY.retry_later_delay(None) == POLICY.retry_later_s
    assert RetryPolicy.from_payload(POLICY.to_payload()) == POLICY
