"""Module-level functions for the sandbox tests: the child process imports them by name."""

from __future__ import annotations

import os
import signal
import time

from ingestion.errors import PermanentError, ReasonCode


def add(left: int, right: int) -> int:
    return left + right


def sleep_forever() -> None:
    while True:
        time.sleep(60)


def allocate(mebibytes: int) -> int:
    """Hold ``mebibytes`` of memory (touched, so it is really allocated)."""
    block = bytearray(mebibytes * 1024 * 1024)
    return len(block)


def segfault() -> None:
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)  # the signal arrives asynchronously


def refuse() -> None:
    raise PermanentError(ReasonCode.ENCRYPTED, "locked")


def fail() -> None:
    raise TypeError("not what I expected")


def big_result(mebibytes: int) -> str:
    return "x" * (mebibytes * 1024 * 1024)


def exit_quietly() -> None:
    os._exit(3)
