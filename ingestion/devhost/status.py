"""The read side of the task hub: its rows, the reads of ``HubReader``, and what the status API shows.

``HubReader`` reads the hub file in snapshots on its own connection (``store.HubStore`` adds the
writes). ``StatusQueries`` is the part of ``DurableEngine``'s client API built on reads (and purges
of finished instances): the DurableOrchestrationStatus JSON shape, Azure's history summary, the
instance filters of the query and purge APIs, and the waits tests and tools block on.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ingestion.devhost.replay import Event, EventType, iso

if TYPE_CHECKING:
    from ingestion.devhost.store import HubStore

ACTIVE = ("Pending", "Running")
FINISHED = ("Completed", "Failed", "Terminated")


@dataclass(frozen=True)
class Instance:
    """One row of the hub's ``instances`` table."""

    instance_id: str
    name: str
    status: str
    input: str | None
    output: str | None
    custom_status: str | None
    created_at: str
    updated_at: str
    execution_id: str
    cursor: str


@dataclass(frozen=True)
class Message:
    msg_id: int
    event: Event


@dataclass(frozen=True)
class WorkItem:
    work_id: int
    instance_id: str
    task_id: int
    name: str
    input: str | None


class HubReader:
    """Snapshot reads over one connection (WAL: they go on while another connection writes); thread-safe."""

    def __init__(self, reader: sqlite3.Connection) -> None:
        self._read_lock = threading.Lock()
        self._reader = reader

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._read_lock:
            self._reader.execute("BEGIN")  # deferred: one snapshot, no write lock
            try:
                yield self._reader
            finally:
                if self._reader.in_transaction:
                    self._reader.execute("ROLLBACK")

    def instance(self, instance_id: str) -> Instance | None:
        with self._read() as db:
            row = db.execute("SELECT * FROM instances WHERE instance_id = ?", (instance_id,)).fetchone()
        return None if row is None else Instance(**row)

    def query(self, where: str, args: Sequence[Any]) -> list[Instance]:
        """Instances matching a ``status.instance_filter`` clause, oldest first."""
        sql = f"SELECT * FROM instances WHERE {where} ORDER BY created_at"  # noqa: S608 -- fixed clauses, values bound
        with self._read() as db:
            return [Instance(**row) for row in db.execute(sql, args)]

    def count_active(self) -> int:
        with self._read() as db:
            return int(db.execute("SELECT count(*) FROM instances WHERE status IN (?, ?)", ACTIVE).fetchone()[0])

    def history(self, instance_id: str) -> list[Event]:
        with self._read() as db:
            return _history(db, instance_id)

    def load_episode(self, instance_id: str) -> tuple[Instance, list[Event], list[Message]] | None:
        """The instance, its history and its queued messages, read in one snapshot."""
        with self._read() as db:
            row = db.execute("SELECT * FROM instances WHERE instance_id = ?", (instance_id,)).fetchone()
            if row is None:
                return None
            messages = [
                Message(m["msg_id"], json.loads(m["event"]))
                for m in db.execute(
                    "SELECT msg_id, event FROM messages WHERE instance_id = ? AND execution_id = ? ORDER BY msg_id",
                    (instance_id, row["execution_id"]),
                )
            ]
            return Instance(**row), _history(db, instance_id), messages

    def resume_points(self) -> tuple[list[int], list[str]]:
        """The work items left to run and the instances with queued messages, oldest first."""
        with self._read() as db:
            work = [row[0] for row in db.execute("SELECT work_id FROM work_items ORDER BY work_id")]
            sql = "SELECT instance_id FROM messages GROUP BY instance_id ORDER BY min(msg_id)"
            return work, [row[0] for row in db.execute(sql)]

    def work_item(self, work_id: int) -> WorkItem | None:
        with self._read() as db:
            row = db.execute(
                "SELECT work_id, instance_id, task_id, name, input FROM work_items WHERE work_id = ?", (work_id,)
            ).fetchone()
        return None if row is None else WorkItem(**row)

    def next_fire_at(self) -> str | None:
        with self._read() as db:
            row = db.execute("SELECT min(fire_at) FROM timers").fetchone()
        return None if row[0] is None else str(row[0])


def _history(db: sqlite3.Connection, instance_id: str) -> list[Event]:
    rows = db.execute("SELECT event FROM history WHERE instance_id = ? ORDER BY seq", (instance_id,))
    return [json.loads(row[0]) for row in rows]


