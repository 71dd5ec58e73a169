"""The task hub's SQLite file: instances, history, message queues, activity work items and timers.

Every state change is one transaction, so a process killed at any instant leaves a consistent hub:
an activity's work item is deleted only in the transaction that enqueues its completion (a crash
re-runs it: at least once, like Azure), a timer row only in the one that enqueues its TimerFired,
and an episode's messages only in the one that appends its history. Rows carry the instance's
``execution_id`` (new on every start, overwrite and continue-as-new): anything arriving for an
older execution, or for an instance that ended, is discarded. One writer connection (``BEGIN
IMMEDIATE``) and one reader connection (snapshots: WAL reads go on while another connection holds
the write lock), each behind its own lock. ``lock_hub`` keeps a second engine off the file; writes
of engine threads name their run (``owner``) and are dropped once ``own`` moved on (stop/restart).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from ingestion.devhost.replay import CONTINUED_AS_NEW, Cursor, Episode, Event, EventType, event
from ingestion.devhost.status import ACTIVE, FINISHED, HubReader, Instance

BUSY_TIMEOUT_S = 30.0  # how long a statement waits for another connection's write lock

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


class HubLocked(RuntimeError):
    """Another engine (this process or another) runs on the hub file."""


def lock_hub(db_path: Path) -> IO[str]:
    """Hold ``<db>.lock`` exclusively (the OS drops it with the process); HubLocked if another holder has it."""
    handle = db_path.with_name(db_path.name + ".lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise HubLocked(f"task hub {db_path} is in use by another engine ({holder}): one engine per hub file") from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()}")
    handle.flush()
    return handle


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: transactions are explicit, never implicit
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # NORMAL in WAL survives a killed process, not a power loss
    return conn


class HubStore(HubReader):
    """Write transactions over the hub file (and the reads of ``HubReader``); thread-safe."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._conn = _connect(path)
        self._conn.executescript(_SCHEMA)
        super().__init__(_connect(path))
        self._owner: object = None

    def own(self, owner: object) -> None:
        """From now on only writes naming ``owner`` (or no owner) apply; waits for a write in progress."""
        with self._write_lock:
            self._owner = owner

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._write_lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    # -- instances --------------------------------------------------------------------------

    def create(self, instance_id: str, name: str, input_json: str | None, now: str) -> None:
        """A new Pending instance with its ExecutionStarted queued; overwrites a finished one."""
        with self._tx() as db:
            if (row := _current(db, instance_id)) is not None and row["status"] in ACTIVE:
                raise InstanceExists(instance_id)
            _forget(db, instance_id, history=True)
            execution_id = uuid.uuid4().hex
            db.execute(
                "INSERT OR REPLACE INTO instances VALUES (?, ?, 'Pending', ?, NULL, NULL, ?, ?, ?, ?)",
                (instance_id, name, input_json, now, now, execution_id, Cursor().to_json()),
            )
            started = event(EventType.EXECUTION_STARTED, now, Name=name, Input=input_json, Version="")
            _enqueue(db, instance_id, execution_id, started)

    def terminate(self, instance_id: str, reason: str, now: str) -> str:
        with self._tx() as db:
            if (row := _current(db, instance_id)) is None:
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
            if (row := _current(db, instance_id)) is None:
                return "not_found"
            if row["status"] not in ACTIVE:
                return "finished"
            raised = event(EventType.EVENT_RAISED, now, Name=name, Input=data_json)
            _enqueue(db, instance_id, row["execution_id"], raised)
            return "raised"

    def purge(self, instance_ids: Sequence[str]) -> int:
        """Delete finished instances among ``instance_ids`` with everything they own."""
        purged = 0
        with self._tx() as db:
            for instance_id in instance_ids:
                if (row := _current(db, instance_id)) is not None and row["status"] in FINISHED:
                    _forget(db, instance_id, history=True)
                    db.execute("DELETE FROM instances WHERE instance_id = ?", (instance_id,))
                    purged += 1
        return purged

    # -- episodes -----------------------------------------------------------------------------

    def commit_episode(
        self, instance: Instance, msg_ids: Sequence[int], episode: Episode, now: str, *, owner: object
    ) -> list[int] | None:
        """Apply an episode atomically; the new work ids, or None if the instance moved on meanwhile
        (terminated, purged or overwritten; its cursor or a consumed message changed): never twice."""
        with self._tx() as db:
            row = _current(db, instance.instance_id)
            if owner is not self._owner or row is None or row["status"] not in ACTIVE:
                return None
            if (row["execution_id"], row["cursor"]) != (instance.execution_id, instance.cursor):
                return None
            marks = ", ".join("?" * len(msg_ids))
            sql = f"SELECT count(*) FROM messages WHERE msg_id IN ({marks})"  # noqa: S608 -- placeholders only
            if db.execute(sql, list(msg_ids)).fetchone()[0] != len(msg_ids):
                return None
            db.execute(f"DELETE FROM messages WHERE msg_id IN ({marks})", list(msg_ids))  # noqa: S608
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

    # -- activities and timers ------------------------------------------------------------------

    def complete_work(self, work_id: int, completion: Event, *, owner: object) -> str | None:
        """Swap the work item for its completion message; the instance id, or None if discarded."""
        with self._tx() as db:
            row = db.execute(
                "SELECT w.instance_id, w.execution_id, i.status, i.execution_id AS current FROM work_items w"
                " LEFT JOIN instances i ON i.instance_id = w.instance_id WHERE w.work_id = ?",
                (work_id,),
            ).fetchone()
            if owner is not self._owner or row is None:
                return None  # a late result of a stopped run, or done by another run, or dropped with its instance
            db.execute("DELETE FROM work_items WHERE work_id = ?", (work_id,))
            if row["status"] not in ACTIVE or row["current"] != row["execution_id"]:
                return None
            _enqueue(db, row["instance_id"], row["execution_id"], completion)
            return str(row["instance_id"])

    def fire_due_timers(self, now: str, *, owner: object) -> list[str]:
        """Turn every timer due at ``now`` into a TimerFired message; the instances that got one."""
        with self._tx() as db:
            if owner is not self._owner:
                return []
            due = db.execute("SELECT * FROM timers WHERE fire_at <= ? ORDER BY fire_at", (now,)).fetchall()
            for timer in due:
                fired = event(EventType.TIMER_FIRED, now, TimerId=timer["timer_id"], FireAt=timer["fire_at"])
                _enqueue(db, timer["instance_id"], timer["execution_id"], fired)
            db.execute("DELETE FROM timers WHERE fire_at <= ?", (now,))
        return list(dict.fromkeys(str(timer["instance_id"]) for timer in due))


def _current(db: sqlite3.Connection, instance_id: str) -> sqlite3.Row | None:
    row: sqlite3.Row | None = db.execute(
        "SELECT status, execution_id, cursor FROM instances WHERE instance_id = ?", (instance_id,)
    ).fetchone()
    return row


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
