"""Reconciler passes end to end over the in-memory fakes: each rule repairs what it should, once.

Orchestrations run in process (``InProcessOrchestrations``: a start runs the whole pipeline); the
FakeClock moves time past settle, lease, ``retry_at`` and retention periods.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ingestion import reconcile_run
from ingestion.errors import TransientError
from ingestion.model import Chunk, DocumentRef, IndexRecord, Job, JobStatus, chunk_ids_digest
from ingestion.ports import BlobPage
from ingestion.reconcile import Orchestration, Rule
from ingestion.reconcile_run import STATE_KEY, DurableOrchestrations, Orchestrations, Report, reconcile
from ingestion.services import Services
from ingestion.triggers import instance_id_for, plan_ingestion
from tests.fakes import InMemoryBlobSource, InMemoryJobStore
from tests.unit import pipeline_helpers
from tests.unit.conftest import FakeClock
from tests.unit.pipeline_helpers import blobs, embedder, indexed_versions, long_text
from tests.unit.reconcile_helpers import InProcessOrchestrations, with_reconcile

TEXT = b"The harbour lantern glows over the copper meadow. Violins play near the glacier orchard."
OTHER_TEXT = b"Thunder rolls over saffron pebbles. An entirely different file now, with other words."
LONG = "\n\n".join(long_text(60)).encode()
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def run_pass(services: Services, orchestrations: Orchestrations | None, *, dry_run: bool = False) -> Report:
    return asyncio.run(reconcile(services, orchestrations, dry_run=dry_run))


def doc_of(path: str) -> str:
    return DocumentRef("uploads", path).doc_id


def job_of(services: Services, path: str) -> Job:
    job = services.jobs.get(doc_of(path))
    assert job is not None
    return job


def outcomes(report: Report) -> dict[tuple[Rule, str], str]:
    return {(action.rule, action.path): outcome for action, outcome in report.actions}


def ingest(services: Services, path: str, data: bytes) -> Job:
    """Ingest ``path``, then let the settle time pass: the reconciler leaves fresh work alone."""
    job = pipeline_helpers.ingest(services, path, data)
    clock = services.clock
    assert isinstance(clock, FakeClock)
    later(clock, services.settings.reconcile.settle_s + 1)
    return job


def later(clock: FakeClock, seconds: float) -> None:
    clock.now += timedelta(seconds=seconds)


def assert_exact(services: Services, path: str) -> None:
    """The job is indexed and the index holds exactly the chunks it recorded, of its version."""
    job = job_of(services, path)
    held = list(services.index.ids_for_doc(job.doc_id))
    assert job.status is JobStatus.INDEXED
    assert len(held) == job.chunk_count > 0
    assert {version for _, version in held} == {job.version.content_hash}
    assert chunk_ids_digest(chunk_id for chunk_id, _ in held) == job.chunk_ids_digest


def foreign_record(doc_id: str, path: str, ordinal: int, version: str = "f" * 64) -> IndexRecord:
    """A chunk the index holds for ``doc_id`` that no run of its current version wrote."""
    chunk = Chunk(doc_id, ordinal, f"stray chunk number {ordinal}", version, None, None, (), 4)
    return IndexRecord(chunk, (0.125,) * 64, path, "stray", "text/plain", T0, T0)


def notes(job: Job) -> list[str]:
    return [entry.note for entry in job.trail]


def artifact_folders(services: Services, doc_id: str) -> set[str]:
    return {key.split("/")[1] for key in services.artifacts.list(f"{doc_id}/")}


def snapshot(services: Services) -> tuple[Any, ...]:
    jobs = services.jobs.list(limit=1000).jobs
    return (
        [(job.to_payload(), job.etag) for job in jobs],
        services.index.chunks(None, 10_000),
        {key: services.artifacts.get(key) for key in services.artifacts.list("")},
    )


class MeddlingJobStore(InMemoryJobStore):
    """A job store that lets another writer in at a chosen moment: right after a listing, or right
    after the reconciler's claim is written (the pipeline, a trigger or a second reconciler)."""

    def __init__(self) -> None:
        super().__init__()
        self.after_list: Callable[[], None] | None = None
        self.after_claim: Callable[[Job], None] | None = None

    def list(self, *args: Any, **kwargs: Any) -> Any:
        page = super().list(*args, **kwargs)
        if self.after_list is not None:
            meddle, self.after_list = self.after_list, None
            meddle()
        return page

    def replace(self, job: Job) -> Job:
        stored = super().replace(job)
        if self.after_claim is not None and job.trail and job.trail[-1].note.startswith("reconcile: "):
            meddle, self.after_claim = self.after_claim, None
            meddle(stored)
        return stored


