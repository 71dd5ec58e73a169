"""The reconciler's rules, one by one: ``decide`` on hand-built views, at and around every threshold."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ingestion.model import DocumentRef, DocumentVersion, Job, JobStatus, chunk_ids_digest
from ingestion.ports import BlobInfo
from ingestion.reconcile import Action, DocView, Orchestration, Rule, Timing, decide

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(minutes=15)
SETTLE = timedelta(minutes=2)
TIMING = Timing(NOW, LEASE, SETTLE)
TICK = timedelta(microseconds=1)
PATH = "reports/q3.pdf"
DOC = DocumentRef("uploads", PATH).doc_id
LONG_AGO = NOW - timedelta(days=1)
HASH = "c" * 64
IDS = ("id-1", "id-2", "id-3")


def blob(etag: str = '"e1"') -> BlobInfo:
    return BlobInfo(PATH, DocumentVersion(etag, 100, LONG_AGO))


def job(status: JobStatus, etag: str = '"e1"', updated: datetime = LONG_AGO, **changes: Any) -> Job:
    version = DocumentVersion(etag, 100, LONG_AGO, content_hash=HASH)
    base = Job(DOC, "uploads", PATH, version, status, created_at=LONG_AGO, updated_at=updated, etag="job-etag")
    return replace(base, instance_id=f"{DOC}-run", **changes)


def indexed(ids: tuple[str, ...] = IDS) -> Job:
    return job(JobStatus.INDEXED, indexed_hash=HASH, chunk_count=len(ids), chunk_ids_digest=chunk_ids_digest(ids))


def held(ids: tuple[str, ...] = IDS, version: str = HASH) -> tuple[tuple[str, str], ...]:
    return tuple((chunk_id, version) for chunk_id in ids)


def view(
    blob_info: BlobInfo | None,
    job_doc: Job | None,
    chunks: tuple[tuple[str, str], ...] = (),
    orchestration: Orchestration | None = None,
) -> DocView:
    return DocView(DOC, PATH, blob_info, job_doc, chunks, orchestration)


def running(last_updated: datetime | None, status: str | None = "Running") -> Orchestration:
    return Orchestration(f"{DOC}-run", status, last_updated)


def rule_of(action: Action | None) -> Rule | None:
    return None if action is None else action.rule


# ---------------------------------------------------------------- consistent views


@pytest.mark.parametrize(
    "consistent",
    [
        view(blob(), indexed(), held()),
        view(blob(), job(JobStatus.SKIPPED)),
        view(blob(), job(JobStatus.NEEDS_REVIEW)),
        view(blob(), job(JobStatus.RETRY_LATER, retry_at=NOW + TICK)),
        view(blob(), job(JobStatus.EMBEDDING, updated=NOW - timedelta(minutes=5)), (), running(NOW - LEASE + TICK)),
        view(None, job(JobStatus.DELETED)),
        view(None, None),
    ],
    ids=["indexed", "skipped", "needs_review", "retry_later-not-due", "progressing", "deleted", "nothing"],
)
def test_a_consistent_view_needs_no_action(consistent: DocView) -> None:
    """Blob, job, index and orchestration agreeing: ``decide`` returns None."""
    assert decide(consistent, TIMING) is None


def test_an_action_carries_the_job_etag_it_was_decided_on() -> None:
    """The action names the document, the rule and the job ETag its claim is guarded by."""
    action = decide(view(None, indexed(), held()), TIMING)
    assert action is not None
    assert (action.rule, action.doc_id, action.path, action.job_etag) == (Rule.BLOB_DELETED, DOC, PATH, "job-etag")
    assert action.describe().startswith(f"blob_deleted: {PATH}: ")


# ---------------------------------------------------------------- missed_trigger


def test_a_blob_without_a_job_is_ingested() -> None:
    """A blob no event registered (lost trigger): missed_trigger, with no job to claim."""
    action = decide(view(blob(), None), TIMING)
    assert action is not None
    assert action.rule is Rule.MISSED_TRIGGER
    assert action.job_etag is None


@pytest.mark.parametrize(
    "status", [JobStatus.INDEXED, JobStatus.SKIPPED, JobStatus.NEEDS_REVIEW, JobStatus.RETRY_LATER]
)
def test_a_blob_newer_than_its_finished_job_is_ingested(status: JobStatus) -> None:
    """The blob has a version its finished job lacks, however recently the job changed."""
    action = decide(view(blob('"e2"'), job(status, updated=NOW)), TIMING)
    assert action is not None
    assert action.rule is Rule.MISSED_TRIGGER
    assert '"e2"' in action.reason
    assert '"e1"' in action.reason


def test_a_new_version_is_left_alone_while_its_job_settles() -> None:
    """An in-progress job younger than the settle time may be registering the new version right now."""
    assert decide(view(blob('"e2"'), job(JobStatus.QUEUED, updated=NOW - SETTLE + TICK)), TIMING) is None


def test_a_new_version_is_ingested_once_the_job_has_settled() -> None:
    """At exactly the settle time, an in-progress job on an older version no longer excuses the blob."""
    action = decide(view(blob('"e2"'), job(JobStatus.FETCHING, updated=NOW - SETTLE)), TIMING)
    assert rule_of(action) is Rule.MISSED_TRIGGER


def test_a_deleted_job_whose_blob_is_back_is_ingested() -> None:
    """The same version exists again after its job was marked deleted: ingest it again."""
    action = decide(view(blob(), job(JobStatus.DELETED, updated=NOW)), TIMING)
    assert action is not None
    assert action.rule is Rule.MISSED_TRIGGER
    assert "exists again" in action.reason


def test_a_deleted_job_with_a_new_blob_version_is_ingested() -> None:
    """A re-upload under the same name after a delete is a new version for the job."""
    assert rule_of(decide(view(blob('"e2"'), job(JobStatus.DELETED)), TIMING)) is Rule.MISSED_TRIGGER


# ---------------------------------------------------------------- retry_due


def test_retry_later_waits_until_its_time() -> None:
    """Before ``retry_at`` nothing happens."""
    assert decide(view(blob(), job(JobStatus.RETRY_LATER, retry_at=NOW + TICK)), TIMING) is None


@pytest.mark.parametrize("retry_at", [NOW, NOW - timedelta(hours=1), None], ids=["at", "past", "unset"])
def test_retry_later_is_redriven_when_its_time_has_come(retry_at: datetime | None) -> None:
    """At ``retry_at`` (or with none recorded) the job is re-driven."""
    action = decide(view(blob(), job(JobStatus.RETRY_LATER, retry_at=retry_at)), TIMING)
    assert rule_of(action) is Rule.RETRY_DUE


# ---------------------------------------------------------------- orchestration_lost


@pytest.mark.parametrize("status", ["Completed", "Failed", "Terminated", "Canceled"])
def test_an_in_progress_job_whose_orchestration_has_ended_is_redriven(status: str) -> None:
    """Nothing drives the job any more: re-drive it once it has settled; there is nothing to terminate."""
    orchestration = running(LONG_AGO, status)
    action = decide(view(blob(), job(JobStatus.PARSING, updated=NOW - SETTLE), (), orchestration), TIMING)
    assert action is not None
    assert action.rule is Rule.ORCHESTRATION_LOST
    assert action.terminate is None
    assert (status or "missing") in action.reason


def test_a_missing_orchestration_may_still_be_pending_until_the_lease() -> None:
    """Durable answers 404 for an instance that is not found *or still pending* (a start queued behind
    a backlog): "missing" is only believed once the job has been quiet for a lease, not a settle."""
    queued = job(JobStatus.QUEUED, updated=NOW - LEASE + TICK)
    assert decide(view(blob(), queued, (), running(None, None)), TIMING) is None
    action = decide(view(blob(), replace(queued, updated_at=NOW - LEASE), (), running(None, None)), TIMING)
    assert action is not None
    assert (action.rule, action.terminate) == (Rule.ORCHESTRATION_LOST, None)
    assert "missing" in action.reason


def test_a_suspended_orchestration_is_left_to_whoever_suspended_it() -> None:
    """Suspending is a person's deliberate hold: however long it lasts, the reconciler does not terminate it."""
    orchestration = running(LONG_AGO, "Suspended")
    assert decide(view(blob(), job(JobStatus.EMBEDDING), (), orchestration), TIMING) is None


