"""The devhost durable engine drives real ``azure-functions-durable`` orchestrators: replay, ids, retries."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import pytest

from ingestion.devhost.engine import DurableEngine

pytestmark = [
    pytest.mark.timeout(60),
    # azure-functions warns once per process that df_loads ran without expected_type; the toy
    # orchestrators here pass plain JSON, so there is no type to give (warnings are errors here).
    pytest.mark.filterwarnings("ignore:azure.functions df_loads was called without expected_type:DeprecationWarning"),
]

WAIT_S = 30.0
FAST_RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=10, max_number_of_attempts=3)

Orchestrator = Callable[[Any], Generator[Any, Any, Any]]
Activity = Callable[[str], str]
EngineFactory = Callable[..., DurableEngine]


# -- orchestrators (generator functions, exactly as function_app.py would register them) -------


def sequence(ctx: Any) -> Generator[Any, Any, Any]:
    first = yield ctx.call_activity("add_one", ctx.get_input())
    second = yield ctx.call_activity("add_one", first)
    return (yield ctx.call_activity("add_one", second))


def fan_out(ctx: Any) -> Generator[Any, Any, Any]:
    results = yield ctx.task_all([ctx.call_activity("add_one", n) for n in range(5)])
    return sum(results)


def race(ctx: Any) -> Generator[Any, Any, Any]:
    winner = yield ctx.task_any([ctx.call_activity("blocked", 0), ctx.call_activity("add_one", 41)])
    return winner.result


def nap(ctx: Any) -> Generator[Any, Any, Any]:
    fire_at = ctx.current_utc_datetime + timedelta(milliseconds=ctx.get_input())
    yield ctx.create_timer(fire_at)
    return {"fire_at": fire_at.isoformat(), "woke_at": ctx.current_utc_datetime.isoformat()}


def long_nap(ctx: Any) -> Generator[Any, Any, Any]:
    yield ctx.create_timer(ctx.current_utc_datetime + timedelta(days=7))
    return "rested"


def retried(ctx: Any) -> Generator[Any, Any, Any]:
    return (yield ctx.call_activity_with_retry("flaky", FAST_RETRY, ctx.get_input()))


def retried_caught(ctx: Any) -> Generator[Any, Any, Any]:
    try:
        yield ctx.call_activity_with_retry("flaky", FAST_RETRY, ctx.get_input())
    except Exception as exc:  # noqa: BLE001 -- activity failures reach orchestrators as plain Exception
        return f"gave up: {exc}"
    return "unexpected success"


def parallel_retries(ctx: Any) -> Generator[Any, Any, Any]:
    both = yield ctx.task_all(
        [
            ctx.call_activity_with_retry("flaky", FAST_RETRY, {"key": "a", "failures": 1}),
            ctx.call_activity("add_one", 1),
            ctx.call_activity_with_retry("flaky", FAST_RETRY, {"key": "b", "failures": 2}),
        ]
    )
    after = yield ctx.call_activity("add_one", 10)
    return [*both, after]


def approval(ctx: Any) -> Generator[Any, Any, Any]:
    ctx.set_custom_status({"waiting_for": "approval"})
    first = yield ctx.wait_for_external_event("approval")
    second = yield ctx.wait_for_external_event("approval")
    return [first, second]


def event_or_timeout(ctx: Any) -> Generator[Any, Any, Any]:
    timer = ctx.create_timer(ctx.current_utc_datetime + timedelta(milliseconds=ctx.get_input()))
    event = ctx.wait_for_external_event("go")
    winner = yield ctx.task_any([event, timer])
    if winner == event:
        timer.cancel()
        return {"event": event.result}
    return "timed out"


def counter(ctx: Any) -> Generator[Any, Any, Any]:
    n = ctx.get_input()
    if n < 3:
        yield ctx.call_activity("add_one", n)
        ctx.continue_as_new(n + 1)
        return None
    return n


def broken(ctx: Any) -> Generator[Any, Any, Any]:
    yield ctx.call_activity("add_one", 1)
    raise ValueError("the orchestrator broke")


def with_child(ctx: Any) -> Generator[Any, Any, Any]:
    return (yield ctx.call_sub_orchestrator("sequence", 1))


ORCHESTRATORS: dict[str, Orchestrator] = {
    fn.__name__: fn
    for fn in (
        sequence,
        fan_out,
        race,
        nap,
        long_nap,
        retried,
        retried_caught,
        parallel_retries,
        approval,
        event_or_timeout,
        counter,
        broken,
        with_child,
    )
}


# -- activities (JSON text in, JSON text out) -------------------------------------------------


class Flaky:
    """Fails the first ``failures`` calls for each ``key`` (input ``{"key", "failures"}`` or a count)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def __call__(self, input_json: str) -> str:
        spec = json.loads(input_json)
        key, failures = (spec["key"], spec["failures"]) if isinstance(spec, dict) else ("default", spec)
        with self._lock:
            self.calls[key] = self.calls.get(key, 0) + 1
            attempt = self.calls[key]
        if attempt <= failures:
            raise RuntimeError(f"{key} attempt {attempt} failed")
        return json.dumps(f"{key} ok on attempt {attempt}")


