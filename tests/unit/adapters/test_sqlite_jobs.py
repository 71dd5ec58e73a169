"""SqliteJobStore specifics: persistence, lock handling, and writers in separate processes."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest

from ingestion.adapters.sqlite_jobs import SqliteJobStore
from ingestion.errors import TransientError
from ingestion.model import DocumentVersion, Job, JobStatus
from tests.integration.builders import T0

REPO = Path(__file__).resolve().parents[3]


def make_job(doc_id: str) -> Job:
    version = DocumentVersion(etag='"0x1"', size=1, last_modified=T0)
    return Job(doc_id, "uploads", f"{doc_id}.txt", version, JobStatus.QUEUED, T0, T0)


def test_jobs_survive_reopening(tmp_path: Path) -> None:
    """A job written by one store is read, with its etag, by a store opened later on the same file."""
    first = SqliteJobStore(tmp_path / "jobs.sqlite")
    created = first.create(make_job("doc-1"))
    first.close()
    second = SqliteJobStore(tmp_path / "jobs.sqlite")
    assert second.get("doc-1") == created
    second.close()


def test_the_database_uses_wal(tmp_path: Path) -> None:
    """The file is in WAL mode, so readers do not block the writer (and other processes)."""
    SqliteJobStore(tmp_path / "jobs.sqlite").close()
    with sqlite3.connect(tmp_path / "jobs.sqlite") as raw:
        (mode,) = raw.execute("PRAGMA journal_mode").fetchone()
    raw.close()
    assert mode == "wal"


def test_a_locked_database_is_a_transient_error(tmp_path: Path) -> None:
    """A write that cannot get the lock within the busy timeout raises TransientError, not sqlite3's."""
    store = SqliteJobStore(tmp_path / "jobs.sqlite", busy_timeout_s=0.05)
    blocker = sqlite3.connect(tmp_path / "jobs.sqlite", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TransientError, match="locked"):
            store.create(make_job("doc-1"))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.create(make_job("doc-1")).etag  # the store is usable once the lock is gone
    store.close()


def test_naive_datetimes_are_refused(tmp_path: Path) -> None:
    """updated_before without a time zone is a bug, reported as ValueError."""
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    try:
        with pytest.raises(ValueError, match="naive"):
            store.list(updated_before=T0.replace(tzinfo=None))
    finally:
        store.close()


WORKER = textwrap.dedent(
    """
    import sys
    from dataclasses import replace
    from pathlib import Path
    from ingestion.adapters.sqlite_jobs import SqliteJobStore
    from ingestion.errors import ConcurrencyError

    store = SqliteJobStore(Path(sys.argv[1]))
    for _ in range(int(sys.argv[2])):
        while True:
            job = store.get("doc-1")
            try:
                store.replace(replace(job, attempts=job.attempts + 1))
                break
            except ConcurrencyError:
                continue
    store.close()
    """
)


def test_processes_racing_on_one_file_lose_no_update(tmp_path: Path) -> None:
    """Three processes each incrementing one job 40 times (retrying conflicts) reach 120 exactly."""
    path = tmp_path / "jobs.sqlite"
    store = SqliteJobStore(path)
    store.create(make_job("doc-1"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, str(path), "40"], env=env, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    errors = [worker.communicate(timeout=120)[1].decode() for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0], errors
    final = store.get("doc-1")
    store.close()
    assert final is not None
    assert final.attempts == 120
    assert replace(final, attempts=0, etag=None) == make_job("doc-1")
