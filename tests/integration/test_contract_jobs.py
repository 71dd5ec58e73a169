"""JobStore contract: ETag-guarded create/replace, races between writers, paged listings."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from ingestion.errors import ConcurrencyError
from ingestion.model import ErrorInfo, JobStatus
from ingestion.ports import JobStore
from tests.integration.builders import T0, make_job


def test_create_returns_the_job_with_an_etag_and_get_reads_it_back(jobs: JobStore) -> None:
    """create() sets an etag; get() returns an equal job carrying the same etag."""
    created = jobs.create(make_job("doc-1"))
    assert created.etag
    assert jobs.get("doc-1") == created


def test_every_field_survives_the_round_trip(jobs: JobStore) -> None:
    """Nested values (error, trail, stage times, unicode path) come back unchanged."""
    job = make_job("doc-1", path="dossiers/Ünïcode name.pdf").transition(JobStatus.FETCHING, T0, "started")
    job = replace(job, attempts=3, last_error=ErrorInfo("fetch", "transient", "http_503", "busy", T0), retry_at=T0)
    created = jobs.create(job)
    assert jobs.get("doc-1") == created
    assert replace(created, etag=None) == job


def test_get_of_an_unknown_job_is_none(jobs: JobStore) -> None:
    """get() of a doc id never created returns None."""
    assert jobs.get("missing") is None


def test_create_twice_is_a_concurrency_error(jobs: JobStore) -> None:
    """A second create() for the same doc id raises ConcurrencyError and keeps the first."""
    first = jobs.create(make_job("doc-1"))
    with pytest.raises(ConcurrencyError):
        jobs.create(make_job("doc-1", JobStatus.FETCHING))
    assert jobs.get("doc-1") == first


def test_replace_with_the_current_etag_writes_and_returns_a_new_etag(jobs: JobStore) -> None:
    """replace() succeeds with the etag just read, and the stored job gets a fresh etag."""
    created = jobs.create(make_job("doc-1"))
    updated = jobs.replace(created.transition(JobStatus.FETCHING, T0 + timedelta(minutes=1)))
    assert updated.etag
    assert updated.etag != created.etag
    assert jobs.get("doc-1") == updated
    assert updated.status is JobStatus.FETCHING


def test_replace_with_a_stale_etag_is_a_concurrency_error(jobs: JobStore) -> None:
    """A write based on an old read loses: ConcurrencyError, and the newer write stays."""
    created = jobs.create(make_job("doc-1"))
    winner = jobs.replace(replace(created, attempts=1))
    with pytest.raises(ConcurrencyError):
        jobs.replace(replace(created, attempts=99))
    assert jobs.get("doc-1") == winner


def test_replace_without_an_etag_or_of_a_missing_job_is_refused(jobs: JobStore) -> None:
    """replace() of a job never read (no etag) or never created raises ConcurrencyError."""
    jobs.create(make_job("doc-1"))
    with pytest.raises(ConcurrencyError):
        jobs.replace(make_job("doc-1"))
    with pytest.raises(ConcurrencyError):
        jobs.replace(replace(make_job("doc-2"), etag="anything"))
    assert jobs.get("doc-2") is None


def test_racing_writers_exactly_one_wins_each_round(jobs: JobStore) -> None:
    """Two threads that read the same version and both write: one succeeds, one conflicts."""
    jobs.create(make_job("doc-1"))
    rounds, barrier = 20, threading.Barrier(2, timeout=30)
    outcomes: list[list[str]] = [[] for _ in range(rounds)]
    lock = threading.Lock()

    def contender(name: str) -> None:
        for round_ in range(rounds):
            job = jobs.get("doc-1")
            assert job is not None
            barrier.wait()  # both have read the same version
            try:
                jobs.replace(replace(job, attempts=job.attempts + 1, instance_id=name))
                result = "won"
            except ConcurrencyError:
                result = "lost"
            with lock:
                outcomes[round_].append(result)
            barrier.wait()  # both have written before the next read

    threads = [threading.Thread(target=contender, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(sorted(round_) == ["lost", "won"] for round_ in outcomes)
    final = jobs.get("doc-1")
    assert final is not None
    assert final.attempts == rounds


def test_read_modify_write_with_retries_loses_no_update(jobs: JobStore) -> None:
    """Eight threads each incrementing a counter 25 times (retrying conflicts) reach 200 exactly."""
    jobs.create(make_job("doc-1"))

    def increment(times: int) -> None:
        for _ in range(times):
            while True:
                job = jobs.get("doc-1")
                assert job is not None
                try:
                    jobs.replace(replace(job, attempts=job.attempts + 1))
                    break
                except ConcurrencyError:
                    continue

    threads = [threading.Thread(target=increment, args=(25,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = jobs.get("doc-1")
    assert final is not None
    assert final.attempts == 200


def test_pages_with_continuation_cover_every_job_once_in_order(jobs: JobStore) -> None:
    """Following continuations until None yields every job exactly once, in doc_id order."""
    ids = [f"doc-{n:03d}" for n in range(23)]
    for doc_id in reversed(ids):
        jobs.create(make_job(doc_id))
    seen: list[str] = []
    continuation, pages = None, 0
    while True:
        page = jobs.list(limit=5, continuation=continuation)
        seen.extend(job.doc_id for job in page.jobs)
        pages += 1
        continuation = page.continuation
        if continuation is None:
            break
    assert seen == ids
    assert pages == 5


def test_a_page_that_ends_exactly_at_the_last_job_has_no_continuation(jobs: JobStore) -> None:
    """When the jobs fill the page exactly, the continuation is None (no empty extra page)."""
    for n in range(4):
        jobs.create(make_job(f"doc-{n}"))
    page = jobs.list(limit=4)
    assert len(page.jobs) == 4
    assert page.continuation is None


def test_list_filters_by_status_and_update_time(jobs: JobStore) -> None:
    """status and updated_before select jobs; both together intersect."""
    jobs.create(make_job("a", JobStatus.QUEUED, minutes=0))
    jobs.create(make_job("b", JobStatus.RETRY_LATER, minutes=10))
    jobs.create(make_job("c", JobStatus.RETRY_LATER, minutes=30))
    jobs.create(make_job("d", JobStatus.INDEXED, minutes=5))

    def ids(status: JobStatus | None = None, before_minute: int | None = None) -> list[str]:
        before = None if before_minute is None else T0 + timedelta(minutes=before_minute)
        return [job.doc_id for job in jobs.list(status, updated_before=before).jobs]

    assert ids(JobStatus.RETRY_LATER) == ["b", "c"]
    assert ids(before_minute=10) == ["a", "d"]
    assert ids(JobStatus.RETRY_LATER, before_minute=11) == ["b"]
    assert ids(JobStatus.DELETED) == []


def test_filtered_listing_pages_like_an_unfiltered_one(jobs: JobStore) -> None:
    """Continuations also work when a status filter skips jobs between pages."""
    for n in range(20):
        jobs.create(make_job(f"doc-{n:02d}", JobStatus.INDEXED if n % 3 else JobStatus.NEEDS_REVIEW))
    seen: list[str] = []
    continuation = None
    while True:
        page = jobs.list(JobStatus.INDEXED, limit=4, continuation=continuation)
        seen.extend(job.doc_id for job in page.jobs)
        if (continuation := page.continuation) is None:
            break
    assert seen == [f"doc-{n:02d}" for n in range(20) if n % 3]


def test_count_by_status(jobs: JobStore) -> None:
    """count_by_status() counts the jobs in each status that has any."""
    assert jobs.count_by_status() == {}
    for n, status in enumerate([JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.INDEXED, JobStatus.NEEDS_REVIEW]):
        jobs.create(make_job(f"doc-{n}", status))
    assert jobs.count_by_status() == {JobStatus.QUEUED: 2, JobStatus.INDEXED: 1, JobStatus.NEEDS_REVIEW: 1}


def test_updated_before_compares_instants_whatever_the_zone_and_precision(jobs: JobStore) -> None:
    """updated_before is a strict comparison of instants: time zones and microseconds do not blur it."""
    jobs.create(make_job("a"))
    jobs.create(replace(make_job("b"), updated_at=T0 + timedelta(microseconds=1)))
    jobs.create(make_job("c", minutes=1))
    east = timezone(timedelta(hours=5))

    def ids(before: datetime) -> list[str]:
        return [job.doc_id for job in jobs.list(updated_before=before).jobs]

    assert ids((T0 + timedelta(microseconds=1)).astimezone(east)) == ["a"]
    assert ids((T0 + timedelta(seconds=1)).astimezone(east)) == ["a", "b"]
    assert ids(T0) == []


def test_a_replace_moves_the_job_between_status_filters_and_counts(jobs: JobStore) -> None:
    """After a status change, listings by status and counts see the new status only."""
    created = jobs.create(make_job("doc-1"))
    jobs.replace(created.transition(JobStatus.FETCHING, T0 + timedelta(minutes=1)))
    assert jobs.list(JobStatus.QUEUED).jobs == []
    assert [job.doc_id for job in jobs.list(JobStatus.FETCHING).jobs] == ["doc-1"]
    assert jobs.count_by_status() == {JobStatus.FETCHING: 1}


def test_a_listing_limit_must_be_positive(jobs: JobStore) -> None:
    """list(limit=0) is a caller's mistake: ValueError, not an empty page that would end a scan."""
    with pytest.raises(ValueError, match="limit"):
        jobs.list(limit=0)


