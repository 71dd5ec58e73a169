"""``python -m ingestion stats`` over the embedded profile's SQLite job store."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingestion import cli
from ingestion.adapters.sqlite_jobs import SqliteJobStore
from ingestion.model import ErrorInfo, JobStatus
from tests.integration.builders import make_job

S = JobStatus


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data directory whose job store holds 2 indexed, 1 skipped, 1 in review, 1 retry_later, 1 old indexed."""
    now = datetime.now(UTC)
    data = tmp_path / "data"
    data.mkdir()
    store = SqliteJobStore(data / "jobs.sqlite3")  # where build_services finds it
    try:
        for name, status, age, reason in [
            ("a", S.INDEXED, timedelta(minutes=10), None),
            ("b", S.INDEXED, timedelta(minutes=20), None),
            ("c", S.SKIPPED, timedelta(minutes=30), "empty"),
            ("d", S.NEEDS_REVIEW, timedelta(minutes=40), "encrypted"),
            ("e", S.RETRY_LATER, timedelta(minutes=50), "throttled"),
            ("f", S.INDEXED, timedelta(days=3), None),
        ]:
            at = now - age
            error = None if reason is None else ErrorInfo("parse_document", "permanent", reason, "a message", at)
            job = make_job(name, status, path=f"docs/{name}.pdf")
            store.create(replace(job, created_at=at, updated_at=at, last_error=error))
    finally:
        store.close()
    monkeypatch.setenv("INGEST_DATA_DIR", str(data))
    monkeypatch.setenv("INGEST_INBOX_DIR", str(tmp_path / "inbox"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    return data


def test_stats_json_reports_the_rates_failures_and_backlog_of_the_last_day(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The default window is 24 h: the job indexed three days ago is counted but not finished."""
    assert cli.main(["stats", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["window_s"] == 86400
    assert payload["jobs"]["total"] == 6
    assert payload["finished"]["total"] == 4
    assert (payload["success_rate"], payload["indexed_rate"]) == (0.75, 0.5)
    assert [(f["status"], f["reason"], f["count"], f["example_path"]) for f in payload["failures"]] == [
        ("needs_review", "encrypted", 1, "docs/d.pdf"),
        ("retry_later", "throttled", 1, "docs/e.pdf"),
    ]
    assert (payload["backlog"]["total"], payload["backlog"]["oldest_path"]) == (1, "docs/e.pdf")


def test_stats_prints_a_table_over_all_time(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--window all counts every finished job; the human table names the rates and the failures."""
    assert cli.main(["stats", "--window", "all"]) == 0
    out = capsys.readouterr().out
    assert "finished      5 in all time: 3 indexed, 1 skipped, 1 needs_review" in out
    assert "success rate  80.0% (indexed + skipped); indexed only 60.0%" in out
    assert "encrypted" in out and "a message" not in out


def test_stats_refuses_a_window_it_cannot_read(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A window like 1w is a usage error (exit 2) naming the forms it takes."""
    with pytest.raises(SystemExit) as exited:
        cli.main(["stats", "--window", "1w"])
    assert exited.value.code == 2
    assert "30m, 24h, 7d" in capsys.readouterr().err


def test_stats_reports_a_settings_error_as_a_usage_error(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Settings that do not fit together print the message and exit 2, like every command."""
    monkeypatch.setenv("INGEST_CHUNK_TOKENS", "100000")
    with pytest.raises(SystemExit) as exited:
        cli.main(["stats"])
    assert exited.value.code == 2
    assert "INGEST_CHUNK_TOKENS=100000" in capsys.readouterr().err
