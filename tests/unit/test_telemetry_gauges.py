"""The gauges' sources: jobs by status (every status, zeros included) and the backlog's age as the
reconciler's job sweep finds it."""

from __future__ import annotations

from datetime import datetime, timedelta

from opentelemetry.metrics import CallbackOptions

from ingestion.model import JobStatus
from ingestion.reconcile_run import _note_backlog
from ingestion.services import Services
from ingestion.telemetry.runtime import BacklogAge, JobCounts
from tests.fakes import InMemoryJobStore
from tests.unit.test_stats import NOW, job

S = JobStatus


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def test_the_backlog_age_grows_while_the_oldest_job_waits_and_is_zero_when_none_does() -> None:
    """Found at 10 min old, read 5 min later: 15 min; a sweep finding nothing waiting: 0."""
    clock = Clock()
    backlog = BacklogAge(clock)
    assert backlog.age_s() is None  # no sweep yet: unknown, not zero
    backlog.found(NOW - timedelta(minutes=10))
    clock.now += timedelta(minutes=5)
    assert backlog.age_s() == 15 * 60
    backlog.found(None)
    assert backlog.age_s() == 0.0


def test_an_old_finding_is_no_longer_reported() -> None:
    """A sweep older than the staleness bound says nothing: another instance may know better."""
    clock = Clock()
    backlog = BacklogAge(clock, stale_after=timedelta(minutes=30))
    backlog.found(NOW - timedelta(minutes=1))
    clock.now += timedelta(minutes=31)
    assert backlog.age_s() is None


def test_a_job_sweep_spanning_passes_reports_its_oldest_unfinished_job_when_it_ends() -> None:
    """retry_later and in-progress jobs count, finished ones do not; the oldest is carried between pages."""
    import ingestion.reconcile_run as run  # noqa: PLC0415 -- to swap its BACKLOG for one with a test clock

    clock = Clock()
    backlog, run.BACKLOG = run.BACKLOG, BacklogAge(clock)  # type: ignore[misc]
    try:
        cursors: dict[str, str | None] = {}
        _note_backlog(cursors, [job("a", S.INDEXED, queued_ago=timedelta(hours=9))], finished=False)
        _note_backlog(cursors, [job("b", S.RETRY_LATER, queued_ago=timedelta(hours=2))], finished=False)
        assert run.BACKLOG.age_s() is None  # the sweep has not ended
        _note_backlog(cursors, [job("c", S.EMBEDDING, queued_ago=timedelta(hours=1))], finished=True)
        assert run.BACKLOG.age_s() == 2 * 3600
        assert cursors["backlog_oldest"] is None  # the next sweep starts afresh
    finally:
        run.BACKLOG = backlog  # type: ignore[misc]


def test_jobs_by_status_reports_every_status_zeros_included(services: Services) -> None:
    """A status with no job reports 0, so a gauge never keeps showing a count that has drained."""
    for one in (job("a", S.INDEXED), job("b", S.NEEDS_REVIEW)):
        services.jobs.create(one)
    counts = JobCounts()
    counts.watch(lambda: services.jobs)
    observed = {point.attributes["status"]: point.value for point in counts.observe(CallbackOptions())}  # type: ignore[index]
    assert observed == {status.value: 0 for status in JobStatus} | {"indexed": 1, "needs_review": 1}


def test_a_reading_serves_probes_for_a_while_and_not_another_store() -> None:
    """Within the time-to-live one store is counted once; another store is counted afresh."""

    class Counting(InMemoryJobStore):
        counted = 0

        def count_by_status(self) -> dict[JobStatus, int]:
            type(self).counted += 1
            return super().count_by_status()

    seconds = [0.0]
    counts = JobCounts(clock=lambda: seconds[0])
    first, second = Counting(), Counting()
    first.create(job("a", S.INDEXED))
    assert counts.read(first) == {"indexed": 1} == counts.read(first)
    assert Counting.counted == 1
    assert counts.read(second) == {}
    seconds[0] += 60
    counts.read(second)
    assert Counting.counted == 3
