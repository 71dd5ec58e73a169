"""The task hub's SQLite file: instances, history, message queues, activity work items and timers.

Every state change is one transaction, so a process killed at any instant leaves a consistent hub:
an activity's work item is deleted only in the transaction that enqueues its completion (a crash
re-runs it: at least once, like Azure), a timer row only in the one that enqueues its TimerFired,
and an episode's message only in the one that appends its history. Rows carry the instance's
``execution_id`` (new on every start, overwrite and continue-as-new): anything arriving for an
older execution, or for an instance that ended, is discarded.

One connection shared by the engine's threads behind a lock: transactions are a few small
statements, and WAL lets another process (or a second engine on the same file) read meanwhile.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ingestion.devhost.replay import CONTINUED_AS_NEW, Cursor, Episode, Event, EventType, event

ACTIVE = ("Pending", "Running")
FINISHED = ("Completed", "Failed", "Terminated")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    instance_id TEXT PRIMARY KEY, name TEXT NOT NULL, status TEXT NOT NULL, input TEXT, output TEXT,
    custom_status TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL, execution_id TEXT NOT NULL,
    cursor TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS instances_created ON instances (created_at);
CREATE TABLE IF NOT EXISTS history (
    instance_id TEXT NOT NULL, seq INTEGER NOT NULL, event TEXT NOT NULL, PRIMARY KEY (instance_id, seq));
CREATE TABLE IF NOT EXISTS messages (
    msg_id INTEGER PRIMARY KEY AUTOINCREMENT, instance_id TEXT NOT NULL, execution_id TEXT NOT NULL,
    event TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS messages_instance ON messages (instance_id, msg_id);
CREATE TABLE IF NOT EXISTS work_items (
    work_id INTEGER PRIMARY KEY AUTOINCREMENT, instance_id TEXT NOT NULL, execution_id TEXT NOT NULL,
    task_id INTEGER NOT NULL, name TEXT NOT NULL, input TEXT);
CREATE INDEX IF NOT EXISTS work_items_instance ON work_items (instance_id);
CREATE TABLE IF NOT EXISTS timers (
    instance_id TEXT NOT NULL, execution_id TEXT NOT NULL, timer_id INTEGER NOT NULL, fire_at TEXT NOT NULL,
    PRIMARY KEY (instance_id, timer_id));
CREATE INDEX IF NOT EXISTS timers_due ON timers (fire_at);
"""


class InstanceExists(Exception):
    """start_new on an instance id that is Pending or Running (finished ids are overwritten)."""


class StoreClosed(Exception):
    """The engine run that owned this store has stopped: late results of abandoned threads stop here."""


@dataclass(frozen=True)
class Instance:
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


