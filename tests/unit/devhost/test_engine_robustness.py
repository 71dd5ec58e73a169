"""The devhost engine under faults: code changes, a locked hub, dying user code, two engines, restarts, batches."""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import pytest

from ingestion.devhost import store as store_module
from ingestion.devhost.engine import DurableEngine, HubLocked
from ingestion.devhost.replay import Cursor, EventType, event, plan_batch, run_episode
from ingestion.devhost.store import HubStore
from tests.unit.devhost.test_engine import WAIT_S, Flaky, add_one

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:azure.functions df_loads was called without expected_type:DeprecationWarning"),
]

RETRY = df.RetryOptions(first_retry_interval_in_milliseconds=1, max_number_of_attempts=3)
LOCKED = "database is locked"


# -- orchestrators --------------------------------------------------------------------------------


def charge_then_wait(ctx: Any) -> Generator[Any, Any, Any]:
    charged = yield ctx.call_activity("echo", "charge")
    yield ctx.wait_for_external_event("go")
    return charged


# charge_then_wait after careless edits: something else first (waiting for "go" meanwhile, so the SDK
# takes the event quietly). Id 0 then holds the charge's result.


def refund_first(ctx: Any) -> Generator[Any, Any, Any]:
    refunded, _ = yield ctx.task_all([ctx.call_activity("refund", "refund"), ctx.wait_for_external_event("go")])
    return [refunded, (yield ctx.call_activity("echo", "charge"))]


def timer_first(ctx: Any) -> Generator[Any, Any, Any]:
    soon = ctx.current_utc_datetime + timedelta(milliseconds=1)
    yield ctx.task_all([ctx.create_timer(soon), ctx.wait_for_external_event("go")])
    return (yield ctx.call_activity("echo", "charge"))


def chain(ctx: Any) -> Generator[Any, Any, Any]:
    """Activities and short timers in turn: every thread of the engine gets work."""
    out = []
    for step in range(ctx.get_input()):
        out.append((yield ctx.call_activity("echo", step)))
        yield ctx.create_timer(ctx.current_utc_datetime + timedelta(milliseconds=5))
    return out


def try_one(ctx: Any) -> Generator[Any, Any, Any]:
    try:
        return (yield ctx.call_activity(ctx.get_input(), "x"))
    except Exception as exc:  # noqa: BLE001 -- activity failures reach orchestrators as plain Exception
        return f"failed: {exc}"


def exits(ctx: Any) -> Generator[Any, Any, Any]:
    ctx.set_custom_status("working")
    yield ctx.call_activity("echo", 1)
    sys.exit(4)


def fan_with_retries(ctx: Any) -> Generator[Any, Any, Any]:
    """Every fifth task retries a flaky activity (failing 0-2 times); the rest echo their tag."""
    tasks = [
        ctx.call_activity_with_retry("flaky", RETRY, {"key": f"t{k}", "failures": k % 3})
        if k % 5 == 0
        else ctx.call_activity("echo", f"t{k}")
        for k in range(ctx.get_input())
    ]
    results = yield ctx.task_all(tasks)
    return [*results, (yield ctx.call_activity("echo", "after"))]


def expected_fan(n: int) -> list[str]:
    return [f"t{k} ok on attempt {k % 3 + 1}" if k % 5 == 0 else f"t{k}" for k in range(n)] + ["after"]


def long_nap(ctx: Any) -> Generator[Any, Any, Any]:
    yield ctx.create_timer(ctx.current_utc_datetime + timedelta(days=1))
    return "rested"


ALL = [charge_then_wait, chain, try_one, exits, fan_with_retries, long_nap]


def echo(input_json: str) -> str:
    return input_json


def leave(input_json: str) -> str:
    sys.exit(3)


def interrupt(input_json: str) -> str:
    raise KeyboardInterrupt


class Gate:
    """An activity that blocks until opened, telling when it was entered."""

    def __init__(self) -> None:
        self.entered, self.opened = threading.Event(), threading.Event()

    def __call__(self, input_json: str) -> str:
        self.entered.set()
        self.opened.wait(WAIT_S)
        return input_json


@pytest.fixture
def gate() -> Iterator[Gate]:
    opened = Gate()
    yield opened
    opened.opened.set()


Make = Callable[..., DurableEngine]