class StatusQueries:
    """Status, queries, purges and waits over ``self._store``; ``self._changed`` is notified on changes."""

    _store: HubStore
    _changed: threading.Condition

    def get_status(
        self,
        instance_id: str,
        *,
        show_history: bool = False,
        show_history_output: bool = False,
        show_input: bool = True,
    ) -> dict[str, Any] | None:
        """The DurableOrchestrationStatus JSON shape, or None for an unknown instance."""
        instance = self._store.instance(instance_id)
        if instance is None:
            return None
        history = self._store.history(instance_id) if show_history else None
        return instance_status(instance, history=history, show_output=show_history_output, show_input=show_input)

    def query(
        self,
        *,
        created_from: datetime | None = None,
        created_to: datetime | None = None,
        runtime_status: Collection[str] | None = None,
        prefix: str | None = None,
    ) -> list[dict[str, Any]]:
        where = instance_filter(created_from, created_to, runtime_status, prefix)
        return [instance_status(instance) for instance in self._store.query(*where)]

    def purge(self, instance_id: str) -> int:
        """1 if a finished instance was deleted with its history, else 0."""
        return self._store.purge([instance_id])

    def purge_by(
        self,
        *,
        created_from: datetime,
        created_to: datetime | None = None,
        runtime_status: Collection[str] | None = None,
    ) -> int:
        statuses = [s for s in FINISHED if runtime_status is None or s in runtime_status]
        where = instance_filter(created_from, created_to, statuses, None)
        return self._store.purge([instance.instance_id for instance in self._store.query(*where)])

    def history(self, instance_id: str) -> list[dict[str, Any]]:
        return self._store.history(instance_id)

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
            while (active := self._store.count_active()) > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{active} instances still active after {timeout} s")
                self._changed.wait(remaining)


_SUMMARIZED = frozenset(
    {
        EventType.EXECUTION_STARTED,
        EventType.TASK_COMPLETED,
        EventType.TASK_FAILED,
        EventType.TIMER_FIRED,
        EventType.EVENT_RAISED,
        EventType.EXECUTION_COMPLETED,
        EventType.EXECUTION_TERMINATED,
    }
)


def instance_status(
    instance: Instance, *, history: list[Event] | None = None, show_output: bool = False, show_input: bool = True
) -> dict[str, Any]:
    """The DurableOrchestrationStatus JSON shape (``history`` summarized when given)."""
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


def summarize(history: list[Event], *, show_output: bool) -> list[dict[str, Any]]:
    """History as Azure's status API shows it: outcomes only, named by function, oldest first."""
    scheduled = {e["EventId"]: e for e in history if e["EventType"] == EventType.TASK_SCHEDULED}
    summary: list[dict[str, Any]] = []
    for e in history:
        kind = e["EventType"]
        if kind not in _SUMMARIZED:
            continue  # the replay bookkeeping (episode markers, scheduling) stays internal
        item: dict[str, Any] = {"EventType": EventType(kind).name.title().replace("_", "")}
        if kind == EventType.EXECUTION_STARTED:
            item |= {"FunctionName": e["Name"]}
        elif kind in (EventType.TASK_COMPLETED, EventType.TASK_FAILED):
            task = scheduled.get(e["TaskScheduledId"], {})
            item |= {"FunctionName": task.get("Name"), "ScheduledTime": task.get("Timestamp")}
            item |= {"Result": json_or_none(e["Result"])} if kind == EventType.TASK_COMPLETED and show_output else {}
            item |= {"Reason": e["Reason"], "Details": e["Details"]} if kind == EventType.TASK_FAILED else {}
        elif kind == EventType.TIMER_FIRED:
            item |= {"FireAt": e["FireAt"]}
        elif kind == EventType.EVENT_RAISED:
            item |= {"Name": e["Name"]} | ({"Input": json_or_none(e["Input"])} if show_output else {})
        elif kind == EventType.EXECUTION_COMPLETED:
            item |= {"OrchestrationStatus": e["OrchestrationStatus"]}
            item |= {"Result": json_or_none(e["Result"])} if show_output else {}
        elif kind == EventType.EXECUTION_TERMINATED:
            item |= {"OrchestrationStatus": "Terminated", "Reason": e["Input"]}
        summary.append(item | {"Timestamp": e["Timestamp"]})
    return summary


def instance_filter(
    created_from: datetime | None,
    created_to: datetime | None,
    statuses: Collection[str] | None,
    prefix: str | None,
) -> tuple[str, list[Any]]:
    """A ``WHERE`` clause over ``instances`` (fixed text, values bound) and its values."""
    where, args = ["1 = 1"], list[Any]()
    if created_from is not None:
        where.append("created_at >= ?")
        args.append(iso(created_from))
    if created_to is not None:
        where.append("created_at <= ?")
        args.append(iso(created_to))
    if statuses is not None:
        where.append(f"status IN ({', '.join('?' * len(statuses))})")
        args.extend(statuses)
    if prefix is not None:
        where.append("substr(instance_id, 1, ?) = ?")
        args.extend([len(prefix), prefix])
    return " AND ".join(where), args


def json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)
