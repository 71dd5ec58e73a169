"""``job_stats``: success rate, failures by reason and backlog, from the job documents in one pass."""

from __future__ import annotations

import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ingestion.model import DocumentVersion, ErrorInfo, Job, JobStatus, to_iso
from ingestion.ports import JobPage
from ingestion.stats import FailureGroup, job_stats, parse_window, render
from tests.fakes import InMemoryJobStore

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
S = JobStatus


def job(
    path: str,
    status: JobStatus,
    *,
    ago: timedelta = timedelta(minutes=5),
    reason: str | None = None,
    stage: str = "parse_document",
    queued_ago: timedelta | None = None,
    retry_in: timedelta | None = None,
) -> Job:
    """A job for ``path`` in ``status``, last updated ``ago`` before NOW, failed for ``reason`` if given."""
    at = NOW - ago
    error = None if reason is None else ErrorInfo(stage, "permanent", reason, f"{path}: {reason}", at)
    times = {} if queued_ago is None else {S.QUEUED.value: to_iso(NOW - queued_ago)}
    return Job(
        doc_id=f"id-{path}",
        container="uploads",
        path=path,
        version=DocumentVersion('"0x1"', 10, at),
        status=status,
        created_at=at - timedelta(days=1),
        updated_at=at,
        last_error=error,
        retry_at=None if retry_in is None else NOW + retry_in,
        stage_times=times,
    )


def store_of(*jobs: Job) -> InMemoryJobStore:
    store = InMemoryJobStore()
    for one in jobs:
        store.create(one)
    return store


def test_an_empty_store_has_no_rate_rather_than_a_division_error() -> None:
    """Nothing finished: the rates are None (n/a on the table), every count zero."""
    stats = job_stats(store_of(), NOW, timedelta(hours=24))
    payload = stats.to_payload()
    assert (payload["success_rate"], payload["indexed_rate"]) == (None, None)
    assert payload["jobs"] == {"total": 0, "by_status": {}}
    assert payload["failures"] == []
    assert stats.backlog.total == 0 and stats.backlog.oldest_queued_at is None
    assert "success rate  n/a (indexed + skipped); indexed only n/a" in render(stats)


def test_success_rate_counts_skipped_as_handled_and_retry_later_as_unfinished() -> None:
    """Of 5 finished (3 indexed, 1 skipped, 1 in review): 80% handled, 60% indexed; the rest is not finished."""
    store = store_of(
        job("a.pdf", S.INDEXED),
        job("b.pdf", S.INDEXED),
        job("c.pdf", S.INDEXED),
        job("d.png", S.SKIPPED, reason="unsupported_type"),
        job("e.pdf", S.NEEDS_REVIEW, reason="encrypted"),
        job("f.pdf", S.RETRY_LATER, reason="throttled", stage="embed_chunks"),
        job("g.pdf", S.EMBEDDING),
        job("h.pdf", S.DELETED),
    )
    stats = job_stats(store, NOW, None)
    assert stats.finished == {S.INDEXED: 3, S.SKIPPED: 1, S.NEEDS_REVIEW: 1}
    assert (stats.success_rate, stats.indexed_rate) == (pytest.approx(0.8), pytest.approx(0.6))
    assert stats.total == 8 and stats.by_status[S.DELETED] == 1
    assert stats.skipped_reasons == {"unsupported_type": 1}


def test_the_window_limits_what_finished_but_not_the_counts_by_status() -> None:
    """Jobs finished two days ago count in --window all, not in the last 24 hours."""
    store = store_of(
        job("new.pdf", S.INDEXED, ago=timedelta(hours=1)),
        job("old-ok.pdf", S.INDEXED, ago=timedelta(days=2)),
        job("old-bad.pdf", S.NEEDS_REVIEW, ago=timedelta(days=2), reason="corrupt"),
        job("old-skip.txt", S.SKIPPED, ago=timedelta(days=2), reason="empty"),
    )
    day = job_stats(store, NOW, timedelta(hours=24))
    assert day.finished_total == 1 and day.success_rate == 1.0
    assert day.failures == () and day.skipped_reasons == {}
    assert day.by_status == {S.INDEXED: 2, S.SKIPPED: 1, S.NEEDS_REVIEW: 1}
    ever = job_stats(store, NOW, None)
    assert ever.finished_total == 4 and ever.success_rate == pytest.approx(0.75)