@pytest.fixture
def make(tmp_path: Path, gate: Gate) -> Iterator[Make]:
    """Engines on ``tmp_path/hub.db`` (started unless ``start=False``), stopped at teardown.

    Orchestrators: the functions given (all of this file's by default) under their own names, or
    ``named={name: function}``.
    """
    engines: list[DurableEngine] = []

    def build(*fns: Callable[..., Any], start: bool = True, **options: Any) -> DurableEngine:
        named = options.pop("named", None) or {fn.__name__: fn for fn in fns or ALL}
        activities = {"echo": echo, "refund": echo, "add_one": add_one, "gate": gate, "leave": leave}
        engine = DurableEngine(
            tmp_path / "hub.db",
            orchestrators={name: df.Orchestrator.create(fn) for name, fn in named.items()},
            activities={**activities, "interrupt": interrupt, "flaky": Flaky()},
            **options,
        )
        engines.append(engine)
        if start:
            engine.start()
        return engine

    yield build
    gate.opened.set()
    for engine in engines:
        engine.stop(timeout=5)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def waiting_for_go(engine: DurableEngine, instance_id: str) -> bool:
    return any(e["EventType"] == EventType.TASK_COMPLETED for e in engine.history(instance_id))


# -- nondeterminism (and orchestrators gone from the app) -----------------------------------------


@pytest.mark.parametrize("changed", [refund_first, timer_first])
def test_a_changed_orchestrator_fails_as_nondeterministic(make: Make, changed: Callable[..., Any]) -> None:
    """Given history from one version, a replay scheduling something else at an id fails the instance."""
    before = make(charge_then_wait)
    before.start_new("charge_then_wait", "order-1", None)
    wait_until(lambda: waiting_for_go(before, "order-1"), "the charge completed")
    before.stop()

    after = make(named={"charge_then_wait": changed})
    after.raise_event("order-1", "go", None)
    status = after.wait_for("order-1", WAIT_S)
    assert status["runtimeStatus"] == "Failed"
    assert "nondeterministic orchestration" in status["output"]
    assert "history has TaskScheduled 'echo' at sequence id 0" in status["output"]
    completed = [e for e in after.history("order-1") if e["EventType"] == EventType.TASK_COMPLETED]
    assert len(completed) == 1  # the new code's task never ran on the old result


def test_an_unchanged_orchestrator_replays_across_engines(make: Make) -> None:
    """The same code on a new engine passes the replay check and completes."""
    before = make(charge_then_wait)
    before.start_new("charge_then_wait", "order-2", None)
    wait_until(lambda: waiting_for_go(before, "order-2"), "the charge completed")
    before.stop()
    after = make(charge_then_wait)
    after.raise_event("order-2", "go", None)
    assert after.wait_for("order-2", WAIT_S)["output"] == "charge"


def test_an_instance_left_by_an_older_devhost_resumes(make: Make, tmp_path: Path) -> None:
    """A cursor from before leaf ids were recorded (only ``actions_seen``) resumes without re-scheduling."""
    before = make(charge_then_wait)
    before.start_new("charge_then_wait", "old", None)
    wait_until(lambda: waiting_for_go(before, "old"), "the charge completed")
    before.stop()
    with sqlite3.connect(tmp_path / "hub.db") as db:
        (text,) = db.execute("SELECT cursor FROM instances WHERE instance_id = 'old'").fetchone()
        legacy = {k: v for k, v in json.loads(text).items() if k != "leaf_ids"} | {"actions_seen": 2}
        db.execute("UPDATE instances SET cursor = ? WHERE instance_id = 'old'", (json.dumps(legacy),))
    db.close()
    after = make(charge_then_wait)
    after.raise_event("old", "go", None)
    assert after.wait_for("old", WAIT_S)["output"] == "charge"
    assert len([e for e in after.history("old") if e["EventType"] == EventType.TASK_SCHEDULED]) == 1


def test_an_orchestrator_no_longer_registered_fails_its_instances(make: Make) -> None:
    """An instance left by an engine whose app had its orchestrator fails on an engine without it."""
    make(chain, start=False).start_new("chain", "orphan", json.dumps(1))
    status = make(try_one).wait_for("orphan", WAIT_S)
    assert status["runtimeStatus"] == "Failed"
    assert "no orchestrator named 'chain'" in status["output"]


# -- a locked hub, failing store operations, idle timers ------------------------------------------