@pytest.fixture
def orchestrations(services: Services) -> InProcessOrchestrations:
    return InProcessOrchestrations(services)


# ---------------------------------------------------------------- each rule, end to end


def test_a_blob_whose_trigger_was_lost_is_ingested(services: Services, orchestrations: InProcessOrchestrations) -> None:
    """A blob with no job (its event never arrived) is registered, started and indexed."""
    blobs(services).put("a.txt", TEXT)
    report = run_pass(services, orchestrations)
    assert list(outcomes(report)) == [(Rule.MISSED_TRIGGER, "a.txt")]
    assert outcomes(report)[Rule.MISSED_TRIGGER, "a.txt"].startswith("started ")
    assert_exact(services, "a.txt")
    assert any(note.startswith("reconcile: missed_trigger") for note in notes(job_of(services, "a.txt")))


def test_a_newer_blob_version_whose_trigger_was_lost_replaces_the_old_one(
    services: Services, orchestrations: InProcessOrchestrations
) -> None:
    """An overwrite nobody was told about: the new version is ingested and the old chunks leave."""
    old = ingest(services, "a.txt", TEXT)
    blobs(services).put("a.txt", OTHER_TEXT)
    report = run_pass(services, orchestrations)
    assert list(outcomes(report)) == [(Rule.MISSED_TRIGGER, "a.txt")]
    assert_exact(services, "a.txt")
    assert old.version.content_hash not in indexed_versions(services, old.doc_id)


def test_a_deleted_blob_takes_its_job_and_chunks_with_it(
    services: Services, orchestrations: InProcessOrchestrations
) -> None:
    """The BlobDeleted event was lost: the job ends deleted and the index holds nothing of it."""
    job = ingest(services, "a.txt", TEXT)
    blobs(services).delete("a.txt")
    report = run_pass(services, orchestrations)
    assert outcomes(report) == {(Rule.BLOB_DELETED, "a.txt"): "deleted"}
    assert job_of(services, "a.txt").status is JobStatus.DELETED
    assert services.index.count_for_doc(job.doc_id) == 0


def test_orphan_chunks_are_purged(services: Services, orchestrations: InProcessOrchestrations) -> None:
    """Chunks with no blob and no job, and chunks a deleted job left behind, are purged."""
    # Given chunks of a document nobody knows, and a deleted job whose chunks survived the deletion
    services.index.upsert([foreign_record("ghost", "ghost.txt", n) for n in range(3)])
    kept = ingest(services, "kept.txt", TEXT)
    left = ingest(services, "left.txt", TEXT)
    blobs(services).delete("left.txt")
    services.jobs.replace(left.transition(JobStatus.DELETED, services.clock(), "blob deleted"))
    # When a pass runs
    report = run_pass(services, orchestrations)
    # Then both are purged, and nothing else is touched
    assert outcomes(report) == {
        (Rule.ORPHAN_CHUNKS, "ghost.txt"): "purged 3 chunks",
        (Rule.ORPHAN_CHUNKS, "left.txt"): f"purged {left.chunk_count} chunks",
    }
    assert services.index.count_for_doc("ghost") == 0
    assert services.index.count_for_doc(left.doc_id) == 0
    assert services.index.count_for_doc(kept.doc_id) == kept.chunk_count


def test_a_damaged_index_is_repersisted_from_the_artifacts(
    services: Services, orchestrations: InProcessOrchestrations
) -> None:
    """A chunk missing and a chunk of another version: the index is exact again, without re-reading
    the blob or embedding anything."""
    job = ingest(services, "long.txt", LONG)
    assert job.chunk_count >= 3
    first = next(iter(services.index.ids_for_doc(job.doc_id)))[0]
    services.index.delete([first])
    services.index.upsert([foreign_record(job.doc_id, "long.txt", 999)])
    reads, calls = len(blobs(services).reads), embedder(services).calls
    report = run_pass(services, orchestrations)
    assert list(outcomes(report)) == [(Rule.INDEX_MISMATCH, "long.txt")]
    assert_exact(services, "long.txt")
    assert (len(blobs(services).reads), embedder(services).calls) == (reads, calls)