@pytest.mark.parametrize("status", ["Running", "Pending", "ContinuedAsNew"])
def test_an_idle_orchestration_is_terminated_then_redriven(status: str) -> None:
    """Active but silent for a lease (job and instance alike): terminate it first, then re-drive."""
    orchestration = running(NOW - LEASE, status)
    action = decide(view(blob(), job(JobStatus.EMBEDDING, updated=NOW - LEASE), (), orchestration), TIMING)
    assert action is not None
    assert action.rule is Rule.ORCHESTRATION_LOST
    assert action.terminate == orchestration.instance_id
    assert "idle" in action.reason


def test_an_orchestration_quiet_for_less_than_a_lease_is_left_alone() -> None:
    """One microsecond short of the lease, a long activity is still allowed to finish."""
    orchestration = running(NOW - LEASE + TICK)
    assert decide(view(blob(), job(JobStatus.EMBEDDING), (), orchestration), TIMING) is None


def test_recent_job_progress_keeps_an_old_orchestration_alive() -> None:
    """The later of the job's and the instance's last update counts as the last progress."""
    orchestration = running(LONG_AGO)
    assert decide(view(blob(), job(JobStatus.INDEXING, updated=NOW - LEASE + TICK), (), orchestration), TIMING) is None


def test_without_an_orchestration_lookup_only_the_lease_tells() -> None:
    """No Durable client (or no instance id): an in-progress job is lost once quiet for a lease."""
    assert decide(view(blob(), job(JobStatus.QUEUED, updated=NOW - LEASE + TICK)), TIMING) is None
    action = decide(view(blob(), job(JobStatus.QUEUED, updated=NOW - LEASE)), TIMING)
    assert action is not None
    assert action.rule is Rule.ORCHESTRATION_LOST
    assert action.terminate is None


