"""A local Durable Functions task hub: runs orchestrators written with ``azure-functions-durable``.

The engine drives each orchestrator's ``handle(context_json) -> state_json`` through the SDK's own
JSON protocol (``replay.py``: one new event per episode, sequence ids and retries exactly as the
Azure host hands them out) and keeps every instance in SQLite (``store.py``), so a process killed
mid-run resumes every unfinished orchestration on the next ``start()``: activities run at least
once, timers re-arm, queued messages are delivered.

Threads (daemons; ``stop()`` joins them): one dispatcher runs episodes, one instance at a time, in
the order instances became ready; a timer thread turns due timers into TimerFired messages;
``activity_workers`` threads run activities. Each wakes on a condition, never by polling a clock
(the timer thread re-checks at least every 0.25 s so an injected clock may jump).

``stop()`` lets running work finish for ``timeout`` seconds, then closes the run's store: anything
an abandoned thread finishes later is dropped (and re-run by the next start, as after a crash).

Where it departs from Azure, on purpose: an external event nobody waits for yet stays queued until
the orchestrator yields a wait for it (Azure puts it in history at once; the SDK then warns and
keeps only the last early event of a name); when an instance ends, its queued activities and timers
are dropped instead of run for nothing (continue-as-new drops queued events too, like Azure's
default); sub-orchestrations, entities and durable HTTP are not run (the instance fails, saying so);
one engine per hub file at a time (Azure's partition leases have no equivalent here).
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
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingestion.devhost.replay import (
    Cursor,
    Event,
    EventType,
    deliverable,
    event,
    iso,
    json_or_none,
    parse_iso,
    run_episode,
    summarize,
)
from ingestion.devhost.store import ACTIVE, FINISHED, HubStore, Instance, InstanceExists, StoreClosed

__all__ = ["DurableEngine", "InstanceExists"]

log = logging.getLogger(__name__)

Activity = Callable[[str], str]
_TIMER_RECHECK_S = 0.25


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Run:
    """What one start()..stop() owns: threads of a stopped run see ``stopped`` and its closed store."""

    store: HubStore
    work: queue.Queue[int | None] = field(default_factory=queue.Queue)
    stopped: threading.Event = field(default_factory=threading.Event)
    timer_wake: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)


class DurableEngine:
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
        self._lock = threading.Lock()  # guards _store, _run
        self._store = HubStore(self._db_path)
        self._run: _Run | None = None
        self._ready_cond = threading.Condition()  # guards _ready: instances with messages to deliver
        self._ready: dict[str, None] = {}  # an ordered set: first ready, first served
        self._changed = threading.Condition()  # notified after every committed state change

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the threads and resume every unfinished instance found in the database."""
        store = self._live_store()
        with self._lock:
            if self._run is not None:
                return
            run = self._run = _Run(store)
        with self._ready_cond:
            self._ready.clear()
        for work_id in run.store.pending_work():
            run.work.put(work_id)
        for instance_id in run.store.instances_with_messages():
            self._mark_ready(instance_id)
        targets = [(self._dispatch_loop, "dispatcher"), (self._timer_loop, "timers")]
        targets += [(self._activity_loop, f"activity-{n}") for n in range(self._activity_workers)]
        for target, name in targets:
            thread = threading.Thread(target=target, args=(run,), name=f"{self.hub_name}-{name}", daemon=True)
            run.threads.append(thread)
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work; wait up to ``timeout`` for running work. The next start() resumes the rest."""
        with self._lock:
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
        # Threads still busy (a stuck activity) are abandoned: their late writes hit StoreClosed.
        run.store.close()

    # -- client API -----------------------------------------------------------------------------

    def start_new(self, name: str, instance_id: str | None, input_json: str | None) -> str:
        """Create (or overwrite a finished) instance; InstanceExists if Pending/Running."""
        if name not in self._orchestrators:
            raise KeyError(f"no orchestrator named {name!r}")
        if input_json is not None:
            json.loads(input_json)  # fail fast on text that is not JSON
        instance_id = instance_id or uuid.uuid4().hex
        self._live_store().create(instance_id, name, input_json, self._now())
        self._mark_ready(instance_id)
        self._notify_changed()
        return instance_id

    def get_status(
        self,
        instance_id: str,
        *,
        show_history: bool = False,
        show_history_output: bool = False,
        show_input: bool = True,
    ) -> dict[str, Any] | None:
        """The DurableOrchestrationStatus JSON shape, or None for an unknown instance."""
        store = self._live_store()
        instance = store.instance(instance_id)
        if instance is None:
            return None
        history = store.history(instance_id) if show_history else None
        return _status(instance, history=history, show_output=show_history_output, show_input=show_input)

    def query(
        self,
        *,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        runtime_status: Collection[str] | None = None,
        prefix: str | None = None,
    ) -> list[dict[str, Any]]:
        instances = self._live_store().query(
            created_from=_opt_iso(created_from),
            created_to=_opt_iso(created_to),
            statuses=None if runtime_status is None else list(runtime_status),
            prefix=prefix,
        )
        return [_status(instance) for instance in instances]

    def terminate(self, instance_id: str, reason: str) -> str:
        """'terminated', 'finished' (already ended: nothing changes) or 'not_found'."""
        outcome = self._live_store().terminate(instance_id, reason, self._now())
        self._notify_changed()
        return outcome

    def raise_event(self, instance_id: str, name: str, data_json: str | None) -> str:
        """'raised', 'finished' or 'not_found'."""
        if data_json is not None:
            json.loads(data_json)
        outcome = self._live_store().raise_event(instance_id, name, data_json, self._now())
        if outcome == "raised":
            self._mark_ready(instance_id)
        return outcome

    def purge(self, instance_id: str) -> int:
        """1 if a finished instance was deleted with its history, else 0."""
        return self._live_store().purge([instance_id])

    def purge_by(
        self,
        *,
        created_from: datetime,
        created_to: datetime | None = None,
        runtime_status: Collection[str] | None = None,
    ) -> int:
        statuses = [s for s in FINISHED if runtime_status is None or s in runtime_status]
        store = self._live_store()
        matches = store.query(created_from=iso(created_from), created_to=_opt_iso(created_to), statuses=statuses)
        return store.purge([instance.instance_id for instance in matches])

    def history(self, instance_id: str) -> list[dict[str, Any]]:
        return self._live_store().history(instance_id)

    def wait_for(self, instance_id: str, timeout: float) -> dict[str, Any]:
        """Block until the instance is Completed/Failed/Terminated; its status.

        TimeoutError when ``timeout`` passes first; KeyError for an id the hub does not know.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                status = self.get_status(instance_id)
                if status is None:
                    raise KeyError(f"no instance {instance_id!r}")
                if status["runtimeStatus"] in FINISHED:
                    return status
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{instance_id} still {status['runtimeStatus']} after {timeout} s")
                self._changed.wait(remaining)

    def wait_until_idle(self, timeout: float) -> None:
        """Block until no instance is Pending or Running. TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while (active := self._live_store().count_active()) > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{active} instances still active after {timeout} s")
                self._changed.wait(remaining)

    # -- threads --------------------------------------------------------------------------------

    def _dispatch_loop(self, run: _Run) -> None:
        while True:
            with self._ready_cond:
                while not self._ready and not run.stopped.is_set():
                    self._ready_cond.wait()
                if run.stopped.is_set():
                    return
                instance_id = next(iter(self._ready))
                del self._ready[instance_id]
            try:
                again = self._episode(run, instance_id)
            except StoreClosed:
                return
            except Exception:  # one broken instance must not stop all others: logged, the rest go on
                log.exception("episode of %s failed; it resumes on the next message or restart", instance_id)
                continue
            if again:
                self._mark_ready(instance_id)

    def _episode(self, run: _Run, instance_id: str) -> bool:
        """Deliver one message to the instance; True if it may have more to deliver."""
        loaded = run.store.load_episode(instance_id)
        if loaded is None:
            return False
        instance, history, messages = loaded
        cursor = Cursor.from_json(instance.cursor)
        message = next((m for m in messages if deliverable(m.event, cursor, history)), None)
        if message is None or instance.status not in ACTIVE:
            return False
        handle = self._orchestrators.get(instance.name)
        if handle is None:
            log.warning("instance %s waits: no orchestrator named %r is registered", instance_id, instance.name)
            return False
        episode = run_episode(
            handle,
            instance_id=instance_id,
            input_json=instance.input,
            history=history,
            message=message.event,
            cursor=cursor,
            now=self._clock(),
        )
        work_ids = run.store.commit_episode(instance, message.msg_id, episode, self._now())
        if work_ids is None:
            return False
        for work_id in work_ids:
            run.work.put(work_id)
        if episode.timers:
            run.timer_wake.set()
        self._notify_changed()
        return len(messages) > 1 or episode.status == "ContinuedAsNew"

    def _activity_loop(self, run: _Run) -> None:
        while (work_id := run.work.get()) is not None and not run.stopped.is_set():
            try:
                item = run.store.work_item(work_id)
                if item is None:
                    continue  # dropped with its instance, or already done by an earlier run
                completion = self._call_activity(item.name, item.input, item.task_id)
                # recorded even while stop() waits; after it closed the store, StoreClosed drops it
                instance_id = run.store.complete_work(work_id, completion)
            except StoreClosed:
                return
            if instance_id is not None:
                self._mark_ready(instance_id)

    def _call_activity(self, name: str, input_json: str | None, task_id: int) -> Event:
        try:
            activity = self._activities.get(name)
            if activity is None:
                raise LookupError(f"no activity named {name!r} is registered")
            result = activity(input_json if input_json is not None else "null")
            if result is not None and not isinstance(result, str):
                raise TypeError(f"activity {name!r} returned {type(result).__name__}, not JSON text")
        except Exception as exc:  # noqa: BLE001 -- an activity's exception is its TaskFailed, whatever it is
            return event(
                EventType.TASK_FAILED,
                self._now(),
                TaskScheduledId=task_id,
                Reason=str(exc),
                Details=traceback.format_exc(),
            )
        return event(EventType.TASK_COMPLETED, self._now(), TaskScheduledId=task_id, Result=result)

    def _timer_loop(self, run: _Run) -> None:
        while not run.stopped.is_set():
            run.timer_wake.clear()  # before reading the table: a wake-up from now on is not lost
            try:
                for instance_id in run.store.fire_due_timers(self._now()):
                    self._mark_ready(instance_id)
                next_fire = run.store.next_fire_at()
            except StoreClosed:
                return
            wait = None
            if next_fire is not None:
                until = (parse_iso(next_fire) - self._clock()).total_seconds()
                wait = min(max(until, 0.001), _TIMER_RECHECK_S)
            run.timer_wake.wait(wait)

    # -- helpers --------------------------------------------------------------------------------

    def _mark_ready(self, instance_id: str) -> None:
        with self._ready_cond:
            if instance_id not in self._ready:
                self._ready[instance_id] = None
                self._ready_cond.notify()

    def _notify_changed(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _live_store(self) -> HubStore:
        with self._lock:
            if self._store.closed:  # stopped: reads and new work go to the file for the next run
                self._store = HubStore(self._db_path)
            return self._store

    def _now(self) -> str:
        return iso(self._clock())


def _opt_iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso(moment)


def _status(
    instance: Instance, *, history: list[Event] | None = None, show_output: bool = False, show_input: bool = True
) -> dict[str, Any]:
    status = {
        "name": instance.name,
        "instanceId": instance.instance_id,
        "createdTime": instance.created_at,
        "lastUpdatedTime": instance.updated_at,
        "input": json_or_none(instance.input) if show_input else None,
        "output": json_or_none(instance.output),
        "runtimeStatus": instance.status,
        "customStatus": json_or_none(instance.custom_status),
    }
    if history is not None:
        status["history"] = summarize(history, show_output=show_output)
    return status