def test_a_damaged_index_whose_artifacts_are_gone_is_reingested(
    services: Services, orchestrations: InProcessOrchestrations
) -> None:
    """With the checkpoints collected, repairing the index means reading the blob again."""
    job = ingest(services, "long.txt", LONG)
    services.artifacts.delete_prefix(f"{job.doc_id}/")
    services.index.delete([next(iter(services.index.ids_for_doc(job.doc_id)))[0]])
    reads = len(blobs(services).reads)
    report = run_pass(services, orchestrations)
    assert list(outcomes(report)) == [(Rule.INDEX_MISMATCH, "long.txt")]
    assert_exact(services, "long.txt")
    assert len(blobs(services).reads) == reads + 1


def test_chunks_of_a_document_needing_review_are_purged(
    services: Services, orchestrations: InProcessOrchestrations
) -> None:
    """A needs_review job that still holds chunks: they are purged, the job is left for its person."""
    job = ingest(services, "a.txt", TEXT)
    requeued = job.transition(JobStatus.QUEUED, services.clock(), "re-ingest asked for")
    services.jobs.replace(requeued.transition(JobStatus.NEEDS_REVIEW, services.clock(), "a person should look"))
    report = run_pass(services, orchestrations)
    assert outcomes(report) == {(Rule.INDEX_MISMATCH, "a.txt"): f"purged {job.chunk_count} chunks"}
    assert services.index.count_for_doc(job.doc_id) == 0
    assert job_of(services, "a.txt").status is JobStatus.NEEDS_REVIEW
    assert orchestrations.started == []


# ---------------------------------------------------------------- lost and stuck orchestrations


def register_without_running(services: Services, path: str, data: bytes) -> str:
    """Upload and register ``path`` as the starter does, but start nothing: its instance id."""
    blobs(services).put(path, data)
    plan = plan_ingestion(services, "uploads", path)
    assert plan is not None
    return plan.instance_id


def test_a_stuck_orchestration_is_terminated_waited_for_and_redriven(
    services: Services, clock: FakeClock, orchestrations: InProcessOrchestrations
) -> None:
    """Running but idle past the lease: terminate, poll until Terminated, re-drive under a new id."""
    stuck = register_without_running(services, "a.txt", TEXT)
    orchestrations.hang(stuck, since=clock.now)
    orchestrations.polls_to_end = 2  # terminating takes a while
    later(clock, services.settings.reconcile.lease_s)
    report = run_pass(services, orchestrations)
    assert [instance for instance, _ in orchestrations.terminated] == [stuck]
    assert orchestrations.polls[stuck] >= 4  # the view's lookup, then the wait: Running, Running, Terminated
    [fresh] = orchestrations.starts_for(doc_of("a.txt"))
    assert fresh != stuck
    assert outcomes(report) == {(Rule.ORCHESTRATION_LOST, "a.txt"): f"started {fresh}"}
    assert_exact(services, "a.txt")
    assert job_of(services, "a.txt").redrives == 1


def test_an_orchestration_that_does_not_end_in_time_is_redriven_by_a_later_pass(
    services: Services, clock: FakeClock, orchestrations: InProcessOrchestrations
) -> None:
    """No new run while the old one may still be running; once it has ended, the next pass re-drives."""
    services = with_reconcile(services, terminate_wait_s=0.2)
    stuck = register_without_running(services, "a.txt", TEXT)
    orchestrations.hang(stuck, since=clock.now)
    orchestrations.polls_to_end = None
    later(clock, services.settings.reconcile.lease_s)
    first = run_pass(services, orchestrations)
    assert outcomes(first) == {(Rule.ORCHESTRATION_LOST, "a.txt"): f"terminating {stuck}; re-driven by a later pass"}
    assert orchestrations.started == []
    job = job_of(services, "a.txt")
    assert (job.status, job.instance_id) == (JobStatus.QUEUED, stuck)
    # The claim is a note, not a new registration: a duplicate event still names the running instance.
    assert instance_id_for(job) == stuck
    # When the termination has taken effect and the job has settled
    orchestrations.end(stuck)
    later(clock, services.settings.reconcile.settle_s)
    second = run_pass(services, orchestrations)
    assert list(outcomes(second)) == [(Rule.ORCHESTRATION_LOST, "a.txt")]
    assert len(orchestrations.starts_for(job.doc_id)) == 1
    assert_exact(services, "a.txt")


