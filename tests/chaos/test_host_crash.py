"""The local host killed with SIGKILL while embedding, restarted: every file indexed exactly once."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest

from ingestion.adapters.sqlite_index import SqliteSearchIndex
from ingestion.adapters.sqlite_jobs import SqliteJobStore
from ingestion.api import all_jobs
from ingestion.config import Settings
from ingestion.model import JobStatus, chunk_ids_digest
from tests.emulators.process import environment_without, start_devhost, wait_until
from tests.unit.pipeline_helpers import long_text

FILES = 10
KILLS = 2
WAIT_S = 240.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def start_host(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """The host in its own process, appending to the log file."""
    return start_devhost(env, Path(env["HOST_LOG"]), "--port", "0", append=True)


@pytest.fixture
def host_env(tmp_path: Path) -> dict[str, str]:
    inbox, data = tmp_path / "inbox", tmp_path / "data"
    inbox.mkdir()
    return environment_without("INGEST_") | {
        "INGEST_INBOX_DIR": str(inbox),
        "INGEST_DATA_DIR": str(data),
        "INGEST_WATCH_INTERVAL_S": "0.05",
        "INGEST_RETRY_FIRST_DELAY_S": "0.05",
        "PYTHONUNBUFFERED": "1",
        "HOST_LOG": str(tmp_path / "host.log"),
    }


def wait_for_status(jobs: SqliteJobStore, status: JobStatus, process: subprocess.Popen[bytes], log: str) -> None:
    def reached() -> bool:
        return any(job.status is status for job in list(all_jobs(jobs)))

    wait_until(reached, f"a job reaching {status}", WAIT_S, process=process, log=Path(log), interval_s=0.005)


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

            def all_indexed() -> bool:
                found = list(all_jobs(jobs))
                return len(found) == FILES and all(job.status is JobStatus.INDEXED for job in found)

            wait_until(all_indexed, "every file indexed", WAIT_S, process=process, log=Path(host_env["HOST_LOG"]))
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