def test_the_engine_resumes_after_another_connection_held_the_write_lock(
    make: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Given every thread meeting 'database is locked', all instances complete once the lock is released."""
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_S", 0.02)
    engine = make(chain, activity_workers=2)
    ids = [engine.start_new("chain", f"chain-{n}", json.dumps(12)) for n in range(4)]
    wait_until(lambda: len(engine.history(ids[0])) > 6, "the chains are under way")
    other = sqlite3.connect(tmp_path / "hub.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        wait_until(lambda: sum(LOCKED in r.getMessage() + str(r.exc_info) for r in caplog.records) >= 3, "lock hits")
    finally:
        other.execute("ROLLBACK")
        other.close()
    for instance_id in ids:
        assert engine.wait_for(instance_id, WAIT_S)["output"] == list(range(12))


@pytest.mark.parametrize(
    "method", ["load_episode", "commit_episode", "work_item", "complete_work", "next_fire_at", "fire_due_timers"]
)
def test_every_thread_survives_store_errors(make: Make, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    """The first three calls of a store method fail (any error): the engine retries and completes."""
    real = getattr(HubStore, method)
    failures = [RuntimeError("boom"), sqlite3.OperationalError(LOCKED), sqlite3.OperationalError(LOCKED)]

    def flaky(self: HubStore, *args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(HubStore, method, flaky)
    engine = make(chain)
    assert engine.wait_for(engine.start_new("chain", None, json.dumps(3)), WAIT_S)["output"] == [0, 1, 2]
    assert failures == []


def test_the_timer_thread_writes_nothing_while_no_timer_is_due(make: Make, monkeypatch: pytest.MonkeyPatch) -> None:
    """With only a timer a day away, the timer thread never opens a write transaction."""
    fired: list[str] = []
    real = HubStore.fire_due_timers
    monkeypatch.setattr(HubStore, "fire_due_timers", lambda self, now, **kw: fired.append(now) or real(self, now, **kw))
    engine = make(long_nap)
    instance_id = engine.start_new("long_nap", None, None)
    wait_until(lambda: any(e["EventType"] == EventType.TIMER_CREATED for e in engine.history(instance_id)), "timer")
    time.sleep(0.6)  # a few of the timer thread's re-checks
    assert fired == []


# -- user code raising BaseException --------------------------------------------------------------


@pytest.mark.parametrize("activity", ["leave", "interrupt"])
def test_an_activity_raising_base_exception_is_a_failed_task(make: Make, activity: str) -> None:
    """sys.exit() or KeyboardInterrupt in an activity fails that task; the single worker goes on."""
    engine = make(try_one, activity_workers=1)
    status = engine.wait_for(engine.start_new("try_one", None, json.dumps(activity)), WAIT_S)
    assert status["output"].startswith("failed: ")
    assert engine.wait_for(engine.start_new("try_one", None, json.dumps("echo")), WAIT_S)["output"] == "x"


def test_an_orchestrator_calling_sys_exit_fails_only_its_instance(make: Make) -> None:
    """SystemExit from orchestrator code fails its instance, keeps its custom status; the dispatcher goes on."""
    engine = make(exits, try_one)
    status = engine.wait_for(engine.start_new("exits", None, None), WAIT_S)
    assert (status["runtimeStatus"], status["customStatus"]) == ("Failed", "working")
    assert "SystemExit" in status["output"]
    assert engine.wait_for(engine.start_new("try_one", None, json.dumps("echo")), WAIT_S)["output"] == "x"


# -- one engine per hub file, one application per episode -----------------------------------------


def test_a_second_engine_on_a_hub_in_use_refuses_to_start(make: Make) -> None:
    """start() on a hub another engine runs raises HubLocked; once that engine stops, it starts."""
    first = make(chain)
    second = make(chain, start=False)
    with pytest.raises(HubLocked, match="in use by another engine"):
        second.start()
    instance_id = first.start_new("chain", None, json.dumps(2))
    assert first.wait_for(instance_id, WAIT_S)["output"] == [0, 1]
    first.stop()
    second.start()
    assert second.wait_for(second.start_new("chain", None, json.dumps(1)), WAIT_S)["output"] == [0]


def test_an_episode_is_never_applied_twice(tmp_path: Path) -> None:
    """commit_episode refuses messages already consumed and writes of a run that no longer owns the hub."""
    hub = HubStore(tmp_path / "hub.db")
    owner = object()
    hub.own(owner)
    hub.create("i", "chain", "1", "2030-01-01T00:00:00.000000Z")
    loaded = hub.load_episode("i")
    assert loaded is not None
    instance, history, messages = loaded
    handle = df.Orchestrator.create(chain)
    episode = run_episode(
        handle,
        instance_id="i",
        input_json="1",
        history=history,
        messages=[m.event for m in messages],
        cursor=Cursor.from_json(instance.cursor),
        now=datetime(2030, 1, 1, 0, 0, 1, tzinfo=UTC),
    )
    msg_ids = [m.msg_id for m in messages]
    assert hub.commit_episode(instance, msg_ids, episode, "t", owner=object()) is None  # not the owner
    assert hub.commit_episode(instance, msg_ids, episode, "t", owner=owner) == [1]
    assert hub.commit_episode(instance, msg_ids, episode, "t", owner=owner) is None  # consumed already
    assert len([e for e in hub.history("i") if e["EventType"] == EventType.TASK_SCHEDULED]) == 1


# -- stop() and start() racing --------------------------------------------------------------------


def test_start_during_a_slow_stop_leaves_a_running_engine(make: Make, gate: Gate) -> None:
    """start() called while stop() waits for an activity runs after it: the engine works afterwards."""
    engine = make(try_one)
    first = engine.start_new("try_one", None, json.dumps("gate"))
    assert gate.entered.wait(WAIT_S)
    stopper = threading.Thread(target=engine.stop, kwargs={"timeout": WAIT_S})
    stopper.start()
    wait_until(lambda: engine._run is None, "stop() began")  # private, but the race needs stop() under way
    starter = threading.Thread(target=engine.start)
    starter.start()
    gate.opened.set()
    stopper.join(WAIT_S)
    starter.join(WAIT_S)
    assert engine.wait_for(engine.start_new("try_one", None, json.dumps("echo")), WAIT_S)["output"] == "x"
    assert engine.wait_for(first, WAIT_S)["output"] == "x"


# -- batches of messages per episode --------------------------------------------------------------


def hold_second_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """The dispatcher's second load waits until every work item ran: one batch takes all their results."""
    real = HubStore.load_episode
    loads = [0]

    def held(self: HubStore, instance_id: str) -> Any:
        loads[0] += 1
        if loads[0] == 2:
            wait_until(lambda: self.resume_points()[0] == [], "every activity ran")
        return real(self, instance_id)

    monkeypatch.setattr(HubStore, "load_episode", held)


def test_a_fan_out_with_retries_completes_in_few_episodes_with_the_right_ids(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 tasks (every fifth retried) delivered in batches: every result reaches its own task."""
    hold_second_load(monkeypatch)
    engine = make(fan_with_retries, activity_workers=4)
    status = engine.wait_for(engine.start_new("fan_with_retries", "fan", json.dumps(100)), WAIT_S)
    assert status["output"] == expected_fan(100)
    history = engine.history("fan")
    kinds = (EventType.TASK_SCHEDULED, EventType.TIMER_CREATED)
    scheduled = {e["EventId"]: e for e in history if e["EventType"] in kinds}
    assert sorted(scheduled) == list(range(len(scheduled)))
    assert len(scheduled) == len([e for e in history if e["EventType"] in kinds])  # no id given twice
    for done in (e for e in history if e["EventType"] == EventType.TASK_COMPLETED):
        sent = json.loads(scheduled[done["TaskScheduledId"]]["Input"])
        expected = f"{sent['key']} ok on attempt {sent['failures'] + 1}" if isinstance(sent, dict) else sent
        assert json.loads(done["Result"]) == expected
    assert len([e for e in history if e["EventType"] == EventType.ORCHESTRATOR_STARTED]) < 20


def race_with_retry(ctx: Any) -> Generator[Any, Any, Any]:
    """A retry fails while the task_any it is in resolves: the retry timer and the next call take ids at once."""
    retried = ctx.call_activity_with_retry("flaky", RETRY, {"key": "r", "failures": 2})
    yield ctx.task_any([retried, ctx.call_activity("echo", "quick")])
    second = yield ctx.call_activity("echo", "second")
    return [second, (yield retried)]


def test_a_retry_step_and_new_calls_in_one_batch_get_the_ids_the_sdk_gives(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed attempt and a completion that resumes user code, delivered together, resolve the right tasks."""
    hold_second_load(monkeypatch)
    engine = make(race_with_retry)
    status = engine.wait_for(engine.start_new("race_with_retry", "race", None), WAIT_S)
    assert status["output"] == ["second", "r ok on attempt 3"]
    episodes = [e for e in engine.history("race") if e["EventType"] in (EventType.ORCHESTRATOR_STARTED, 5, 6)]
    assert [e["EventType"] for e in episodes[1:4]] == [EventType.ORCHESTRATOR_STARTED, 6, 5]  # one batch, retry first


def test_plan_batch_puts_id_taking_retry_messages_first() -> None:
    """A retry's failure and its non-final timer go before plain completions; unawaited events wait."""
    retry = {"name": "flaky", "input": None, "interval_ms": 1, "max_attempts": 2}
    cursor = Cursor(retries={"1": retry | {"attempt": 1}, "2": retry | {"attempt": 1}, "3": retry | {"attempt": 2}})
    now = "2030-01-01T00:00:00.000000Z"
    messages = [
        event(EventType.TASK_COMPLETED, now, TaskScheduledId=0, Result="1"),
        event(EventType.TASK_FAILED, now, TaskScheduledId=1, Reason="r", Details="d"),
        event(EventType.EVENT_RAISED, now, Name="nobody waits", Input=None),
        event(EventType.TIMER_FIRED, now, TimerId=3, FireAt=now),  # after the last attempt: takes no id
        event(EventType.TIMER_FIRED, now, TimerId=2, FireAt=now),
    ]
    assert plan_batch(messages, cursor, []) == [1, 4, 0, 3]