def test_a_lost_orchestration_redriven_too_often_needs_review_and_leaves_the_index(
    services: Services, clock: FakeClock, orchestrations: InProcessOrchestrations
) -> None:
    """Every start vanishes: after max_redrives re-drives the job needs a person, its old chunks gone."""
    services = with_reconcile(services, max_redrives=2)
    old = ingest(services, "a.txt", TEXT)
    orchestrations.lose.add(old.doc_id)
    register_without_running(services, "a.txt", OTHER_TEXT)
    results = []
    for _ in range(3):
        later(clock, services.settings.reconcile.lease_s)  # a missing instance may be pending until then
        results.append(outcomes(run_pass(services, orchestrations))[Rule.ORCHESTRATION_LOST, "a.txt"])
    assert [result.split(" ")[0] for result in results] == ["started", "started", "needs_review:"]
    assert len(orchestrations.lost) == 2
    job = job_of(services, "a.txt")
    assert job.status is JobStatus.NEEDS_REVIEW
    assert job.last_error is not None
    assert job.last_error.code == "orchestration_lost"
    assert services.index.count_for_doc(job.doc_id) == 0


def test_a_start_still_pending_in_durable_is_not_redriven_before_the_lease(
    services: Services, clock: FakeClock, orchestrations: InProcessOrchestrations
) -> None:
    """Under a backlog a started instance stays Pending, and Durable's status API answers 404 for it
    as for a lost one: past the settle nothing happens; only after a lease of silence is it re-driven."""
    pending = register_without_running(services, "a.txt", TEXT)  # started, not yet visible: 404
    later(clock, services.settings.reconcile.settle_s)
    assert run_pass(services, orchestrations).actions == []
    assert orchestrations.polls[pending] == 1  # it was looked up, and answered "missing"
    later(clock, services.settings.reconcile.lease_s - services.settings.reconcile.settle_s)
    report = run_pass(services, orchestrations)
    assert list(outcomes(report)) == [(Rule.ORCHESTRATION_LOST, "a.txt")]
    assert_exact(services, "a.txt")


def test_a_suspended_orchestration_is_not_terminated(
    services: Services, clock: FakeClock, orchestrations: InProcessOrchestrations
) -> None:
    """An operator suspended the instance: however long it stays so, no pass terminates or re-drives it."""
    held = register_without_running(services, "a.txt", TEXT)
    orchestrations.states[held] = Orchestration(held, "Suspended", clock.now)
    later(clock, 10 * services.settings.reconcile.lease_s)
    assert run_pass(services, orchestrations).actions == []
    assert (orchestrations.terminated, orchestrations.started) == ([], [])
    assert job_of(services, "a.txt").status is JobStatus.QUEUED


# ---------------------------------------------------------------- retry_later


def fail_to_retry_later(services: Services, path: str, data: bytes, failures: int = 4) -> Job:
    """Ingest ``path`` while the embedding service throttles: the run ends in ``retry_later``."""
    embedder(services).fail_next(failures, TransientError("throttled by the test", code="throttled"))
    job = ingest(services, path, data)
    assert job.status is JobStatus.RETRY_LATER
    return job


def test_retry_later_is_redriven_when_its_time_has_come(
    services: Services, clock: FakeClock, orchestrations: InProcessOrchestrations
) -> None:
    """Nothing before ``retry_at``; at ``retry_at`` the job is re-driven and indexed."""
    job = fail_to_retry_later(services, "a.txt", TEXT)
    assert job.retry_at is not None
    clock.now = job.retry_at - timedelta(seconds=1)
    assert run_pass(services, orchestrations).actions == []
    clock.now = job.retry_at
    report = run_pass(services, orchestrations)
    assert list(outcomes(report)) == [(Rule.RETRY_DUE, "a.txt")]
    assert_exact(services, "a.txt")
    assert job_of(services, "a.txt").redrives == 1


def test_retry_later_after_max_redrives_needs_review_with_the_last_reason(
    services: Services, clock: FakeClock, orchestrations: InProcessOrchestrations
) -> None:
    """The service keeps throttling: after max_redrives the job needs review, and the chunks of the
    version it replaced leave the index in the same pass."""
    services = with_reconcile(services, max_redrives=1)
    ingest(services, "a.txt", TEXT)
    job = fail_to_retry_later(services, "a.txt", OTHER_TEXT, failures=100)
    assert services.index.count_for_doc(job.doc_id) > 0  # the previous version's, meanwhile
    for expected in ("started", "needs_review:"):
        job = job_of(services, "a.txt")
        assert job.retry_at is not None
        clock.now = job.retry_at
        assert outcomes(run_pass(services, orchestrations))[Rule.RETRY_DUE, "a.txt"].startswith(expected)
    job = job_of(services, "a.txt")
    assert job.status is JobStatus.NEEDS_REVIEW
    assert job.last_error is not None
    assert job.last_error.code == "throttled"
    assert "gave up after 1 re-drives: throttled" in notes(job)
    assert services.index.count_for_doc(job.doc_id) == 0
    assert len(orchestrations.starts_for(job.doc_id)) == 1


