"""A local Durable Functions task hub: runs orchestrators written with ``azure-functions-durable``.

The engine drives each orchestrator's ``handle(context_json) -> state_json`` through the SDK's JSON
protocol (``replay.py``: batches of messages per episode, sequence ids and retries as the Azure host
hands them out, replays checked for nondeterminism) and keeps every instance in SQLite (``store.py``),
so a process killed mid-run resumes every unfinished orchestration on the next ``start()``:
activities run at least once, timers re-arm, queued messages are delivered.

Threads (daemons): one dispatcher runs episodes, one instance at a time, in the order instances
became ready; a timer thread turns due timers into TimerFired messages (it compares the clock with
the next due time at least every 0.25 s, so an injected clock may jump); ``activity_workers`` threads
run activities. No thread dies of an error: a failed store operation (``database is locked``...) is
logged and retried after a backoff, and whatever user code raises (``SystemExit`` too) fails only
that task or instance. ``start()`` takes the hub file (``HubLocked`` if another engine has it);
``stop()`` lets running work finish for ``timeout`` seconds, then gives the file back: a thread it
abandons has its late writes dropped (the next start re-runs that work, as after a crash). One store
serves the engine's whole life: the client API works while stopped, new work waits for ``start()``.

Where it departs from Azure, on purpose: an external event nobody waits for yet stays queued until
the orchestrator yields a wait for it (Azure puts it in history at once; the SDK then warns and
keeps only the last early event of a name); when an instance ends, its queued activities and timers
are dropped instead of run for nothing (continue-as-new drops queued events too, like Azure's
default); sub-orchestrations, entities and durable HTTP are not run (the instance fails, saying so).
All public methods are thread-safe.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, Any, TypeVar

from ingestion.devhost.replay import CONTINUED_AS_NEW, Cursor, EventType, event, iso, parse_iso, plan_batch, run_episode
from ingestion.devhost.status import ACTIVE, StatusQueries
from ingestion.devhost.store import HubLocked, HubStore, InstanceExists, lock_hub

__all__ = ["DurableEngine", "HubLocked", "InstanceExists"]

log = logging.getLogger(__name__)

Activity = Callable[[str], str]
T = TypeVar("T")
_TIMER_RECHECK_S = 0.25
_BACKOFF_S, _MAX_BACKOFF_S = 0.05, 2.0  # after a failure: the first wait, doubled up to the longest


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _backoff(failures: int) -> float:
    return min(_BACKOFF_S * 2.0 ** min(failures - 1, 16), _MAX_BACKOFF_S)


@dataclass(eq=False)
class _Run:
    """What one start()..stop() owns; the store drops writes of a run that is no longer its owner."""

    lock_file: IO[str]
    work: queue.Queue[int | None] = field(default_factory=queue.Queue)
    stopped: threading.Event = field(default_factory=threading.Event)
    timer_wake: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)


class DurableEngine(StatusQueries):
    """Orchestrations and activities of one app, persisted in one SQLite file (see module doc)."""

    def __init__(
        self,
        db_path: Path,
        *,
        orchestrators: Mapping[str, Callable[[str], str]],
        activities: Mapping[str, Activity],
        activity_workers: int = 2,
        hub_name: str = "IngestionHub",
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if activity_workers < 1:
            raise ValueError("activity_workers must be at least 1")
        self.hub_name = hub_name
        self._db_path = Path(db_path)
        self._orchestrators = dict(orchestrators)
        self._activities = dict(activities)
        self._activity_workers = activity_workers
        self._clock = clock
        self._store = HubStore(self._db_path)
        self._lifecycle = threading.Lock()  # one start() or stop() at a time; guards _run
        self._run: _Run | None = None
        self._ready_cond = threading.Condition()  # guards _ready, _delayed and _failures
        self._ready: dict[str, None] = {}  # instances with messages: an ordered set, first ready first served
        self._delayed: dict[str, float] = {}  # instances whose episode failed -> when to try again (monotonic)
        self._failures: dict[str, int] = {}
        self._changed = threading.Condition()  # notified after every committed state change

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Take the hub file, start the threads and resume every unfinished instance in it."""
        with self._lifecycle:
            if self._run is not None:
                return
            run = _Run(lock_hub(self._db_path))
            try:
                self._store.own(run)
                work, ready = self._store.resume_points()
            except BaseException:
                self._store.own(None)
                run.lock_file.close()
                raise
            for work_id in work:
                run.work.put(work_id)
            for instance_id in ready:
                self._mark_ready(instance_id)
            targets = [(self._dispatch_loop, "dispatcher"), (self._timer_loop, "timers")]
            targets += [(self._activity_loop, f"activity-{n}") for n in range(self._activity_workers)]
            for target, name in targets:
                thread = threading.Thread(target=target, args=(run,), name=f"{self.hub_name}-{name}", daemon=True)
                run.threads.append(thread)
                thread.start()
            self._run = run

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work; wait up to ``timeout`` for running work. The next start() resumes the rest."""
        with self._lifecycle:
            run, self._run = self._run, None
            if run is None:
                return
            run.stopped.set()
            run.timer_wake.set()
            for _ in range(self._activity_workers):
                run.work.put(None)
            with self._ready_cond:
                self._ready_cond.notify_all()
            deadline = time.monotonic() + timeout
            for thread in run.threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            self._store.own(None)  # a thread still busy (a stuck activity) is abandoned: its late writes drop
            run.lock_file.close()

    # -- client API -----------------------------------------------------------------------------

    def start_new(self, name: str, instance_id: str | None, input_json: str | None) -> str:
        """Create (or overwrite a finished) instance; InstanceExists if Pending/Running."""
        if name not in self._orchestrators:
            raise KeyError(f"no orchestrator named {name!r}")
        if input_json is not None:
            json.loads(input_json)  # fail fast on text that is not JSON
        instance_id = instance_id or uuid.uuid4().hex
        self._store.create(instance_id, name, input_json, self._now())
        self._mark_ready(instance_id)
        self._notify_changed()
        return instance_id

    def terminate(self, instance_id: str, reason: str) -> str:
        """'terminated', 'finished' (already ended: nothing changes) or 'not_found'."""
        outcome = self._store.terminate(instance_id, reason, self._now())
        self._notify_changed()
        return outcome

    def raise_event(self, instance_id: str, name: str, data_json: str | None) -> str:
        """'raised', 'finished' or 'not_found'."""
        if data_json is not None:
            json.loads(data_json)
        outcome = self._store.raise_event(instance_id, name, data_json, self._now())
        if outcome == "raised":
            self._mark_ready(instance_id)
        return outcome

    # -- threads --------------------------------------------------------------------------------

    def _dispatch_loop(self, run: _Run) -> None:
        while (instance_id := self._next_ready(run)) is not None:
            try:
                again = self._episode(run, instance_id)
            except Exception:  # a store error or a bug: logged, this instance retries later, the rest go on
                log.exception("episode of %s failed; it is retried shortly", instance_id)
                self._retry_later(instance_id)
                continue
            with self._ready_cond:
                self._failures.pop(instance_id, None)
            if again:
                self._mark_ready(instance_id)

    def _episode(self, run: _Run, instance_id: str) -> bool:
        """Deliver a batch of messages to the instance; True if it may have more to deliver."""
        loaded = self._store.load_episode(instance_id)
        if loaded is None or loaded[0].status not in ACTIVE:
            return False
        instance, history, messages = loaded
        cursor = Cursor.from_json(instance.cursor)
        batch = [messages[i] for i in plan_batch([m.event for m in messages], cursor, history)]
        if not batch:
            return False
        episode = run_episode(
            self._orchestrators.get(instance.name) or _unregistered(instance.name),
            instance_id=instance_id,
            input_json=instance.input,
            history=history,
            messages=[m.event for m in batch],
            cursor=cursor,
            now=self._clock(),
            custom_status=instance.custom_status,
        )
        msg_ids = [m.msg_id for m in batch]
        work_ids = self._store.commit_episode(instance, msg_ids, episode, self._now(), owner=run)
        if work_ids is None:
            return False
        for work_id in work_ids:
            run.work.put(work_id)
        if episode.timers:
            run.timer_wake.set()
        self._notify_changed()
        return len(batch) < len(messages) or episode.status == CONTINUED_AS_NEW

    def _activity_loop(self, run: _Run) -> None:
        while (work_id := run.work.get()) is not None and not run.stopped.is_set():
            item = self._persist(run, "reading a work item", partial(self._store.work_item, work_id))
            if item is None:
                continue  # dropped with its instance, done by an earlier run, or stopping
            completion = self._call_activity(item.name, item.input, item.task_id)
            # recorded even while stop() waits; once it gave up on this thread, the store drops it
            complete = partial(self._store.complete_work, work_id, completion, owner=run)
            if (instance_id := self._persist(run, f"recording activity {item.name!r}", complete)) is not None:
                self._mark_ready(instance_id)

    def _call_activity(self, name: str, input_json: str | None, task_id: int) -> dict[str, Any]:
        try:
            activity = self._activities.get(name)
            if activity is None:
                raise LookupError(f"no activity named {name!r} is registered")
            result = activity(input_json if input_json is not None else "null")
            if result is not None and not isinstance(result, str):
                raise TypeError(f"activity {name!r} returned {type(result).__name__}, not JSON text")
        except BaseException as exc:  # noqa: BLE001 -- whatever an activity raises (SystemExit too) is its TaskFailed
            reason, details = str(exc) or type(exc).__name__, traceback.format_exc()
            return event(EventType.TASK_FAILED, self._now(), TaskScheduledId=task_id, Reason=reason, Details=details)
        return event(EventType.TASK_COMPLETED, self._now(), TaskScheduledId=task_id, Result=result)

    def _timer_loop(self, run: _Run) -> None:
        """Reads the next due time when woken (a new timer) or after a firing: nothing is written until one is due."""
        while not run.stopped.is_set():
            run.timer_wake.clear()  # before reading the table: a wake-up from now on is not lost
            text = self._persist(run, "reading the next timer", self._store.next_fire_at)
            next_fire = None if text is None else parse_iso(text)
            while not run.timer_wake.is_set():
                if next_fire is not None and next_fire <= (now := self._clock()):
                    fire = partial(self._store.fire_due_timers, iso(now), owner=run)
                    for instance_id in self._persist(run, "firing timers", fire) or []:
                        self._mark_ready(instance_id)
                    break
                wait = None if next_fire is None else (next_fire - self._clock()).total_seconds()
                run.timer_wake.wait(None if wait is None else min(max(wait, 0.001), _TIMER_RECHECK_S))

    # -- helpers --------------------------------------------------------------------------------

    def _persist(self, run: _Run, what: str, operation: Callable[[], T]) -> T | None:
        """``operation()`` retried after each failure; None once the run stops (the next start redoes the work)."""
        failures = 0
        while not run.stopped.is_set():
            try:
                return operation()
            except Exception:
                failures += 1
                log.exception("%s failed; retrying", what)
                run.stopped.wait(_backoff(failures))
        return None

    def _next_ready(self, run: _Run) -> str | None:
        """The next instance to run an episode for; None once the run stops."""
        with self._ready_cond:
            while not run.stopped.is_set():
                now = time.monotonic()
                for instance_id in [i for i, due in self._delayed.items() if due <= now]:
                    del self._delayed[instance_id]
                    self._ready[instance_id] = None
                if self._ready:
                    instance_id = next(iter(self._ready))
                    del self._ready[instance_id]
                    return instance_id
                wake = min(self._delayed.values(), default=None)
                self._ready_cond.wait(None if wake is None else max(wake - now, 0.001))
        return None

    def _retry_later(self, instance_id: str) -> None:
        with self._ready_cond:
            failures = self._failures[instance_id] = self._failures.get(instance_id, 0) + 1
            self._delayed[instance_id] = time.monotonic() + _backoff(failures)

    def _mark_ready(self, instance_id: str) -> None:
        with self._ready_cond:
            if instance_id not in self._ready:
                self._ready[instance_id] = None
                self._ready_cond.notify_all()

    def _notify_changed(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _now(self) -> str:
        return iso(self._clock())


def _unregistered(name: str) -> Callable[[str], str]:
    """The handle of an orchestrator that is gone from the app: its instances fail, saying so."""

    def handle(_context: str) -> str:
        raise LookupError(f"no orchestrator named {name!r} is registered")

    return handle