def test_failures_group_by_status_and_reason_with_stages_and_the_latest_example() -> None:
    """Review failures of the window and every retry_later now, most frequent first, one example each."""
    store = store_of(
        job("r1.pdf", S.RETRY_LATER, reason="throttled", stage="embed_chunks", ago=timedelta(days=3)),
        job("r2.pdf", S.RETRY_LATER, reason="throttled", stage="embed_chunks"),
        job("r3.pdf", S.RETRY_LATER, reason="throttled", stage="persist_chunks", ago=timedelta(hours=2)),
        job("x1.pdf", S.NEEDS_REVIEW, reason="encrypted", ago=timedelta(hours=3)),
        job("x2.pdf", S.NEEDS_REVIEW, reason="encrypted", ago=timedelta(hours=1)),
        job("y.pdf", S.NEEDS_REVIEW, reason="corrupt"),
        job("old.pdf", S.NEEDS_REVIEW, reason="corrupt", ago=timedelta(days=2)),
        job("ok.pdf", S.INDEXED),
    )
    stats = job_stats(store, NOW, timedelta(hours=24))
    assert stats.failures == (
        FailureGroup(S.RETRY_LATER, "throttled", 3, {"embed_chunks": 2, "persist_chunks": 1}, "r2.pdf"),
        FailureGroup(S.NEEDS_REVIEW, "encrypted", 2, {"parse_document": 2}, "x2.pdf"),
        FailureGroup(S.NEEDS_REVIEW, "corrupt", 1, {"parse_document": 1}, "y.pdf"),
    )
    assert "encrypted: x2.pdf" not in str(stats.to_payload())  # messages stay out of the table


def test_backlog_counts_in_progress_and_retry_later_and_ages_the_oldest_queue_time() -> None:
    """The oldest is by last queue time (created_at when never queued); review waits beside it."""
    # A job re-queued 10 minutes ago, created a day before that: its age is 10 minutes, not a day.
    store = store_of(
        job("fresh.pdf", S.PARSING, queued_ago=timedelta(minutes=10)),
        job("stuck.pdf", S.RETRY_LATER, reason="timeout", queued_ago=timedelta(hours=3), retry_in=timedelta(minutes=7)),
        job("late.pdf", S.RETRY_LATER, reason="timeout", queued_ago=timedelta(hours=1), retry_in=timedelta(minutes=2)),
        job("review.pdf", S.NEEDS_REVIEW, reason="corrupt", queued_ago=timedelta(days=5)),
        job("done.pdf", S.INDEXED, queued_ago=timedelta(days=9)),
    )
    backlog = job_stats(store, NOW, None).backlog
    assert (backlog.total, backlog.in_progress, backlog.retry_later, backlog.needs_review) == (3, 1, 2, 1)
    assert (backlog.oldest_queued_at, backlog.oldest_path) == (NOW - timedelta(hours=3), "stuck.pdf")
    assert backlog.next_retry_at == NOW + timedelta(minutes=2)
    payload = backlog.to_payload(NOW)
    assert (payload["oldest_age_s"], payload["next_retry_in_s"]) == (10800.0, 120.0)


def test_a_job_never_queued_ages_from_its_creation() -> None:
    """Without a queued stage time, the backlog age starts at created_at (as the gauge's does)."""
    queued = job("q.pdf", S.QUEUED, ago=timedelta(0))
    stats = job_stats(store_of(queued), NOW, None)
    assert stats.backlog.oldest_queued_at == queued.created_at == NOW - timedelta(days=1)