# ---------------------------------------------------------------- dry run, trail, metric


def lose_a_trigger_a_delete_and_a_chunk(services: Services) -> None:
    """lost.txt never triggered, gone.txt deleted behind the pipeline, damaged.txt missing a chunk."""
    blobs(services).put("lost.txt", TEXT)
    ingest(services, "gone.txt", TEXT)
    blobs(services).delete("gone.txt")
    damaged = ingest(services, "damaged.txt", LONG)
    services.index.delete([next(iter(services.index.ids_for_doc(damaged.doc_id)))[0]])


def test_a_dry_run_changes_nothing_and_reports_the_plan(
    services: Services, orchestrations: InProcessOrchestrations
) -> None:
    """Every inconsistency is reported as planned; stores, cursors, orchestrations and metric stay as they were."""
    lose_a_trigger_a_delete_and_a_chunk(services)
    services.index.upsert([foreign_record("ghost", "ghost.txt", 0)])
    before, counted = snapshot(services), reconcile_run.ACTIONS.snapshot()
    for client in (orchestrations, None):
        report = run_pass(services, client, dry_run=True)
        assert outcomes(report) == {
            (Rule.MISSED_TRIGGER, "lost.txt"): "planned",
            (Rule.BLOB_DELETED, "gone.txt"): "planned",
            (Rule.INDEX_MISMATCH, "damaged.txt"): "planned",
            (Rule.ORPHAN_CHUNKS, "ghost.txt"): "planned",
        }
    assert snapshot(services) == before
    assert not services.artifacts.exists(STATE_KEY)
    assert (orchestrations.started, orchestrations.terminated, orchestrations.purged_before) == ([], [], [])
    assert reconcile_run.ACTIONS.snapshot() == counted


def test_every_action_is_on_its_jobs_trail_and_counted(
    services: Services, clock: FakeClock, orchestrations: InProcessOrchestrations
) -> None:
    """Each action taken puts ``reconcile: <rule>: <reason>`` on its job's trail and counts once by rule."""
    lose_a_trigger_a_delete_and_a_chunk(services)
    retry = fail_to_retry_later(services, "retry.txt", OTHER_TEXT)
    assert retry.retry_at is not None
    clock.now = retry.retry_at
    counted = reconcile_run.ACTIONS.snapshot()
    report = run_pass(services, orchestrations)
    assert report.by_rule() == {"missed_trigger": 1, "blob_deleted": 1, "index_mismatch": 1, "retry_due": 1}
    for action, _ in report.actions:
        assert f"reconcile: {action.rule}: {action.reason}" in notes(job_of(services, action.path))
    now = reconcile_run.ACTIONS.snapshot()
    assert {rule: now.get(rule, 0) - counted.get(rule, 0) for rule in report.by_rule()} == report.by_rule()


# ---------------------------------------------------------------- claims: never twice on one observation


def test_an_action_on_a_job_that_changed_since_it_was_seen_is_skipped(services: Services, clock: FakeClock) -> None:
    """The pipeline moves the job between the listing and the action: the claim fails, nothing is done."""
    jobs = MeddlingJobStore()
    services = dataclasses.replace(services, jobs=jobs)
    orchestrations = InProcessOrchestrations(services)
    register_without_running(services, "a.txt", TEXT)
    later(clock, services.settings.reconcile.lease_s)

    def pipeline_moves_on() -> None:
        job = job_of(services, "a.txt")
        jobs.replace(job.transition(JobStatus.FETCHING, clock.now))

    jobs.after_list = pipeline_moves_on
    report = run_pass(services, orchestrations)
    assert outcomes(report) == {(Rule.ORCHESTRATION_LOST, "a.txt"): "skipped: the job changed since it was seen"}
    assert (orchestrations.started, orchestrations.terminated) == ([], [])
    assert job_of(services, "a.txt").status is JobStatus.FETCHING


def test_a_second_reconciler_acting_right_after_a_claim_does_not_make_the_first_act_too(services: Services) -> None:
    """Another pass sees the job just after our claim and repairs it: ours then stands down."""
    jobs = MeddlingJobStore()
    services = dataclasses.replace(services, jobs=jobs)
    orchestrations = InProcessOrchestrations(services)
    damaged = ingest(services, "long.txt", LONG)
    services.index.delete([next(iter(services.index.ids_for_doc(damaged.doc_id)))[0]])
    second: list[Report] = []

    def second_pass(_: Job) -> None:  # a little later: our claim is no longer fresh to it
        clock = services.clock
        assert isinstance(clock, FakeClock)
        later(clock, services.settings.reconcile.settle_s + 1)
        second.append(run_pass(services, orchestrations))

    jobs.after_claim = second_pass
    first = run_pass(services, orchestrations)
    assert next(iter(outcomes(second[0]).values())).startswith("started ")
    assert outcomes(first) == {(Rule.INDEX_MISMATCH, "long.txt"): "skipped: the job changed since it was claimed"}
    assert len(orchestrations.starts_for(damaged.doc_id)) == 1
    assert_exact(services, "long.txt")


