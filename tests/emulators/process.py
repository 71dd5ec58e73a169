"""Start a test server as a child process on 127.0.0.1, wait until it answers, stop it afterwards.

Servers the tests need (Azurite, the Cosmos DB emulator, the local AI Search and embeddings
servers) are started by session fixtures, never assumed running. When one cannot start, its tests
skip locally and fail under ``CI=true`` (``unavailable``), so CI never passes by skipping them.

Tests that run the local host themselves start it with ``start_devhost`` in an environment built by
``environment_without``, and poll for what they expect of it with ``wait_until``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NoReturn, TypeVar

import pytest

REPO = Path(__file__).resolve().parents[2]
NODE_BIN = REPO / "node_modules" / ".bin"
HOST = "127.0.0.1"
LOG_TAIL_CHARS = 6000  # of a child's log, shown when a wait fails
T = TypeVar("T")


class ServerUnavailable(RuntimeError):
    """The server could not be started (binary missing, crashed, never became ready)."""


def unavailable(name: str, reason: str) -> NoReturn:
    """Skip the test locally; fail it under CI, where every server must be available."""
    message = f"{name} is not available: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def node_bin(name: str) -> Path:
    """An npm-installed executable (``npm ci`` in scripts/test.sh puts it there)."""
    path = NODE_BIN / name
    if not path.exists():
        raise ServerUnavailable(f"{path} is missing; run 'npm ci' (scripts/test.sh does)")
    return path


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


class ServerProcess:
    """A child process serving on ``port``; ``stop()`` kills its whole process group."""

    def __init__(self, name: str, command: Sequence[str | os.PathLike[str]], port: int, log_dir: Path) -> None:
        self.name = name
        self.port = port
        self.log = log_dir / f"{name}.log"
        self._command = [str(part) for part in command]
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, ready: Callable[[], bool] | None = None, timeout_s: float = 60.0) -> ServerProcess:
        """Start and wait until ``ready()`` (default: the port accepts connections)."""
        check = ready or (lambda: port_open(self.port))
        with self.log.open("wb") as log:
            self._process = subprocess.Popen(
                self._command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ServerUnavailable(f"{self.name} exited with {self._process.returncode}: {self._tail()}")
            try:
                if check():
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise ServerUnavailable(f"{self.name} did not become ready in {timeout_s:.0f} s: {self._tail()}")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)

    def _tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"


def python_server(module: str, *args: str) -> list[str]:
    """The command line running ``python -m module args`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


def environment_without(*prefixes: str) -> dict[str, str]:
    """This process's environment minus the variables starting with any of ``prefixes``."""
    return {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}


def start_devhost(
    env: Mapping[str, str], log: Path, *args: str, append: bool = False, own_group: bool = False
) -> subprocess.Popen[bytes]:
    """``python -m ingestion.devhost *args`` from the repository, its output written (or appended) to ``log``;
    ``own_group``: its own process group, so a kill takes its parse children too."""
    # A file, not a pipe: a pipe nobody reads would fill up and block the host.
    with log.open("ab" if append else "wb") as out:
        return subprocess.Popen(
            python_server("ingestion.devhost", *args),
            cwd=REPO,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=own_group,
        )


def wait_until(
    check: Callable[[], T],
    what: str,
    timeout_s: float,
    *,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
    interval_s: float = 0.1,
) -> T:
    """``check()``'s first true result; fails the test (with the log's tail) if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found:
            return found
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process exited with {process.returncode} while waiting for {what}{_tail(log)}")
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not within {timeout_s} s{_tail(log)}")
        time.sleep(interval_s)


def _tail(log: Path | None) -> str:
    if log is None:
        return ""
    try:
        return "\n" + log.read_text(errors="replace")[-LOG_TAIL_CHARS:]
    except OSError as error:
        return f"\n(no log: {error})"