def test_continuations_survive_ids_with_quotes_spaces_and_unicode(jobs: JobStore) -> None:
    """Paging one job at a time over unusual ids (quotes, spaces, non-ASCII) sees each once, in order."""
    # No "/", "\\", "?" or "#": Cosmos DB refuses them in ids (doc ids are hex hashes anyway).
    ids = ["doc-'1'", 'doc-"2"', "doc- 3", "doc-ü", "doc-日本", "doc-😀", "doc-%20", "doc-a' OR 1=1 --"]
    for doc_id in ids:
        jobs.create(make_job(doc_id))
    seen: list[str] = []
    continuation = None
    while True:
        page = jobs.list(limit=1, continuation=continuation)
        seen.extend(job.doc_id for job in page.jobs)
        if (continuation := page.continuation) is None:
            break
    assert seen == sorted(ids)


def test_get_many_returns_the_existing_jobs_by_id(jobs: JobStore) -> None:
    """get_many reads many jobs at once (ids over several internal batches): the ones that exist."""
    ids = [f"doc-{n:03d}" for n in range(230)]
    for doc_id in ids[::2]:
        jobs.create(make_job(doc_id))
    found = jobs.get_many([*ids, "missing", ids[0]])
    assert sorted(found) == ids[::2]
    assert found[ids[0]] == jobs.get(ids[0])
    assert jobs.get_many([]) == {}