def add_one(input_json: str) -> str:
    return json.dumps(json.loads(input_json) + 1)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at teardown, so an activity blocked on it never outlives its test."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def flaky() -> Flaky:
    return Flaky()


@contextmanager
def engine_factory(db: Path, activities: Mapping[str, Activity]) -> Iterator[EngineFactory]:
    """Makes started engines on the hub file ``db``; stops them all on exit."""
    engines: list[DurableEngine] = []

    def make(overrides: Mapping[str, Activity] | None = None, **options: Any) -> DurableEngine:
        engine = DurableEngine(
            db,
            orchestrators={name: df.Orchestrator.create(fn) for name, fn in ORCHESTRATORS.items()},
            activities={**activities, **(overrides or {})},
            **options,
        )
        engines.append(engine)
        engine.start()
        return engine

    try:
        yield make
    finally:
        for engine in engines:
            engine.stop(timeout=5)


@pytest.fixture
def make_engine(tmp_path: Path, flaky: Flaky, release: threading.Event) -> Iterator[EngineFactory]:
    """Engines on ``tmp_path/hub.db`` with this file's activities, stopped at teardown."""

    def blocked(input_json: str) -> str:
        release.wait(WAIT_S)
        return input_json

    with engine_factory(tmp_path / "hub.db", {"add_one": add_one, "flaky": flaky, "blocked": blocked}) as make:
        try:
            yield make
        finally:
            release.set()  # before the engines stop, so no activity thread is left waiting


def run(engine: DurableEngine, name: str, input_value: Any = None) -> dict[str, Any]:
    instance_id = engine.start_new(name, None, json.dumps(input_value))
    return engine.wait_for(instance_id, WAIT_S)


def events_of(engine: DurableEngine, instance_id: str, event_type: int) -> list[dict[str, Any]]:
    return [e for e in engine.history(instance_id) if e["EventType"] == event_type]


# -- tests ---------------------------------------------------------------------------------------


def test_sequence_threads_each_output_into_the_next_activity(make_engine: EngineFactory) -> None:
    """Three chained activities: each result is the next input, the last is the output."""
    status = run(make_engine(), "sequence", 1)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == 4


def test_fan_out_fan_in_collects_every_result(make_engine: EngineFactory) -> None:
    """task_all over five activities returns all five results, in call order."""
    engine = make_engine()
    status = run(engine, "fan_out")
    assert status["output"] == sum(n + 1 for n in range(5))
    assert sorted(e["EventId"] for e in events_of(engine, status["instanceId"], 4)) == list(range(5))


def test_task_any_resolves_with_the_first_finished_task(make_engine: EngineFactory) -> None:
    """task_any completes with the fast activity while the other is still running."""
    status = run(make_engine(), "race")
    assert status["output"] == 42


def test_durable_timer_wakes_the_orchestrator_after_fire_at(make_engine: EngineFactory) -> None:
    """A 50 ms timer fires and the orchestrator's clock has passed its FireAt when it resumes."""
    status = run(make_engine(), "nap", 50)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"]["woke_at"] >= status["output"]["fire_at"]


def test_timers_follow_the_injected_clock(make_engine: EngineFactory) -> None:
    """With a frozen clock an hour-long timer waits; moving the clock forward fires it."""
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    engine = make_engine(clock=lambda: now[0])
    instance_id = engine.start_new("nap", None, json.dumps(3_600_000))
    with pytest.raises(TimeoutError):
        engine.wait_for(instance_id, 0.3)
    now[0] += timedelta(hours=2)
    assert engine.wait_for(instance_id, WAIT_S)["runtimeStatus"] == "Completed"


