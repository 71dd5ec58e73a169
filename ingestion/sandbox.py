"""Runs a parse in a child process with a wall-clock timeout and an address-space cap.

Hostile files hang parsers, exhaust memory or crash C libraries; none of that may take the worker
down with it. Children come from a ``forkserver`` (safe to start from a multi-threaded parent,
unlike ``fork``) that has already imported the parsers, so each child starts in milliseconds.

Outcomes, as ``PermanentError`` reasons: wall clock passed -> ``parse_timeout`` (the child is
SIGKILLed); ``MemoryError`` or a kill by the kernel's OOM killer -> ``parse_memory``; death by any
other signal (a segfault) or an unexpected exception -> ``parse_failed``. A ``PermanentError``
raised in the child keeps its reason.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import resource
import signal
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, TypeVar, cast

from ingestion.config import ParseLimits
from ingestion.errors import PermanentError, ReasonCode
from ingestion.model import ParsedDocument
from ingestion.parsers import extract

T = TypeVar("T")

_context = multiprocessing.get_context("forkserver")
# Imported once in the fork server, inherited by every child.
_context.set_forkserver_preload(["__main__", "ingestion.parsers"])

_OK, _PERMANENT, _MEMORY, _FAILED = "ok", "permanent", "memory", "failed"
_EXIT_GRACE_S = 5.0


def parse_document_file(path: Path, name: str, limits: ParseLimits) -> ParsedDocument:
    """The public entry: ``extract`` inline (tests) or in a bounded child process (the default)."""
    if limits.isolation == "inline":
        return extract(path, name, limits)
    return run_isolated(extract, path, name, limits, timeout_s=limits.timeout_s, memory_mb=limits.memory_mb)


def run_isolated(func: Callable[..., T], *args: Any, timeout_s: float, memory_mb: int) -> T:
    """``func(*args)`` in a child process capped at ``memory_mb`` MiB and ``timeout_s`` seconds.

    ``func`` and ``args`` must be picklable (``func`` a module-level function).
    """
    reader, writer = _context.Pipe(duplex=False)
    child = _context.Process(target=_child_main, args=(writer, memory_mb, func, args), daemon=True)
    try:
        child.start()
        writer.close()  # the child holds the only writer: its death shows as end-of-file
        outcome = _wait(reader, child, timeout_s)
    finally:
        reader.close()
        writer.close()
        if child.pid is not None:
            # A child that has sent its message exits at once; one stuck in a library's exit
            # handlers must not hold the worker, so it gets a short grace period, then SIGKILL.
            child.join(timeout=_EXIT_GRACE_S)
            if child.exitcode is None:
                child.kill()
                child.join()  # reap: no zombies
            child.close()
    return cast(T, _result(outcome))


def _wait(reader: Connection, child: BaseProcess, timeout_s: float) -> tuple[Any, ...]:
    """The child's message, or a synthetic one describing how it ended without sending one."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            child.kill()
            child.join()
            return (_PERMANENT, ReasonCode.PARSE_TIMEOUT.value, f"the parser did not finish after {timeout_s:g} s")
        ready = multiprocessing.connection.wait([reader, child.sentinel], timeout=remaining)
        if reader in ready:
            try:
                # Read before joining: a large result fills the pipe, and the child cannot exit
                # until it has been read.
                message: tuple[Any, ...] = reader.recv()
            except EOFError:
                break  # the child died without (finishing) sending
            return message
        if child.sentinel in ready:
            break
    child.join()
    return _death(child.exitcode)


def _death(exitcode: int | None) -> tuple[Any, ...]:
    if exitcode is not None and exitcode < 0:
        number = -exitcode
        if number == signal.SIGKILL:
            # Nobody here sent it (the timeout path returns earlier): the kernel's OOM killer.
            return (_MEMORY, "the parser was killed by the system, out of memory")
        return (_FAILED, f"parser crashed (signal {number})")
    return (_FAILED, f"parser exited with status {exitcode} without a result")


def _result(outcome: tuple[Any, ...]) -> Any:
    kind = outcome[0]
    if kind == _OK:
        return outcome[1]
    if kind == _PERMANENT:
        raise PermanentError(ReasonCode(outcome[1]), str(outcome[2]))
    if kind == _MEMORY:
        raise PermanentError(ReasonCode.PARSE_MEMORY, str(outcome[1]))
    raise PermanentError(ReasonCode.PARSE_FAILED, str(outcome[1]))


def _child_main(writer: Connection, memory_mb: int, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """In the child: cap the address space, run ``func``, send one message describing the outcome."""
    # A Ctrl-C aimed at the host reaches its whole process group: it must not fail the file being
    # parsed. The parent decides this child's fate (its timeout, or killing it on exit).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit = memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    message: tuple[Any, ...]
    try:
        message = (_OK, func(*args))
    except PermanentError as error:
        message = (_PERMANENT, error.reason.value, error.message)
    except MemoryError:
        # The failed allocation is released by now, so there is room to report it.
        message = (_MEMORY, f"the parser ran out of memory (cap {memory_mb} MiB)")
    except Exception as error:  # noqa: BLE001 - any other failure is reported to the parent as parse_failed
        message = (_FAILED, f"{type(error).__name__}: {error}")
    try:
        writer.send(message)  # pickles the whole message before writing a byte
    except MemoryError:
        writer.send((_MEMORY, f"the result did not fit in memory (cap {memory_mb} MiB)"))
    except Exception as error:  # noqa: BLE001 - an unpicklable result is the parser's failure too
        writer.send((_FAILED, f"the result could not be sent: {type(error).__name__}: {error}"))
    finally:
        writer.close()
