"""Timer triggers: NCRONTAB schedules, firing, run-on-startup and the past-due flag after downtime."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ingestion.devhost.host import Host
from ingestion.devhost.timers import Schedule, TimerService, TimerSpec
from tests.functions.devhost import sample_app
from tests.functions.devhost.conftest import wait_until

pytestmark = pytest.mark.timeout(60)

NEW_YEAR = datetime(2024, 1, 1, 0, 0, 3, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 */5 * * * *", datetime(2024, 1, 1, 0, 5, 0, tzinfo=UTC)),  # seconds first, as NCRONTAB
        ("*/10 * * * * *", datetime(2024, 1, 1, 0, 0, 10, tzinfo=UTC)),
        ("30 0 9 * * 1-5", datetime(2024, 1, 1, 9, 0, 30, tzinfo=UTC)),  # 2024-01-01 was a Monday
        ("*/5 * * * *", datetime(2024, 1, 1, 0, 5, 0, tzinfo=UTC)),  # five fields: plain CRON
        ("00:00:30", datetime(2024, 1, 1, 0, 0, 33, tzinfo=UTC)),  # a TimeSpan: every 30 s
    ],
)
def test_schedule_next_occurrence(expression: str, expected: datetime) -> None:
    """Each accepted schedule form gives the first occurrence after a moment."""
    assert Schedule(expression).next_after(NEW_YEAR) == expected


def test_schedule_from_an_app_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """``%NAME%`` reads the expression from an app setting, and names it when it is missing."""
    monkeypatch.setenv("DEVHOST_TEST_SCHEDULE", "0 0 * * * *")
    assert Schedule("%DEVHOST_TEST_SCHEDULE%").next_after(NEW_YEAR) == datetime(2024, 1, 1, 1, tzinfo=UTC)
    monkeypatch.delenv("DEVHOST_TEST_SCHEDULE")
    with pytest.raises(ValueError, match="DEVHOST_TEST_SCHEDULE is not set"):
        Schedule("%DEVHOST_TEST_SCHEDULE%")


@pytest.mark.parametrize("expression", ["", "every minute", "* * *", "61 * * * * *", "00:00:00"])
def test_invalid_schedules_are_refused(expression: str) -> None:
    """A schedule that cannot fire is an error at start-up, not a silent never."""
    with pytest.raises(ValueError, match="timer schedule"):
        Schedule(expression)


def test_host_fires_the_apps_timer(make_host: Callable[..., Host]) -> None:
    """The sample app's every-second timer runs, with a TimerRequest that is not past due."""
    make_host()
    wait_until(lambda: len(sample_app.calls("tick")) >= 2)
    first = sample_app.calls("tick")[0]
    assert first["past_due"] is False
    assert first["next"].endswith("Z")


def recorder() -> tuple[list[tuple[str, bool]], Callable[[str, bool, dict[str, str | None]], None]]:
    runs: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def run(name: str, past_due: bool, status: dict[str, str | None]) -> None:
        with lock:
            runs.append((name, past_due))

    return runs, run


def test_missed_run_is_not_replayed_but_flags_the_next_one(tmp_path: Path) -> None:
    """A run missed while down is not made up for; the next scheduled run says past_due."""
    state = tmp_path / "timers.json"
    state.write_text(json.dumps({"tick": {"Last": "1999-12-31T23:59:59Z", "Next": "2000-01-01T00:00:00Z"}}))
    runs, run = recorder()
    service = TimerService([TimerSpec("tick", Schedule("* * * * * *"))], run, state_path=state)
    service.start()
    try:
        wait_until(lambda: len(runs) >= 2)
    finally:
        service.stop()
    assert runs[:2] == [("tick", True), ("tick", False)]
    saved = json.loads(state.read_text())["tick"]
    assert saved["Last"] > "2000" and saved["Next"] > saved["Last"]


def test_run_on_startup_fires_at_once(tmp_path: Path) -> None:
    """``runOnStartup`` runs the function when the host starts, whatever the schedule says."""
    runs, run = recorder()
    yearly = TimerSpec("yearly", Schedule("0 0 0 1 1 *"), run_on_startup=True)
    service = TimerService([yearly], run, state_path=tmp_path / "timers.json")
    service.start()
    try:
        wait_until(lambda: len(runs) >= 1)
    finally:
        service.stop()
    assert runs == [("yearly", False)]


def test_a_failing_timer_keeps_its_schedule(tmp_path: Path) -> None:
    """An exception in the function is logged; the timer fires again at its next occurrence."""
    attempts: list[bool] = []

    def run(name: str, past_due: bool, status: dict[str, str | None]) -> None:
        attempts.append(past_due)
        raise RuntimeError("timer body failed")

    every_second = TimerSpec("t", Schedule("* * * * * *"), run_on_startup=True)
    service = TimerService([every_second], run, state_path=tmp_path / "timers.json")
    service.start()
    try:
        wait_until(lambda: len(attempts) >= 2)
    finally:
        service.stop()