def test_two_reconcilers_at_once_act_on_each_document_once(
    services: Services, clock: FakeClock, orchestrations: InProcessOrchestrations
) -> None:
    """Two passes interleaved over the same stores: every re-drive happens once, everything is repaired."""
    # Given a stuck job, a lost start, a damaged index, a deleted blob and a deleted job's leftovers
    stuck = register_without_running(services, "stuck.txt", TEXT)
    orchestrations.hang(stuck, since=clock.now)
    register_without_running(services, "lost.txt", OTHER_TEXT)
    damaged = ingest(services, "damaged.txt", LONG)
    services.index.delete([next(iter(services.index.ids_for_doc(damaged.doc_id)))[0]])
    gone = ingest(services, "gone.txt", TEXT)
    blobs(services).delete("gone.txt")
    later(clock, services.settings.reconcile.lease_s)

    async def both() -> list[Report]:
        return list(await asyncio.gather(reconcile(services, orchestrations), reconcile(services, orchestrations)))

    reports = asyncio.run(both())
    # Then each re-drive started one orchestration, and every document is consistent
    for path in ("stuck.txt", "lost.txt", "damaged.txt"):
        assert len(orchestrations.starts_for(doc_of(path))) == 1, path
        assert_exact(services, path)
        started = [o for r in reports for (a, o) in r.actions if a.path == path and o.startswith("started ")]
        assert len(started) == 1, path
    assert [instance for instance, _ in orchestrations.terminated] == [stuck]
    assert job_of(services, "stuck.txt").redrives == job_of(services, "lost.txt").redrives == 1
    assert job_of(services, "gone.txt").status is JobStatus.DELETED
    assert services.index.count_for_doc(gone.doc_id) == 0


# ---------------------------------------------------------------- bounded work


SEEN = {"blobs": "blobs", "jobs": "jobs", "index": "chunks"}  # the report's and the cursors' name per sweep


def lost_triggers(services: Services) -> None:
    for n in range(10):
        blobs(services).put(f"doc-{n:02}.txt", TEXT + f" Number {n}.".encode())


def deleted_blobs(services: Services) -> None:
    for n in range(10):
        ingest(services, f"doc-{n:02}.txt", TEXT + f" Number {n}.".encode())
        blobs(services).delete(f"doc-{n:02}.txt")


def orphans(services: Services) -> None:
    services.index.upsert([foreign_record(f"ghost{n:02}", f"doc-{n:02}.txt", 0) for n in range(10)])


@pytest.mark.parametrize(
    ("setup", "sweep", "rule"),
    [
        (lost_triggers, "blobs", Rule.MISSED_TRIGGER),
        (deleted_blobs, "jobs", Rule.BLOB_DELETED),
        (orphans, "index", Rule.ORPHAN_CHUNKS),
    ],
)
def test_passes_do_bounded_work_and_resume_where_the_last_one_stopped(
    services: Services,
    orchestrations: InProcessOrchestrations,
    setup: Callable[[Services], None],
    sweep: str,
    rule: Rule,
) -> None:
    """max_items=3, page_size=2, ten documents: four passes act on each once, in order, none missed."""
    services = with_reconcile(services, max_items=3, page_size=2)
    setup(services)
    acted: list[str] = []
    finished_in: list[int] = []
    for number in range(1, 6):
        report = run_pass(services, orchestrations)
        assert report.seen[SEEN[sweep]] <= 3
        acted += [action.path for action, outcome in report.actions if action.rule is rule]
        assert all(not outcome.startswith("failed") for _, outcome in report.actions)
        if sweep in report.finished_sweeps:
            finished_in.append(number)
        if number == 1:
            cursors = json.loads(services.artifacts.get(STATE_KEY) or b"{}")["cursors"]
            assert cursors[SEEN[sweep]] is not None
    assert sorted(acted) == [f"doc-{n:02}.txt" for n in range(10)]  # each once (sweeps go in their own key order)
    assert finished_in[0] == 4


# ---------------------------------------------------------------- retention


