"""The operator's figures, read from the job store: ``python -m ingestion stats``.

The Azure workbook draws success rate, failures by reason and the backlog from metrics
(``ingestion.documents.finished``, ``ingestion.jobs``, ``ingestion.backlog.age``); this module
computes the same figures from the job documents, for a laptop without a monitoring stack or to
cross-check a dashboard. Definitions:

- *finished*: jobs in an outcome a run ends in (``indexed``, ``skipped``, ``needs_review``) whose
  ``updated_at`` falls in the window. ``retry_later`` is not finished: it is backlog waiting for the
  reconciler's re-drive, and it ends either indexed or in review.
- *success rate*: ``(indexed + skipped) / finished``. A skipped file (no text, or a type we do not
  extract) was refused with a reason code the status API shows: the pipeline did its job, as it did
  for an indexed one. The indexed-only rate is reported beside it for those who want "in the index".
- *failures by reason*: ``needs_review`` jobs finished in the window and every ``retry_later`` job
  waiting now (a state, not an event of the window), grouped by status and reason code, with the
  stages that failed and one example path (the latest). Messages stay out: ``status`` shows them.
- *backlog*: jobs in progress or in ``retry_later``, the age of the oldest (since it was last queued,
  as the ``ingestion.backlog.age`` gauge measures it) and the retry due soonest. Jobs in review wait
  for a person, not for the pipeline: they are counted beside the backlog, not in it.

One pass through the store, page by page; memory is a few counters whatever the number of jobs.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ingestion.api import all_jobs
from ingestion.model import Job, JobStatus, to_iso
from ingestion.ports import JobStore

FINISHED = (JobStatus.INDEXED, JobStatus.SKIPPED, JobStatus.NEEDS_REVIEW)
HANDLED = (JobStatus.INDEXED, JobStatus.SKIPPED)
NO_REASON = "unknown"  # a failed job without a recorded error (should not happen; shown, not hidden)
_WINDOW = re.compile(r"(\d+)([smhd])")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_window(text: str) -> timedelta | None:
    """``30m``, ``1h``, ``7d`` (or ``90s``) as a duration; ``all`` as ``None`` (no window)."""
    if text == "all":
        return None
    match = _WINDOW.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise ValueError(f"window {text!r}: expected a positive number and a unit (30m, 24h, 7d) or 'all'")
    return timedelta(seconds=int(match[1]) * _UNITS[match[2]])


@dataclass(frozen=True)
class FailureGroup:
    """The jobs of one status (``needs_review`` or ``retry_later``) failed for one reason code."""

    status: JobStatus
    reason: str
    count: int
    stages: dict[str, int]  # the stage each failure happened in, with counts
    example_path: str

    def to_payload(self) -> dict[str, object]:
        return {
            "status": self.status.value,
            "reason": self.reason,
            "count": self.count,
            "stages": dict(self.stages),
            "example_path": self.example_path,
        }


@dataclass(frozen=True)
class Backlog:
    """What the pipeline still has to do, and how long the oldest of it has waited."""

    in_progress: int
    retry_later: int
    needs_review: int  # waiting for a person: beside the backlog, not in its total or age
    oldest_queued_at: datetime | None
    oldest_path: str | None
    next_retry_at: datetime | None

    @property
    def total(self) -> int:
        return self.in_progress + self.retry_later

    def to_payload(self, now: datetime) -> dict[str, object]:
        oldest, retry = self.oldest_queued_at, self.next_retry_at
        return {
            "total": self.total,
            "in_progress": self.in_progress,
            "retry_later": self.retry_later,
            "needs_review": self.needs_review,
            "oldest_queued_at": to_iso(oldest) if oldest else None,
            "oldest_age_s": round((now - oldest).total_seconds(), 3) if oldest else None,
            "oldest_path": self.oldest_path,
            "next_retry_at": to_iso(retry) if retry else None,
            "next_retry_in_s": round((retry - now).total_seconds(), 3) if retry else None,  # < 0: overdue
        }


@dataclass(frozen=True)
class Stats:
    """Jobs by status, what finished in the window and how, failures by reason, and the backlog."""

    now: datetime
    window: timedelta | None
    by_status: dict[JobStatus, int]  # every job, whatever the window
    finished: dict[JobStatus, int]  # finished in the window, by outcome (every one of FINISHED)
    skipped_reasons: dict[str, int]  # why the skipped ones of the window were skipped
    failures: tuple[FailureGroup, ...]  # most frequent first
    backlog: Backlog

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    @property
    def finished_total(self) -> int:
        return sum(self.finished.values())

    @property
    def success_rate(self) -> float | None:
        """Indexed or skipped, of the finished; ``None`` when nothing finished."""
        return self._rate(*HANDLED)

    @property
    def indexed_rate(self) -> float | None:
        return self._rate(JobStatus.INDEXED)

    def _rate(self, *statuses: JobStatus) -> float | None:
        if not self.finished_total:
            return None
        return sum(self.finished[status] for status in statuses) / self.finished_total

    def to_payload(self) -> dict[str, object]:
        rates = {"success_rate": self.success_rate, "indexed_rate": self.indexed_rate}
        return {
            "now": to_iso(self.now),
            "window_s": self.window.total_seconds() if self.window is not None else None,
            "jobs": {"total": self.total, "by_status": {s.value: n for s, n in self.by_status.items()}},
            "finished": {
                "total": self.finished_total,
                **{s.value: n for s, n in self.finished.items()},
                "skipped_reasons": dict(self.skipped_reasons),
            },
            **{name: None if rate is None else round(rate, 4) for name, rate in rates.items()},
            "failures": [group.to_payload() for group in self.failures],
            "backlog": self.backlog.to_payload(self.now),
        }


def job_stats(jobs: JobStore, now: datetime, window: timedelta | None = None) -> Stats:
    """The figures over every job in ``jobs``; "finished" counts those updated in the last ``window``
    before ``now`` (all of them when ``window`` is ``None``)."""
    tally = _Tally(None if window is None else now - window)
    for job in all_jobs(jobs):
        tally.add(job)
    return tally.stats(now, window)


@dataclass
class _Tally:
    """The counters of one pass: a few per status and per (status, reason), never a list of jobs."""

    since: datetime | None
    by_status: Counter[JobStatus] = field(default_factory=Counter)
    finished: Counter[JobStatus] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    failures: Counter[tuple[JobStatus, str]] = field(default_factory=Counter)
    stages: dict[tuple[JobStatus, str], Counter[str]] = field(default_factory=dict)
    examples: dict[tuple[JobStatus, str], tuple[datetime, str]] = field(default_factory=dict)
    oldest: tuple[datetime, str] | None = None
    next_retry: datetime | None = None

    def add(self, job: Job) -> None:
        status = job.status
        self.by_status[status] += 1
        in_window = self.since is None or job.updated_at >= self.since
        if status in FINISHED and in_window:
            self.finished[status] += 1
            if status is JobStatus.SKIPPED:
                self.skipped[job.last_error.code if job.last_error else NO_REASON] += 1
        if status is JobStatus.RETRY_LATER or (status is JobStatus.NEEDS_REVIEW and in_window):
            self._failure(job)
        if status.in_backlog:
            queued = job.queued_at
            if self.oldest is None or (queued, job.path) < self.oldest:
                self.oldest = (queued, job.path)
        if status is JobStatus.RETRY_LATER and job.retry_at is not None:
            self.next_retry = job.retry_at if self.next_retry is None else min(self.next_retry, job.retry_at)

    def _failure(self, job: Job) -> None:
        error = job.last_error
        key = (job.status, error.code if error else NO_REASON)
        self.failures[key] += 1
        self.stages.setdefault(key, Counter())[error.stage if error else NO_REASON] += 1
        example = self.examples.get(key)
        if example is None or (job.updated_at, job.path) > example:
            self.examples[key] = (job.updated_at, job.path)

    def stats(self, now: datetime, window: timedelta | None) -> Stats:
        groups = tuple(
            FailureGroup(key[0], key[1], count, dict(self.stages[key].most_common()), self.examples[key][1])
            for key, count in sorted(self.failures.items(), key=lambda item: (-item[1], item[0]))
        )
        backlog = Backlog(
            in_progress=sum(self.by_status[status] for status in JobStatus if status.in_progress),
            retry_later=self.by_status[JobStatus.RETRY_LATER],
            needs_review=self.by_status[JobStatus.NEEDS_REVIEW],
            oldest_queued_at=self.oldest[0] if self.oldest else None,
            oldest_path=self.oldest[1] if self.oldest else None,
            next_retry_at=self.next_retry,
        )
        return Stats(
            now=now,
            window=window,
            by_status={status: self.by_status[status] for status in JobStatus if self.by_status[status]},
            finished={status: self.finished[status] for status in FINISHED},
            skipped_reasons=dict(self.skipped.most_common()),
            failures=groups,
            backlog=backlog,
        )


# --------------------------------------------------------------------------- the CLI's table


def render(stats: Stats) -> str:
    """``stats`` as a short aligned table for a terminal."""
    span = "all time" if stats.window is None else f"the last {_window_label(stats.window)}"
    backlog = stats.backlog
    rows = [
        ("jobs", f"{stats.total}" + _counts(stats.by_status)),
        ("finished", f"{stats.finished_total} in {span}" + _counts(stats.finished)),
        (
            "success rate",
            f"{_percent(stats.success_rate)} (indexed + skipped); indexed only {_percent(stats.indexed_rate)}",
        ),
    ]
    if stats.skipped_reasons:
        rows.append(("skipped", ", ".join(f"{n} {reason}" for reason, n in stats.skipped_reasons.items())))
    line = f"{backlog.total}: {backlog.in_progress} in progress, {backlog.retry_later} retry_later"
    if backlog.oldest_queued_at is not None:
        age = _duration((stats.now - backlog.oldest_queued_at).total_seconds())
        line += f"; oldest queued {age} ago ({backlog.oldest_path})"
    rows.append(("backlog", line))
    if backlog.next_retry_at is not None:
        due = (backlog.next_retry_at - stats.now).total_seconds()
        rows.append(("next retry", f"in {_duration(due)}" if due >= 0 else f"overdue by {_duration(-due)}"))
    rows.append(("in review", f"{backlog.needs_review} needs_review (waiting for a person)"))
    lines = [f"{label:<13} {value}" for label, value in rows]
    if stats.failures:
        lines += ["", f"failures by reason (needs_review finished in {span}, retry_later waiting now)"]
        table = [("status", "reason", "count", "stage", "example")] + [
            (group.status.value, group.reason, str(group.count), _stages(group.stages), group.example_path)
            for group in stats.failures
        ]
        widths = [max(len(row[column]) for row in table) for column in range(4)]
        for row in table:
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2]), row[3].ljust(widths[3])]
            lines.append("  ".join([*cells, row[4]]))
    return "\n".join(lines)


def _counts(counts: dict[JobStatus, int]) -> str:
    shown = ", ".join(f"{n} {status.value}" for status, n in counts.items() if n)
    return f": {shown}" if shown else ""


def _percent(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.1%}"


def _stages(stages: dict[str, int]) -> str:
    if len(stages) == 1:
        return next(iter(stages))
    return ", ".join(f"{stage} ({n})" for stage, n in stages.items())


def _duration(seconds: float) -> str:
    """``45s``, ``12m``, ``3h05m``, ``2d04h``: precise enough for an age."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _window_label(window: timedelta) -> str:
    """The window as it was likely typed: ``24h``, ``7d``, ``30m``."""
    seconds = int(window.total_seconds())
    for unit, size in _UNITS.items():
        if seconds % size == 0 and (unit != "d" or seconds // size > 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
