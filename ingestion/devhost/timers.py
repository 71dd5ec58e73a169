"""Timer triggers on their NCRONTAB schedules, as the Functions host runs them.

Schedules are NCRONTAB with six fields, seconds first (``0 */5 * * * *``), parsed by ``croniter``
(``second_at_beginning``); five-field CRON, a ``hh:mm:ss`` TimeSpan and ``%SETTING%`` indirection are
accepted as Azure does. Times are UTC (the host's default without ``WEBSITE_TIME_ZONE``). Each timer
runs on its own thread and never overlaps itself: the next occurrence is computed after a run ends.
``runOnStartup`` fires once at start. Like the host's schedule monitor, the last and next occurrence
are kept in a small JSON file; occurrences missed while the host was down are not replayed, but the
next run is flagged ``past_due``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from croniter import croniter  # type: ignore[import-untyped]  # ships no type information

log = logging.getLogger(__name__)

_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})$")
_GRACE = timedelta(seconds=1)  # a recorded occurrence this close to start-up is not "missed"


class Schedule:
    """When a timer fires next, from an NCRONTAB expression or a TimeSpan."""

    def __init__(self, expression: str, defaults: Mapping[str, str] | None = None) -> None:
        """``%SETTING%`` reads the app setting from the environment, else from ``defaults``."""
        resolved = expression.strip()
        if len(resolved) > 2 and resolved.startswith("%") and resolved.endswith("%"):
            setting = resolved[1:-1]
            resolved = (os.environ.get(setting) or (defaults or {}).get(setting, "")).strip()
            if not resolved:
                raise ValueError(f"timer schedule {expression!r}: app setting {setting} is not set")
        self.expression = resolved
        timespan = _TIMESPAN.match(resolved)
        self._interval: timedelta | None = None
        if timespan:
            days, hours, minutes, seconds = (int(part or 0) for part in timespan.groups())
            self._interval = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
            if self._interval <= timedelta(0):
                raise ValueError(f"timer schedule {expression!r}: the interval must be positive")
            return
        fields = len(resolved.split())
        if fields not in (5, 6) or not croniter.is_valid(resolved, second_at_beginning=fields == 6):
            raise ValueError(f"timer schedule {expression!r} is not a valid NCRONTAB expression")
        self._six_fields = fields == 6

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment`` (UTC)."""
        if self._interval is not None:
            return moment + self._interval
        found: datetime = croniter(
            self.expression, moment.astimezone(UTC), second_at_beginning=self._six_fields
        ).get_next(datetime)
        return found.astimezone(UTC)


@dataclass(frozen=True)
class TimerSpec:
    """A timer-trigger function: its name, schedule and whether it also runs at start-up."""

    name: str
    schedule: Schedule
    run_on_startup: bool = False


# run(name, past_due, schedule_status) with schedule_status {"Last", "Next", "LastUpdated"} as ISO text
TimerRun = Callable[[str, bool, dict[str, str | None]], None]


class TimerService:
    """Fires each timer on its schedule until stopped."""

    def __init__(
        self,
        timers: Sequence[TimerSpec],
        run: TimerRun,
        *,
        state_path: Path,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._timers = timers
        self._run = run
        self._state_path = state_path
        self._clock = clock
        self._state_lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(spec,), name=f"devhost-timer-{spec.name}", daemon=True)
            for spec in timers
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop scheduling; a run in progress finishes (waited for up to ``timeout``)."""
        self._stopping.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout)

    def _loop(self, spec: TimerSpec) -> None:
        status = self._load().get(spec.name, {})
        now = self._clock()
        recorded_next = _parse(status.get("Next"))
        missed = recorded_next is not None and recorded_next < now - _GRACE
        if missed:
            log.info("timer %s missed its run at %s while the host was down", spec.name, status.get("Next"))
        if spec.run_on_startup:
            self._fire(spec, now, past_due=False, status=status)
        while not self._stopping.is_set():
            due = spec.schedule.next_after(self._clock())
            while not self._stopping.is_set() and (wait := (due - self._clock()).total_seconds()) > 0:
                self._stopping.wait(min(wait, 60.0))  # re-check the wall clock at least every minute
            if self._stopping.is_set():
                return
            status = self._fire(spec, due, past_due=missed, status=status)
            missed = False

    def _fire(self, spec: TimerSpec, scheduled: datetime, *, past_due: bool, status: dict[str, Any]) -> dict[str, Any]:
        upcoming = spec.schedule.next_after(max(scheduled, self._clock()))
        schedule_status = {
            "Last": status.get("Last"),
            "Next": _text(upcoming),
            "LastUpdated": status.get("LastUpdated"),
        }
        try:
            self._run(spec.name, past_due, schedule_status)
        except Exception:  # like the host: a failed timer run is logged, and the schedule goes on
            log.exception("timer function %s failed", spec.name)
        new_status: dict[str, Any] = {
            "Last": _text(scheduled),
            "Next": _text(upcoming),
            "LastUpdated": _text(self._clock()),
        }
        self._save(spec.name, new_status)
        return new_status

    def _load(self) -> dict[str, dict[str, Any]]:
        with self._state_lock:
            return self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            loaded = json.loads(self._state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            log.warning("ignoring unreadable timer state %s: %s", self._state_path, error)
            return {}
        return loaded if isinstance(loaded, dict) else {}

    def _save(self, name: str, status: dict[str, Any]) -> None:
        with self._state_lock:  # one read-modify-write at a time: every timer shares the file
            state = self._read()
            state[name] = status
            self._state_path.parent.mkdir(parents=True, exist_ok=True)
            scratch = self._state_path.with_suffix(".tmp")
            scratch.write_text(json.dumps(state, indent=2), encoding="utf-8")
            scratch.replace(self._state_path)


def _text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