def test_timers_beyond_six_days_are_split_like_azure_does(make_engine: EngineFactory) -> None:
    """A 7-day timer runs as a 3-day timer, then one to the final FireAt (the SDK's long-timer protocol)."""
    start = datetime(2030, 1, 1, tzinfo=UTC)
    now = [start]
    engine = make_engine(clock=lambda: now[0])
    instance_id = engine.start_new("long_nap", None, None)
    deadline = time.monotonic() + WAIT_S
    while len(timers := events_of(engine, instance_id, 10)) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert datetime.fromisoformat(timers[0]["FireAt"]) == start + timedelta(days=3)
    now[0] = start + timedelta(days=4)
    while len(timers := events_of(engine, instance_id, 10)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert datetime.fromisoformat(timers[1]["FireAt"]) == start + timedelta(days=7)
    now[0] = start + timedelta(days=8)
    assert engine.wait_for(instance_id, WAIT_S)["output"] == "rested"


def test_retry_succeeds_on_the_third_attempt(make_engine: EngineFactory, flaky: Flaky) -> None:
    """Two failures, each followed by a retry timer, then success: ids follow the SDK's allocation."""
    engine = make_engine()
    status = run(engine, "retried", 2)
    assert status["output"] == "default ok on attempt 3"
    assert flaky.calls == {"default": 3}
    history = engine.history(status["instanceId"])
    steps = [(e["EventType"], e["EventId"]) for e in history if e["EventType"] in (4, 10)]
    assert steps == [(4, 0), (10, 1), (4, 2), (10, 3), (4, 4)]


def test_retry_exhausted_reaches_the_orchestrator_as_an_exception(make_engine: EngineFactory, flaky: Flaky) -> None:
    """After max attempts (and the extra timer) the orchestrator catches the last failure."""
    engine = make_engine()
    status = run(engine, "retried_caught", 5)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"].startswith("gave up: default attempt 3 failed")
    assert flaky.calls == {"default": 3}
    assert len(events_of(engine, status["instanceId"], 10)) == 3  # a timer after every failed attempt


def test_retry_exhausted_and_uncaught_fails_the_instance(make_engine: EngineFactory) -> None:
    """An exhausted retry the orchestrator does not catch fails the instance with the activity's error."""
    status = run(make_engine(), "retried", 5)
    assert status["runtimeStatus"] == "Failed"
    assert "default attempt 3 failed" in status["output"]


def test_parallel_retries_interleave_ids_correctly(make_engine: EngineFactory, flaky: Flaky) -> None:
    """Two retrying activities failing side by side in task_all each get their own timers and attempts."""
    engine = make_engine()
    status = run(engine, "parallel_retries")
    assert status["output"] == ["a ok on attempt 2", 2, "b ok on attempt 3", 11]
    assert flaky.calls == {"a": 2, "b": 3}
    history = engine.history(status["instanceId"])
    ids = [e["EventId"] for e in history if e["EventType"] in (4, 10)]
    assert sorted(ids) == list(range(len(ids)))


def test_external_events_are_kept_until_the_orchestrator_waits(make_engine: EngineFactory) -> None:
    """Two events raised before any wait both reach the two waits, in order."""
    engine = make_engine()
    instance_id = engine.start_new("approval", "order-7", None)
    assert engine.raise_event(instance_id, "approval", json.dumps("first")) == "raised"
    assert engine.raise_event(instance_id, "approval", json.dumps("second")) == "raised"
    status = engine.wait_for(instance_id, WAIT_S)
    assert status["output"] == ["first", "second"]
    assert status["customStatus"] == {"waiting_for": "approval"}
    assert engine.raise_event(instance_id, "approval", None) == "finished"
    assert engine.raise_event("nobody", "approval", None) == "not_found"


def test_an_event_beats_its_timeout_and_a_timeout_beats_a_missing_event(make_engine: EngineFactory) -> None:
    """task_any over an event and a timer: whichever comes first decides."""
    engine = make_engine()
    waiting = engine.start_new("event_or_timeout", None, json.dumps(60_000))
    engine.raise_event(waiting, "go", json.dumps({"ok": True}))
    assert engine.wait_for(waiting, WAIT_S)["output"] == {"event": {"ok": True}}
    assert run(engine, "event_or_timeout", 20)["output"] == "timed out"


def test_continue_as_new_restarts_with_fresh_history(make_engine: EngineFactory) -> None:
    """continue_as_new runs the orchestrator again with the new input and a history of its own."""
    engine = make_engine()
    status = run(engine, "counter", 0)
    assert status["output"] == 3
    assert status["input"] == 3
    assert len(events_of(engine, status["instanceId"], 0)) == 1


def test_an_orchestrator_exception_fails_the_instance(make_engine: EngineFactory) -> None:
    """An exception raised by orchestrator code becomes status Failed with its message as output."""
    status = run(make_engine(), "broken")
    assert status["runtimeStatus"] == "Failed"
    assert "the orchestrator broke" in status["output"]


def test_unsupported_actions_fail_the_instance_saying_so(make_engine: EngineFactory) -> None:
    """A sub-orchestration is not run by devhost: the instance fails with a message naming it."""
    status = run(make_engine(), "with_child")
    assert status["runtimeStatus"] == "Failed"
    assert "sub-orchestration" in status["output"]


def test_an_unknown_orchestrator_is_refused(make_engine: EngineFactory) -> None:
    """start_new with an unregistered name raises KeyError and creates nothing."""
    engine = make_engine()
    with pytest.raises(KeyError):
        engine.start_new("nope", "x", None)
    assert engine.get_status("x") is None


def test_thirty_concurrent_instances_all_complete(make_engine: EngineFactory) -> None:
    """Thirty sequences started at once all complete with their own outputs."""
    engine = make_engine(activity_workers=3)
    ids = [engine.start_new("sequence", f"doc-{n}", json.dumps(n)) for n in range(30)]
    engine.wait_until_idle(WAIT_S)
    assert [engine.get_status(i)["output"] for i in ids] == [n + 3 for n in range(30)]  # type: ignore[index]