class HubStore:
    """Transactions over the hub file; thread-safe. Raises ``StoreClosed`` once closed."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE), never implicit
        self._conn: sqlite3.Connection | None = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL survives a killed process; only power loss can drop the last commits
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)

    @property
    def closed(self) -> bool:
        return self._conn is None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._conn is None:
                raise StoreClosed
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # -- instances --------------------------------------------------------------------------

    def create(self, instance_id: str, name: str, input_json: str | None, now: str) -> None:
        """A new Pending instance with its ExecutionStarted queued; overwrites a finished one."""
        with self._tx() as db:
            row = db.execute("SELECT status FROM instances WHERE instance_id = ?", (instance_id,)).fetchone()
            if row is not None and row["status"] in ACTIVE:
                raise InstanceExists(instance_id)
            _forget(db, instance_id, history=True)
            execution_id = uuid.uuid4().hex
            db.execute(
                "INSERT OR REPLACE INTO instances VALUES (?, ?, 'Pending', ?, NULL, NULL, ?, ?, ?, ?)",
                (instance_id, name, input_json, now, now, execution_id, Cursor().to_json()),
            )
            started = event(EventType.EXECUTION_STARTED, now, Name=name, Input=input_json, Version="")
            _enqueue(db, instance_id, execution_id, started)

    def instance(self, instance_id: str) -> Instance | None:
        with self._tx() as db:
            row = db.execute("SELECT * FROM instances WHERE instance_id = ?", (instance_id,)).fetchone()
        return None if row is None else Instance(**row)

    def query(
        self,
        *,
        created_from: str | None = None,
        created_to: str | None = None,
        statuses: Collection[str] | None = None,
        prefix: str | None = None,
    ) -> list[Instance]:
        where, args = ["1 = 1"], list[Any]()
        if created_from is not None:
            where.append("created_at >= ?")
            args.append(created_from)
        if created_to is not None:
            where.append("created_at <= ?")
            args.append(created_to)
        if statuses is not None:
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            args.extend(statuses)
        if prefix is not None:
            where.append("substr(instance_id, 1, ?) = ?")
            args.extend([len(prefix), prefix])
        sql = f"SELECT * FROM instances WHERE {' AND '.join(where)} ORDER BY created_at"  # noqa: S608 -- fixed clauses, values bound
        with self._tx() as db:
            return [Instance(**row) for row in db.execute(sql, args)]

    def count_active(self) -> int:
        with self._tx() as db:
            return int(db.execute("SELECT count(*) FROM instances WHERE status IN (?, ?)", ACTIVE).fetchone()[0])

    def history(self, instance_id: str) -> list[Event]:
        with self._tx() as db:
            return _history(db, instance_id)

    def terminate(self, instance_id: str, reason: str, now: str) -> str:
        with self._tx() as db:
            row = db.execute("SELECT status FROM instances WHERE instance_id = ?", (instance_id,)).fetchone()
            if row is None:
                return "not_found"
            if row["status"] not in ACTIVE:
                return "finished"
            _append(db, instance_id, [event(EventType.EXECUTION_TERMINATED, now, Input=reason)])
            db.execute(
                "UPDATE instances SET status = 'Terminated', output = ?, updated_at = ? WHERE instance_id = ?",
                (json.dumps(reason), now, instance_id),
            )
            _forget(db, instance_id, history=False)
            return "terminated"

    def raise_event(self, instance_id: str, name: str, data_json: str | None, now: str) -> str:
        with self._tx() as db:
            row = db.execute(
                "SELECT status, execution_id FROM instances WHERE instance_id = ?", (instance_id,)
            ).fetchone()
            if row is None:
                return "not_found"
            if row["status"] not in ACTIVE:
                return "finished"
            _enqueue(
                db, instance_id, row["execution_id"], event(EventType.EVENT_RAISED, now, Name=name, Input=data_json)
            )
            return "raised"

    def purge(self, instance_ids: Sequence[str]) -> int:
        """Delete finished instances among ``instance_ids`` with everything they own."""
        purged = 0
        with self._tx() as db:
            for instance_id in instance_ids:
                row = db.execute("SELECT status FROM instances WHERE instance_id = ?", (instance_id,)).fetchone()
                if row is not None and row["status"] in FINISHED:
                    _forget(db, instance_id, history=True)
                    db.execute("DELETE FROM instances WHERE instance_id = ?", (instance_id,))
                    purged += 1
        return purged

    # -- episodes -----------------------------------------------------------------------------

    def load_episode(self, instance_id: str) -> tuple[Instance, list[Event], list[Message]] | None:
        """The instance, its history and its queued messages, read in one snapshot."""
        with self._tx() as db:
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

    def commit_episode(self, instance: Instance, msg_id: int, episode: Episode, now: str) -> list[int] | None:
        """Apply an episode atomically; the new work ids, or None if the instance moved on meanwhile."""
        with self._tx() as db:
            row = db.execute(
                "SELECT status, execution_id FROM instances WHERE instance_id = ?", (instance.instance_id,)
            ).fetchone()
            if row is None or row["status"] not in ACTIVE or row["execution_id"] != instance.execution_id:
                return None  # terminated, purged or overwritten while the orchestrator ran
            iid = instance.instance_id
            if episode.status == CONTINUED_AS_NEW:
                _forget(db, iid, history=True)
                execution_id = uuid.uuid4().hex
                db.execute(
                    "UPDATE instances SET status = 'Running', input = ?, custom_status = ?, updated_at = ?,"
                    " execution_id = ?, cursor = ? WHERE instance_id = ?",
                    (episode.new_input, episode.custom_status, now, execution_id, Cursor().to_json(), iid),
                )
                started = event(
                    EventType.EXECUTION_STARTED, now, Name=instance.name, Input=episode.new_input, Version=""
                )
                _enqueue(db, iid, execution_id, started)
                return []
            _append(db, iid, episode.events)
            db.execute("DELETE FROM messages WHERE msg_id = ?", (msg_id,))
            work_ids = []
            for call in episode.activities:
                cur = db.execute(
                    "INSERT INTO work_items (instance_id, execution_id, task_id, name, input) VALUES (?, ?, ?, ?, ?)",
                    (iid, instance.execution_id, call.task_id, call.name, call.input),
                )
                work_ids.append(int(cur.lastrowid or 0))
            db.executemany(
                "INSERT INTO timers VALUES (?, ?, ?, ?)",
                [(iid, instance.execution_id, timer.timer_id, timer.fire_at) for timer in episode.timers],
            )
            if episode.status in FINISHED:
                _forget(db, iid, history=False)  # an ended instance runs nothing more
            db.execute(
                "UPDATE instances SET status = ?, output = ?, custom_status = ?, updated_at = ?, cursor = ?"
                " WHERE instance_id = ?",
                (episode.status, episode.output, episode.custom_status, now, episode.cursor.to_json(), iid),
            )
            return work_ids

    def instances_with_messages(self) -> list[str]:
        with self._tx() as db:
            rows = db.execute("SELECT instance_id FROM messages GROUP BY instance_id ORDER BY min(msg_id)").fetchall()
        return [row[0] for row in rows]

    # -- activities and timers ------------------------------------------------------------------

    def pending_work(self) -> list[int]:
        with self._tx() as db:
            return [row[0] for row in db.execute("SELECT work_id FROM work_items ORDER BY work_id")]

    def work_item(self, work_id: int) -> WorkItem | None:
        with self._tx() as db:
            row = db.execute(
                "SELECT work_id, instance_id, task_id, name, input FROM work_items WHERE work_id = ?", (work_id,)
            ).fetchone()
        return None if row is None else WorkItem(**row)

    def complete_work(self, work_id: int, completion: Event) -> str | None:
        """Swap the work item for its completion message; the instance id, or None if discarded."""
        with self._tx() as db:
            row = db.execute(
                "SELECT w.instance_id, w.execution_id, i.status, i.execution_id AS current FROM work_items w"
                " LEFT JOIN instances i ON i.instance_id = w.instance_id WHERE w.work_id = ?",
                (work_id,),
            ).fetchone()
            if row is None:
                return None  # already completed by another run, or dropped with its instance
            db.execute("DELETE FROM work_items WHERE work_id = ?", (work_id,))
            if row["status"] not in ACTIVE or row["current"] != row["execution_id"]:
                return None
            _enqueue(db, row["instance_id"], row["execution_id"], completion)
            return str(row["instance_id"])

    def next_fire_at(self) -> str | None:
        with self._tx() as db:
            row = db.execute("SELECT min(fire_at) FROM timers").fetchone()
        return None if row[0] is None else str(row[0])

    def fire_due_timers(self, now: str) -> list[str]:
        """Turn every timer due at ``now`` into a TimerFired message; the instances that got one."""
        with self._tx() as db:
            due = db.execute("SELECT * FROM timers WHERE fire_at <= ? ORDER BY fire_at", (now,)).fetchall()
            for timer in due:
                fired = event(EventType.TIMER_FIRED, now, TimerId=timer["timer_id"], FireAt=timer["fire_at"])
                _enqueue(db, timer["instance_id"], timer["execution_id"], fired)
            db.execute("DELETE FROM timers WHERE fire_at <= ?", (now,))
        return list(dict.fromkeys(str(timer["instance_id"]) for timer in due))


def _history(db: sqlite3.Connection, instance_id: str) -> list[Event]:
    rows = db.execute("SELECT event FROM history WHERE instance_id = ? ORDER BY seq", (instance_id,))
    return [json.loads(row[0]) for row in rows]


def _append(db: sqlite3.Connection, instance_id: str, events: Sequence[Event]) -> None:
    start = db.execute("SELECT coalesce(max(seq), -1) + 1 FROM history WHERE instance_id = ?", (instance_id,))
    base = int(start.fetchone()[0])
    db.executemany(
        "INSERT INTO history VALUES (?, ?, ?)",
        [(instance_id, base + offset, json.dumps(e)) for offset, e in enumerate(events)],
    )


def _enqueue(db: sqlite3.Connection, instance_id: str, execution_id: str, message: Event) -> None:
    db.execute(
        "INSERT INTO messages (instance_id, execution_id, event) VALUES (?, ?, ?)",
        (instance_id, execution_id, json.dumps(message)),
    )


def _forget(db: sqlite3.Connection, instance_id: str, *, history: bool) -> None:
    """Drop the instance's queued messages, work items and timers (and its history if asked)."""
    tables = ("messages", "work_items", "timers", *(("history",) if history else ()))
    for table in tables:
        db.execute(f"DELETE FROM {table} WHERE instance_id = ?", (instance_id,))  # noqa: S608 -- fixed table names
