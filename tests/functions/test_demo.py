"""README's first command: the local host ingests the samples, answers a search, and keeps watching."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ingestion.cli import post_search
from tests.conftest import REPO
from tests.emulators.process import environment_without, free_port


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_demo_ingests_the_samples_then_a_dropped_file_becomes_searchable(tmp_path: Path) -> None:
    """demo.sh indexes every sample, answers its search, then a file dropped in inbox/ is found; Ctrl-C stops it."""
    port = free_port()
    inbox = tmp_path / "inbox"
    env = environment_without("INGEST_")
    env |= {"INGEST_DATA_DIR": str(tmp_path / "data"), "INGEST_INBOX_DIR": str(inbox), "INGEST_HOST_PORT": str(port)}
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        demo = subprocess.Popen(
            [shutil.which("bash") or "/bin/bash", str(REPO / "scripts" / "demo.sh")], env=env, stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so the test can press "Ctrl-C" on it
        )  # fmt: skip
    try:
        # When the demo has ingested the samples and answered its question
        deadline = time.monotonic() + 240
        while "Watching" not in log.read_text(errors="replace"):
            assert demo.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
        output = log.read_text(errors="replace")
        # Then every sample is indexed and the answer cites the return policy
        assert "5 indexed (5 files)" in output
        assert "1. return-policy.pdf" in output
        # When a new file is dropped into the inbox it becomes searchable through POST /api/search
        (inbox / "ski-rental.txt").write_text("Ski rental deposit: 75 euros per pair, refunded on return.\n")
        while not any(
            hit["path"] == "ski-rental.txt"
            for hit in post_search(f"http://127.0.0.1:{port}", "ski rental deposit", timeout_s=10)
        ):
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.2)
    finally:
        # And Ctrl-C stops the demo and its host
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(60)  # the host dumps its threads' stacks and exits if stopping takes 30 s
        finally:
            if demo.poll() is None:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait(10)
    assert "Timeout (0:00:30)" not in log.read_text(errors="replace"), log.read_text(errors="replace")[-8000:]
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "the host still listens after Ctrl-C"
