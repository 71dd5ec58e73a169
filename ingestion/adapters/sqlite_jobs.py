"""The embedded ``JobStore``: job documents in one SQLite table, with ETag-guarded writes.

Optimistic concurrency works as in Cosmos DB: every write stores a fresh ``etag`` (uuid4 hex) and
``replace`` updates only the row that still carries the caller's one, in a single statement, so two
writers (threads or processes) racing on one job cannot both win. WAL mode lets readers proceed
while one process writes; ``busy_timeout`` makes writers queue instead of failing.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from ingestion.adapters._sqlite import open_sqlite, sqlite_errors, transaction
from ingestion.errors import ConcurrencyError
from ingestion.model import Job, JobStatus
from ingestion.ports import JobPage

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    doc_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    etag TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, doc_id);
"""


class SqliteJobStore:
    """Jobs in the SQLite file ``path`` (created if missing). Call ``close()`` when done."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 30.0) -> None:
        self._path = path
        self._db = open_sqlite(path, busy_timeout_s)
        # One connection shared behind a lock: SQLite serializes writers anyway, and one
        # connection per object is easy to close (no connection left behind per thread).
        self._lock = threading.RLock()
        try:
            with sqlite_errors(str(path)), transaction(self._db) as db:
                _create_schema(db)
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def get(self, doc_id: str) -> Job | None:
        with self._lock, sqlite_errors(doc_id):
            row = self._db.execute("SELECT etag, body FROM jobs WHERE doc_id = ?", (doc_id,)).fetchone()
        return None if row is None else _job(row)

    def get_many(self, doc_ids: Sequence[str]) -> dict[str, Job]:
        with self._lock, sqlite_errors("jobs"):
            rows = self._db.execute(
                "SELECT etag, body FROM jobs WHERE doc_id IN (SELECT value FROM json_each(?))",
                (json.dumps(list(doc_ids)),),
            ).fetchall()
        return {job.doc_id: job for job in map(_job, rows)}

    def create(self, job: Job) -> Job:
        etag = uuid.uuid4().hex
        try:
            with self._lock, sqlite_errors(job.doc_id):
                self._db.execute(
                    "INSERT INTO jobs (doc_id, status, updated_at, etag, body) VALUES (?, ?, ?, ?, ?)",
                    _row(job, etag),
                )
        except sqlite3.IntegrityError as error:
            raise ConcurrencyError(f"{job.doc_id}: a job already exists") from error
        return replace(job, etag=etag)

    def replace(self, job: Job) -> Job:
        if job.etag is None:
            raise ConcurrencyError(f"{job.doc_id}: replace needs the etag the job was read with")
        doc_id, status, updated_at, etag, body = _row(job, uuid.uuid4().hex)
        with self._lock, sqlite_errors(job.doc_id):
            cursor = self._db.execute(
                "UPDATE jobs SET status = ?, updated_at = ?, etag = ?, body = ? WHERE doc_id = ? AND etag = ?",
                (status, updated_at, etag, body, doc_id, job.etag),
            )
        if cursor.rowcount != 1:
            raise ConcurrencyError(f"{job.doc_id}: the job changed (or is gone) since etag {job.etag}")
        return replace(job, etag=etag)

    def list(
        self,
        status: JobStatus | None = None,
        *,
        updated_before: datetime | None = None,
        limit: int = 500,
        continuation: str | None = None,
    ) -> JobPage:
        if limit <= 0:
            raise ValueError("limit must be positive")
        clauses: list[str] = ["1 = 1"]
        params: list[str] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status.value)
        if updated_before is not None:
            clauses.append("updated_at < ?")
            params.append(_stamp(updated_before))
        if continuation is not None:
            clauses.append("doc_id > ?")
            params.append(continuation)
        # One row more than asked says whether another page exists, so the last page ends with None.
        sql = f"SELECT etag, body FROM jobs WHERE {' AND '.join(clauses)} ORDER BY doc_id LIMIT ?"  # noqa: S608 - fixed clauses
        with self._lock, sqlite_errors("jobs"):
            rows = self._db.execute(sql, (*params, limit + 1)).fetchall()
        jobs = [_job(row) for row in rows[:limit]]
        return JobPage(jobs, jobs[-1].doc_id if len(rows) > limit else None)

    def count_by_status(self) -> dict[JobStatus, int]:
        """How many jobs are in each status (statuses without any job are absent)."""
        with self._lock, sqlite_errors("jobs"):
            rows = self._db.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
        return {JobStatus(status): count for status, count in rows}


def _create_schema(db: sqlite3.Connection) -> None:
    for statement in filter(str.strip, _SCHEMA.split(";")):
        db.execute(statement)


def _stamp(moment: datetime) -> str:
    """Fixed-width UTC text, so string order is time order in SQL comparisons."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _row(job: Job, etag: str) -> tuple[str, str, str, str, str]:
    # ASCII escapes: a name read from a folder may hold lone surrogates (undecodable bytes), which
    # SQLite's UTF-8 text cannot store; the job must still be recorded to say why it failed.
    body = json.dumps(job.to_payload(), ensure_ascii=True, separators=(",", ":"))
    return job.doc_id, job.status.value, _stamp(job.updated_at), etag, body


def _job(row: tuple[str, str]) -> Job:
    etag, body = row
    return Job.from_payload(json.loads(body), etag=etag)