def test_the_table_is_short_and_aligned() -> None:
    """One labelled line per figure, then the failures with aligned columns and no messages."""
    store = store_of(
        job("a.pdf", S.INDEXED),
        job("b.txt", S.SKIPPED, reason="empty"),
        job("c.pdf", S.NEEDS_REVIEW, reason="encrypted"),
        job("d.pdf", S.RETRY_LATER, reason="http_503", stage="embed_chunks", queued_ago=timedelta(minutes=125)),
    )
    store.create(
        job(
            "e.pdf",
            S.RETRY_LATER,
            reason="http_503",
            stage="embed_chunks",
            queued_ago=timedelta(minutes=30),
            retry_in=timedelta(minutes=-3),
        )
    )
    text = render(job_stats(store, NOW, timedelta(hours=24)))
    assert text.splitlines()[:7] == [
        "jobs          5: 1 indexed, 1 skipped, 2 retry_later, 1 needs_review",
        "finished      3 in the last 24h: 1 indexed, 1 skipped, 1 needs_review",
        "success rate  66.7% (indexed + skipped); indexed only 33.3%",
        "skipped       1 empty",
        "backlog       2: 0 in progress, 2 retry_later; oldest queued 2h05m ago (d.pdf)",
        "next retry    overdue by 3m",
        "in review     1 needs_review (waiting for a person)",
    ]
    assert text.splitlines()[-3:] == [
        "status        reason     count  stage           example",
        "retry_later   http_503       2  embed_chunks    e.pdf",
        "needs_review  encrypted      1  parse_document  c.pdf",
    ]


@pytest.mark.parametrize(
    ("text", "window"),
    [("30m", timedelta(minutes=30)), ("24h", timedelta(days=1)), ("7d", timedelta(days=7)), ("all", None)],
)
def test_windows_read_as_typed(text: str, window: timedelta | None) -> None:
    """30m, 24h, 7d and all are the spans an operator types."""
    assert parse_window(text) == window


@pytest.mark.parametrize("text", ["", "0h", "1w", "h", "-1h", "1.5h"])
def test_a_window_it_cannot_read_is_refused(text: str) -> None:
    """Anything else is a ValueError naming the accepted forms, never a guess."""
    with pytest.raises(ValueError, match="30m, 24h, 7d"):
        parse_window(text)


class GeneratedJobStore:
    """A read-only job store of ``count`` jobs made page by page on demand: nothing is kept."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.template = job("file.pdf", S.INDEXED)

    def list(
        self,
        status: JobStatus | None = None,
        *,
        updated_before: datetime | None = None,
        limit: int = 500,
        continuation: str | None = None,
    ) -> JobPage:
        assert status is None and updated_before is None
        start = 0 if continuation is None else int(continuation)
        end = min(start + limit, self.count)
        page = [self._job(number) for number in range(start, end)]
        return JobPage(page, None if end == self.count else str(end))

    def _job(self, number: int) -> Job:
        status = (S.INDEXED, S.SKIPPED, S.NEEDS_REVIEW, S.RETRY_LATER, S.QUEUED)[number % 5]
        return replace(self.template, doc_id=f"{number:08d}", path=f"docs/{number:08d}.pdf", status=status)


def test_memory_stays_bounded_by_counters_over_100k_jobs() -> None:
    """100,000 jobs in one pass: all counted, while memory holds about one page, not every job."""
    tracemalloc.start()
    try:
        stats = job_stats(GeneratedJobStore(100_000), NOW, None)  # type: ignore[arg-type]  # reads list() only
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert stats.total == 100_000 and stats.finished_total == 60_000
    assert stats.success_rate == pytest.approx(2 / 3)
    assert stats.backlog.total == 40_000
    # One pass holds a page of 500 jobs (well under 1 MB); keeping all 100,000 would take tens of MB.
    assert peak < 5_000_000, peak