def test_old_versions_artifacts_are_collected_after_the_retention(
    services: Services, clock: FakeClock, orchestrations: InProcessOrchestrations
) -> None:
    """The replaced version's checkpoints go once the job has been finished for the retention period;
    the current version's stay; a deleted document's go entirely."""
    first = pipeline_helpers.ingest(services, "a.txt", TEXT)
    current = pipeline_helpers.ingest(services, "a.txt", OTHER_TEXT)
    gone = pipeline_helpers.ingest(services, "gone.txt", TEXT)
    blobs(services).delete("gone.txt")
    run_pass(services, orchestrations)  # the deletion
    assert first.version.content_hash is not None
    assert current.version.content_hash is not None
    old = {f"v-{first.version.key}", f"c-{first.version.content_hash[:32]}"}
    kept = {f"v-{current.version.key}", f"c-{current.version.content_hash[:32]}"}
    assert artifact_folders(services, current.doc_id) == old | kept
    retention = services.settings.reconcile.artifact_retention_days * 86400
    later(clock, retention - 1)
    assert run_pass(services, orchestrations).collected_artifacts == 0
    later(clock, 1)
    report = run_pass(services, orchestrations)
    assert report.collected_artifacts > 0
    assert artifact_folders(services, current.doc_id) == kept
    assert artifact_folders(services, gone.doc_id) == set()
    assert_exact(services, "a.txt")


def test_a_version_registered_during_the_pass_keeps_its_artifacts(services: Services, clock: FakeClock) -> None:
    """A new version ingested between the job listing and the collection is the current one: kept."""
    jobs = MeddlingJobStore()
    services = dataclasses.replace(services, jobs=jobs)
    orchestrations = InProcessOrchestrations(services)
    ingest(services, "a.txt", TEXT)
    later(clock, services.settings.reconcile.artifact_retention_days * 86400 + 1)
    newer: list[Job] = []

    def trigger_and_pipeline() -> None:
        newer.append(ingest(services, "a.txt", OTHER_TEXT))

    jobs.after_list = trigger_and_pipeline  # the job sweep's listing: the blob sweep reads jobs one by one
    run_pass(services, orchestrations)
    [current] = newer
    assert current.version.content_hash is not None
    assert {f"v-{current.version.key}", f"c-{current.version.content_hash[:32]}"} <= artifact_folders(
        services, current.doc_id
    )
    assert_exact(services, "a.txt")


def test_finished_orchestration_histories_are_purged_after_their_retention(
    services: Services, clock: FakeClock, orchestrations: InProcessOrchestrations
) -> None:
    """Each pass asks Durable to purge ended instances created before now minus the history retention."""
    blobs(services).put("a.txt", TEXT)
    assert run_pass(services, orchestrations).purged_histories == 0
    days = services.settings.reconcile.history_retention_days
    later(clock, days * 86400 + 1)
    report = run_pass(services, orchestrations)
    assert orchestrations.purged_before[-1] == clock.now - timedelta(days=days)
    assert report.purged_histories == 1


# ---------------------------------------------------------------- faults


def test_a_store_fault_during_an_action_is_reported_and_the_next_pass_repairs(
    services: Services, orchestrations: InProcessOrchestrations
) -> None:
    """The job store fails the claim: the outcome says so, the pass goes on, and the next pass repairs."""
    job = ingest(services, "a.txt", TEXT)
    blobs(services).delete("a.txt")
    services.index.upsert([foreign_record("ghost", "ghost.txt", 0)])
    assert isinstance(services.jobs, InMemoryJobStore)
    services.jobs.fail_next(1, TransientError("job store unavailable (503)"))
    first = run_pass(services, orchestrations)
    assert outcomes(first) == {
        (Rule.BLOB_DELETED, "a.txt"): "failed: transient: job store unavailable (503)",
        (Rule.ORPHAN_CHUNKS, "ghost.txt"): "purged 1 chunks",
    }
    assert job_of(services, "a.txt").status is JobStatus.INDEXED
    second = run_pass(services, orchestrations)
    assert outcomes(second) == {(Rule.BLOB_DELETED, "a.txt"): "deleted"}
    assert services.index.count_for_doc(job.doc_id) == 0


