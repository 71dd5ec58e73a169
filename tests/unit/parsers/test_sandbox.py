"""The sandbox: a child process bounded in time and memory, whose every ending is a clear outcome."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ingestion.config import ParseLimits
from ingestion.errors import PermanentError, ReasonCode
from ingestion.sandbox import parse_document_file, run_isolated
from tests.unit.parsers import sandbox_targets as targets
from tests.unit.parsers.conftest import refusal


def _children() -> set[int]:
    """Child pids of this process that still exist (zombies included)."""
    task = Path(f"/proc/{os.getpid()}/task")
    pids: set[int] = set()
    for thread in task.iterdir():
        children = (thread / "children").read_text().split()
        pids.update(int(pid) for pid in children)
    return pids


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_returns_the_function_result() -> None:
    """A function that returns normally gives its value back."""
    assert run_isolated(targets.add, 2, 3, timeout_s=30, memory_mb=1024) == 5


@pytest.mark.timeout(60)  # a timeout that is not enforced hangs here, and pytest-timeout fails the test
def test_a_hanging_function_ends_with_parse_timeout() -> None:
    """A function that never returns is killed at the timeout and reported as parse_timeout."""
    reason, message = refusal(lambda: run_isolated(targets.sleep_forever, timeout_s=1.0, memory_mb=1024))
    assert reason is ReasonCode.PARSE_TIMEOUT
    assert "after 1 s" in message
    assert run_isolated(targets.add, 1, 1, timeout_s=30, memory_mb=1024) == 2


def test_allocating_past_the_cap_ends_with_parse_memory() -> None:
    """A function that allocates more than the address-space cap is reported as parse_memory."""
    reason, _ = refusal(lambda: run_isolated(targets.allocate, 2048, timeout_s=30, memory_mb=512))
    assert reason is ReasonCode.PARSE_MEMORY
    assert run_isolated(targets.allocate, 16, timeout_s=30, memory_mb=512) == 16 * 1024 * 1024


def test_a_crash_by_signal_ends_with_parse_failed_naming_the_signal() -> None:
    """A child killed by SIGSEGV (a crashing C library) is reported as parse_failed with the signal."""
    reason, message = refusal(lambda: run_isolated(targets.segfault, timeout_s=30, memory_mb=1024))
    assert reason is ReasonCode.PARSE_FAILED
    assert message == "parser crashed (signal 11)"
    assert run_isolated(targets.add, 1, 2, timeout_s=30, memory_mb=1024) == 3


def test_a_permanent_error_keeps_its_reason_and_message() -> None:
    """A PermanentError raised in the child reaches the parent with the same reason and message."""
    reason, message = refusal(lambda: run_isolated(targets.refuse, timeout_s=30, memory_mb=1024))
    assert (reason, message) == (ReasonCode.ENCRYPTED, "locked")


def test_an_unexpected_exception_is_parse_failed_with_its_type_and_message() -> None:
    """Any other exception becomes parse_failed "TypeName: message"."""
    reason, message = refusal(lambda: run_isolated(targets.fail, timeout_s=30, memory_mb=1024))
    assert (reason, message) == (ReasonCode.PARSE_FAILED, "TypeError: not what I expected")


def test_a_child_that_exits_without_a_result_is_parse_failed() -> None:
    """A child that exits without sending anything is reported, not waited on forever."""
    reason, message = refusal(lambda: run_isolated(targets.exit_quietly, timeout_s=30, memory_mb=1024))
    assert reason is ReasonCode.PARSE_FAILED
    assert "status 3" in message


def test_a_large_result_comes_back_without_deadlock() -> None:
    """A result bigger than the pipe buffer (several MB) is read while the child waits to exit."""
    result = run_isolated(targets.big_result, 8, timeout_s=30, memory_mb=1024)
    assert len(result) == 8 * 1024 * 1024


def test_children_are_reaped_and_descriptors_closed() -> None:
    """After every kind of ending no child process (or zombie) and no pipe is left behind."""
    run_isolated(targets.add, 0, 0, timeout_s=30, memory_mb=1024)  # start the fork server first
    before_children, before_fds = _children(), _open_fds()
    for target in (targets.refuse, targets.fail, targets.segfault, targets.exit_quietly):
        with pytest.raises(PermanentError):
            run_isolated(target, timeout_s=30, memory_mb=1024)
    with pytest.raises(PermanentError):
        run_isolated(targets.sleep_forever, timeout_s=0.3, memory_mb=1024)
    assert _children() == before_children
    assert _open_fds() == before_fds


def test_parse_document_file_isolates_by_default_and_can_run_inline(tmp_path: Path) -> None:
    """The public entry gives the same document in a child process and inline."""
    path = tmp_path / "note.txt"
    path.write_text("First paragraph.\n\nSecond paragraph.\n")
    isolated = parse_document_file(path, "note.txt", ParseLimits(isolation="process"))
    inline = parse_document_file(path, "note.txt", ParseLimits(isolation="inline"))
    assert isolated == inline
    assert [block.text for block in isolated.pages[0].blocks] == ["First paragraph.", "Second paragraph."]


def test_parse_document_file_reports_refusals_from_the_child(tmp_path: Path) -> None:
    """A parser's PermanentError comes through the process boundary intact."""
    path = tmp_path / "blank.txt"
    path.write_text("   \n\n  ")
    reason, _ = refusal(lambda: parse_document_file(path, "blank.txt", ParseLimits()))
    assert reason is ReasonCode.EMPTY
