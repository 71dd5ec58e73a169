"""The local host killed with SIGKILL while embedding, restarted: every file indexed exactly once."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

from ingestion.adapters.sqlite_index import SqliteSearchIndex
from ingestion.adapters.sqlite_jobs import SqliteJobStore
from ingestion.api import all_jobs
from ingestion.config import Settings
from ingestion.model import JobStatus, chunk_ids_digest
from tests.conftest import REPO
from tests.unit.pipeline_helpers import long_text

FILES = 10
KILLS = 2
WAIT_S = 240.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def start_host(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The host in its own process, logging to a file (a pipe nobody reads would block it)."""
    with Path(env["HOST_LOG"]).open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "ingestion.devhost", "--port", "0"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def log_tail(env: dict[str, str]) -> str:
    return Path(env["HOST_LOG"]).read_text(errors="replace")[-3000:]


@pytest.fixture
def host_env(tmp_path: Path) -> dict[str, str]:
    inbox, data = tmp_path / "inbox", tmp_path / "data"
    inbox.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("INGEST_")}
    env |= {
        "INGEST_INBOX_DIR": str(inbox),
        "INGEST_DATA_DIR": str(data),
        "INGEST_WATCH_INTERVAL_S": "0.05",
        "INGEST_RETRY_FIRST_DELAY_S": "0.05",
        "PYTHONUNBUFFERED": "1",
        "HOST_LOG": str(tmp_path / "host.log"),
    }
    return env


def wait_for_status(jobs: SqliteJobStore, status: JobStatus, process: subprocess.Popen[bytes], log: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if any(job.status is status for job in list(all_jobs(jobs))):
            return
        assert process.poll() is None, Path(log).read_text(errors="replace")[-3000:]
        time.sleep(0.005)
    pytest.fail(f"no job reached {status} in {WAIT_S} s")


def test_sigkill_during_embedding_then_restart_indexes_every_file_exactly_once(host_env: dict[str, str]) -> None:
    """Kill -9 the host twice mid-embedding; after a restart every file is indexed once, nothing extra."""
    # Given a batch of files large enough that embedding takes a while
    inbox, data = Path(host_env["INGEST_INBOX_DIR"]), Path(host_env["INGEST_DATA_DIR"])
    for number in range(FILES):
        (inbox / f"report-{number}.txt").write_text("\n\n".join(long_text(1500, seed=number)))
    data.mkdir()
    jobs = SqliteJobStore(data / "jobs.sqlite3")
    try:
        # When the host is killed with SIGKILL while some file is being embedded, twice
        for _ in range(KILLS):
            process = start_host(host_env)
            try:
                wait_for_status(jobs, JobStatus.EMBEDDING, process, host_env["HOST_LOG"])
                time.sleep(random.uniform(0, 0.05))
            finally:
                process.send_signal(signal.SIGKILL)
                process.wait(30)
        # Then a restarted host finishes every file
        process = start_host(host_env)
        try:
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:
                found = list(all_jobs(jobs))
                if len(found) == FILES and all(job.status is JobStatus.INDEXED for job in found):
                    break
                assert process.poll() is None, log_tail(host_env)
                time.sleep(0.1)
            else:
                pytest.fail(f"not all indexed: {[(job.path, job.status.value) for job in list(all_jobs(jobs))]}")
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(60) == 0
        # And the index holds exactly each file's chunks: none missing, none extra, no other version
        settings = Settings.from_env(host_env)
        index = SqliteSearchIndex(data / "index.sqlite3", settings.embedding.dimensions)
        try:
            total = 0
            for job in list(all_jobs(jobs)):
                held = dict(index.ids_for_doc(job.doc_id))
                assert len(held) == job.chunk_count > 0, job.path
                assert chunk_ids_digest(held) == job.chunk_ids_digest, job.path
                assert set(held.values()) == {job.version.content_hash}, job.path
                total += len(held)
        finally:
            index.close()
        with closing(sqlite3.connect(data / "index.sqlite3")) as db:
            assert db.execute("SELECT count(*) FROM chunks").fetchone()[0] == total
    finally:
        jobs.close()