def test_an_unexpected_error_in_one_action_does_not_stop_the_pass(
    services: Services, orchestrations: InProcessOrchestrations
) -> None:
    """A bug (or a foreign exception) in one action is reported; the others run and the cursors are saved."""
    blobs(services).put("a.txt", TEXT)
    blobs(services).put("b.txt", TEXT)
    orchestrations.fail_start[doc_of("a.txt")] = RuntimeError("boom")
    report = run_pass(services, orchestrations)
    assert outcomes(report)[Rule.MISSED_TRIGGER, "a.txt"] == "failed: unexpected RuntimeError: boom"
    assert outcomes(report)[Rule.MISSED_TRIGGER, "b.txt"].startswith("started ")
    assert services.artifacts.exists(STATE_KEY)
    later_report = run_pass(services, orchestrations)
    assert list(outcomes(later_report)) == []  # a.txt is registered: queued, and settling


class FlakyBlobs(InMemoryBlobSource):
    """Blobs whose listing fails once, on the page after ``pages_ok`` good ones (a 503, a timeout)."""

    def __init__(self, pages_ok: int) -> None:
        super().__init__()
        self.pages_ok = pages_ok

    def page(self, continuation: str | None = None, limit: int = 1000) -> BlobPage:
        if self.pages_ok == 0:
            self.pages_ok = -1
            raise TransientError("blob listing unavailable (503)")
        self.pages_ok -= 1
        return super().page(continuation, limit)


def test_a_sweep_that_faults_keeps_its_progress_and_the_pass_goes_on(services: Services) -> None:
    """The blob listing fails on its third page: the pages before it count, the other sweeps and the
    history purge still run, the cursors are saved, and the next pass resumes where the fault struck."""
    flaky = FlakyBlobs(pages_ok=2)
    services = with_reconcile(dataclasses.replace(services, blobs=flaky), page_size=2, max_items=100)
    orchestrations = InProcessOrchestrations(services)
    for n in range(6):
        flaky.put(f"doc-{n:02}.txt", TEXT + f" Number {n}.".encode())
    services.index.upsert([foreign_record("ghost", "ghost.txt", 0)])
    first = run_pass(services, orchestrations)
    assert sorted(action.path for action, _ in first.actions) == ["doc-00.txt", "doc-01.txt", "doc-02.txt",
                                                                  "doc-03.txt", "ghost.txt"]  # fmt: skip
    assert first.failed_sweeps == ["blobs"]
    assert orchestrations.purged_before != []
    assert json.loads(services.artifacts.get(STATE_KEY) or b"{}")["cursors"]["blobs"] == "doc-03.txt"
    second = run_pass(services, orchestrations)
    assert sorted(action.path for action, _ in second.actions) == ["doc-04.txt", "doc-05.txt"]
    assert "blobs" in second.finished_sweeps


def test_a_failing_history_purge_does_not_fail_the_pass(services: Services) -> None:
    """Durable refuses the purge: the pass still returns its report, with nothing purged."""
    client = RefusingDurableClient()
    client.refuse_purge = True
    report = run_pass(services, DurableOrchestrations(client))
    assert (report.purged_histories, client.purges) == (0, 1)
    assert services.artifacts.exists(STATE_KEY)


class RefusingDurableClient:
    """Answers like the Durable HTTP API when the host is in trouble: bare ``Exception`` everywhere."""

    def __init__(self) -> None:
        self.purges = 0
        self.refuse_purge = False

    async def start_new(self, name: str, instance_id: str, client_input: Any) -> str:
        raise Exception("The operation failed with an unexpected status code 503")  # as the SDK does

    async def get_status(self, instance_id: str) -> Any:
        raise Exception("The operation failed with an unexpected status code 503")  # as the SDK does

    async def terminate(self, instance_id: str, reason: str) -> None:
        raise Exception(f"No instance with ID '{instance_id}' found.")  # as the SDK does

    async def purge_instance_history_by(self, **kwargs: Any) -> Any:
        self.purges += 1
        if self.refuse_purge:
            raise Exception("The operation failed with an unexpected status code 500")  # as the SDK does
        return None


def test_a_failing_durable_client_fails_actions_not_the_pass(services: Services, clock: FakeClock) -> None:
    """The SDK raises bare exceptions; they are reported per action and per lookup, and the pass completes."""
    register_without_running(services, "stuck.txt", TEXT)
    blobs(services).put("lost.txt", TEXT)
    later(clock, services.settings.reconcile.lease_s)
    client = RefusingDurableClient()
    report = run_pass(services, DurableOrchestrations(client))
    assert outcomes(report)[Rule.MISSED_TRIGGER, "lost.txt"].startswith("failed: transient: ")
    # the stuck job's instance could not be looked up: the lease alone says it is lost
    assert outcomes(report)[Rule.ORCHESTRATION_LOST, "stuck.txt"].startswith("failed: transient: ")
    assert client.purges == 1
    assert services.artifacts.exists(STATE_KEY)
