"""The rule for tests that need a server: skip locally when it cannot start, fail under CI=true."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.emulators.process import ServerProcess, ServerUnavailable, free_port, node_bin, unavailable


def test_an_unavailable_server_skips_the_test_locally(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CI=true, a server that cannot start skips the tests that need it, saying why."""
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Azurite is not available: no node"):
        unavailable("Azurite", "no node")


def test_an_unavailable_server_fails_the_test_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under CI=true the same situation is a failure: CI never passes by skipping."""
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Azurite is not available: no node"):
        unavailable("Azurite", "no node")


def test_a_server_that_exits_at_once_is_reported_with_its_output(tmp_path: Path) -> None:
    """A child that dies before it listens raises ServerUnavailable with its exit code and log."""
    command = [sys.executable, "-c", "import sys; print('bad flag --nope'); sys.exit(3)"]
    server = ServerProcess("broken", command, free_port(), tmp_path)
    with pytest.raises(ServerUnavailable, match=r"exited with 3: bad flag --nope"):
        server.start(timeout_s=30)


def test_a_server_that_never_listens_is_stopped_after_the_deadline(tmp_path: Path) -> None:
    """A child that runs but never opens its port is killed after the timeout, not left behind."""
    server = ServerProcess("silent", [sys.executable, "-c", "import time; time.sleep(60)"], free_port(), tmp_path)
    with pytest.raises(ServerUnavailable, match="did not become ready"):
        server.start(timeout_s=0.5)
    assert server._process is None  # stopped


def test_a_missing_npm_binary_says_how_to_install_it() -> None:
    """An emulator not installed names the command that installs it."""
    with pytest.raises(ServerUnavailable, match="npm ci"):
        node_bin("no-such-emulator")