# ---------------------------------------------------------------- index_mismatch


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        (held(IDS[:2]), "holds 2 chunks, the job recorded 3"),
        (held((*IDS, "id-4")), "holds 4 chunks, the job recorded 3"),
        ((*held(IDS[:2]), ("id-3", "d" * 64)), "1 of 3 chunks belong to another version"),
        (held(("id-1", "id-2", "id-9")), "other chunk ids"),
        ((), "holds 0 chunks"),
    ],
    ids=["missing", "extra", "other-version", "digest", "empty"],
)
def test_an_indexed_job_whose_index_differs_is_repaired(chunks: tuple[tuple[str, str], ...], expected: str) -> None:
    """Missing, extra, another version's or other chunks than recorded: index_mismatch, saying which."""
    action = decide(view(blob(), indexed(), chunks), TIMING)
    assert action is not None
    assert action.rule is Rule.INDEX_MISMATCH
    assert expected in action.reason


def test_a_job_indexed_moments_ago_is_not_judged_by_a_listing_that_may_lag() -> None:
    """AI Search is near real time: within the settle time a short listing is not a mismatch yet."""
    fresh = replace(indexed(), updated_at=NOW - SETTLE + TICK)
    assert decide(view(blob(), fresh, held(IDS[:2])), TIMING) is None
    settled = replace(indexed(), updated_at=NOW - SETTLE)
    action = decide(view(blob(), settled, held(IDS[:2])), TIMING)
    assert action is not None
    assert action.rule is Rule.INDEX_MISMATCH


def test_an_indexed_job_without_a_recorded_digest_is_checked_by_count() -> None:
    """Jobs indexed before digests were recorded: the count and the versions still decide."""
    assert decide(view(blob(), replace(indexed(), chunk_ids_digest=None), held(("x", "y", "z"))), TIMING) is None


@pytest.mark.parametrize("status", [JobStatus.SKIPPED, JobStatus.NEEDS_REVIEW])
def test_chunks_of_a_document_that_is_not_indexed_are_purged(status: JobStatus) -> None:
    """A skipped or needs_review document holding chunks: the file no longer says what they say."""
    action = decide(view(blob(), job(status), held()), TIMING)
    assert action is not None
    assert action.rule is Rule.INDEX_MISMATCH
    assert str(status) in action.reason


def test_chunks_of_an_in_progress_job_are_its_runs_business() -> None:
    """A run in progress syncs the index itself: its chunks are not compared."""
    orchestration = running(NOW)
    assert decide(view(blob(), job(JobStatus.INDEXING, updated=NOW), held(IDS[:1]), orchestration), TIMING) is None


# ---------------------------------------------------------------- blob_deleted and orphan_chunks


@pytest.mark.parametrize("status", [JobStatus.INDEXED, JobStatus.QUEUED, JobStatus.RETRY_LATER, JobStatus.SKIPPED])
def test_a_job_whose_blob_is_gone_is_deleted(status: JobStatus) -> None:
    """Blob gone, job not deleted (a lost BlobDeleted event): blob_deleted, whatever the job's state."""
    action = decide(view(None, job(status, updated=NOW), held()), TIMING)
    assert action is not None
    assert action.rule is Rule.BLOB_DELETED
    assert str(status) in action.reason


def test_chunks_with_no_blob_and_no_job_are_orphans() -> None:
    """Nothing owns them: purge, with no job to claim."""
    action = decide(view(None, None, held()), TIMING)
    assert action is not None
    assert action.rule is Rule.ORPHAN_CHUNKS
    assert action.job_etag is None
    assert "no job" in action.reason


def test_chunks_of_a_deleted_job_are_orphans() -> None:
    """The deletion's purge missed some (or a late run wrote them): purge, claimed on the deleted job."""
    action = decide(view(None, job(JobStatus.DELETED), held()), TIMING)
    assert action is not None
    assert action.rule is Rule.ORPHAN_CHUNKS
    assert action.job_etag == "job-etag"
    assert "job deleted" in action.reason
