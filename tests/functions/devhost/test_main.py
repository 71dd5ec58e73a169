"""``python -m ingestion.devhost`` as a developer runs it: serves the app, stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ingestion import cli
from ingestion.devhost.host import Host
from tests.conftest import REPO
from tests.functions.devhost import sample_app
from tests.functions.devhost.conftest import call
from tests.unit.test_errors_config import AZURE

APP = """
import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)


@app.route(route="hello/{name}", methods=["GET"])
def hello(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("hello " + req.route_params["name"])
"""


@pytest.mark.timeout(60)
def test_cli_serves_the_app_and_exits_zero_on_sigterm(tmp_path: Path) -> None:
    """It logs where it listens and each route, answers on them, and exits 0 on SIGTERM."""
    (tmp_path / "function_app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "local.settings.json").write_text('{"Values": {"INGEST_CONTAINER": "uploads"}}')
    env = os.environ | {
        "PYTHONPATH": str(REPO),
        "INGEST_DATA_DIR": str(tmp_path / "data"),
        "INGEST_INBOX_DIR": str(tmp_path / "inbox"),
    }
    command = [sys.executable, "-m", "ingestion.devhost", "--port", "0", "--app-dir", str(tmp_path)]
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as process:
        try:
            assert process.stderr is not None
            lines = []
            for line in process.stderr:
                lines.append(line)
                if "hello: [GET]" in line:
                    break
            text = "".join(lines)
            port = re.search(r"listening on http://127\.0\.0\.1:(\d+)", text)
            assert port is not None, text
            assert f"http://127.0.0.1:{port.group(1)}/api/hello/{{name}}" in text
            reply = call("GET", f"http://127.0.0.1:{port.group(1)}/api/hello/dev")
            assert (reply.status, reply.body) == (200, b"hello dev")
            process.send_signal(signal.SIGTERM)
            _, rest = process.communicate(timeout=30)  # drains stderr so the child never blocks on it
            assert process.returncode == 0, rest
            assert "stopped" in rest
        finally:
            if process.poll() is None:
                process.kill()


@pytest.mark.timeout(60)
def test_cli_ingest_refuses_a_data_directory_another_host_is_using(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two engines on one task hub would corrupt it: the CLI says so and exits 2 instead."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.txt").write_text("some words")
    with Host(sample_app.app, data_dir=tmp_path / "data", blob_source=None, port=0):
        code = cli.main(["--data-dir", str(tmp_path / "data"), "ingest", str(inbox)])
    assert code == 2
    assert "another host uses this data directory" in capsys.readouterr().err


def test_cli_ingest_says_it_needs_the_embedded_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On the azure profile a local folder is not the container: ingest says so (exit 2) instead of ignoring it."""
    for name, value in AZURE.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        cli.main(["ingest", str(tmp_path)])
    assert exited.value.code == 2
    assert "needs the embedded profile" in capsys.readouterr().err


def test_cli_reconcile_dry_run_prints_the_plan_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file nobody's trigger saw: --dry-run names the rule and the file, and creates no job."""
    inbox, data = tmp_path / "inbox", tmp_path / "data"
    inbox.mkdir()
    (inbox / "unseen.txt").write_text("A file whose event was lost.")
    monkeypatch.setenv("INGEST_INBOX_DIR", str(inbox))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    assert cli.main(["--data-dir", str(data), "reconcile", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "missed_trigger      unseen.txt: a blob without a job -> planned" in out
    assert "1 actions; read 1 blobs" in out
    assert cli.main(["--data-dir", str(data), "status", "--json"]) == 0
    assert capsys.readouterr().out.strip() == ""  # still no job


def test_cli_reconcile_without_a_host_says_what_it_needs() -> None:
    """Applying needs a Durable client: without --url or --dry-run the CLI says so (exit 2)."""
    with pytest.raises(SystemExit) as exited:
        cli.main(["reconcile"])
    assert exited.value.code == 2
