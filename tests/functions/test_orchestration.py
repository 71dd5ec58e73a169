"""function_app.py's orchestration end to end on the devhost engine: stages, retries, failures, races."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingestion.devhost.events import blob_event
from ingestion.errors import PermanentError, ReasonCode, TransientError
from ingestion.model import PROGRESS, DocumentRef, Job, JobStatus
from ingestion.triggers import BLOB_CREATED, BLOB_DELETED
from ingestion.workflow import STAGE_ACTIVITIES
from tests.functions.conftest import Gate, Running
from tests.unit.parsers.conftest import minimal_pdf

TEXT = ("Employees get twenty five days of paid leave per year. Requests go to the manager. " * 40).encode()
STAGE_STATUS = dict(zip(STAGE_ACTIVITIES, PROGRESS[1:], strict=True))  # each stage moves its job to its status

pytestmark = pytest.mark.timeout(120)


def events_of(running: Running, path: str) -> list[dict[str, object]]:
    job = running.job(path)
    assert job.instance_id is not None
    return running.host.engine.history(job.instance_id)


def test_happy_path_indexes_the_file_and_search_finds_it(running: Running) -> None:
    """A dropped file runs every stage once and ends indexed with exactly its chunks."""
    running.blobs.put("handbook.txt", TEXT)
    running.settle()
    job = running.job("handbook.txt")
    assert job.status is JobStatus.INDEXED
    assert job.chunk_count > 0
    assert running.index.count_for_doc(job.doc_id) == job.chunk_count
    assert running.chunk_versions("handbook.txt") == {job.version.content_hash}
    assert job.instance_id is not None
    status = running.host.engine.get_status(job.instance_id)
    assert status is not None
    assert status["runtimeStatus"] == "Completed"
    assert status["output"]["status"] == "indexed"
    scheduled = [event["Name"] for event in events_of(running, "handbook.txt") if event["EventType"] == 4]
    assert scheduled == [*STAGE_ACTIVITIES, "record_outcome"]


@pytest.mark.parametrize("stage", STAGE_ACTIVITIES)
def test_a_transient_failure_in_each_stage_recovers(running: Running, stage: str) -> None:
    """Two transient faults at a stage's start are retried on durable timers; the file ends indexed."""
    running.jobs.fail_on_status(STAGE_STATUS[stage], 2, TransientError("job store 503", code="http_503"))
    running.blobs.put("handbook.txt", TEXT)
    running.settle()
    job = running.job("handbook.txt")
    assert job.status is JobStatus.INDEXED
    assert running.index.count_for_doc(job.doc_id) == job.chunk_count
    history = events_of(running, "handbook.txt")
    timers = [event for event in history if event["EventType"] == 10]
    assert len(timers) == 2  # one durable timer per retry
    attempts = [event["Name"] for event in history if event["EventType"] == 4].count(stage)
    assert attempts == 3
    notes = [entry.note for entry in job.trail]
    assert notes.count(f"{stage}: transient, retrying") == 2


PERMANENT_CASES = {
    "fetch_blob": ("too_large", ReasonCode.TOO_LARGE),
    "parse_document": ("corrupt_pdf", ReasonCode.CORRUPT),
    "chunk_document": ("injected", ReasonCode.CORRUPT),
    "embed_chunks": ("embedder_rejects", ReasonCode.EMBED_REJECTED),
    "persist_chunks": ("index_rejects", ReasonCode.INDEX_REJECTED),
}


@pytest.mark.parametrize("stage", STAGE_ACTIVITIES)
def test_a_permanent_failure_in_each_stage_needs_review_with_its_reason(running: Running, stage: str) -> None:
    """A permanent failure ends the job in needs_review at once, with the stage and reason code."""
    case, reason = PERMANENT_CASES[stage]
    data = TEXT
    if case == "too_large":
        data = b"x " * 600_000  # over the fixture's 1,000,000-byte limit
    elif case == "corrupt_pdf":
        data = minimal_pdf("one page")[:200]
    elif case == "injected":
        running.jobs.fail_on_status(JobStatus.CHUNKING, 1, PermanentError(ReasonCode.CORRUPT, "damaged checkpoint"))
    elif case == "embedder_rejects":
        running.embedder.fail_next(1, PermanentError(ReasonCode.EMBED_REJECTED, "400 invalid input"))
    else:
        running.index.fail_keys(400, lambda _key: True, times=None)
    running.blobs.put("file.bin", data)
    running.settle()
    job = running.job("file.bin")
    assert job.status is JobStatus.NEEDS_REVIEW
    assert job.last_error is not None
    assert (job.last_error.stage, job.last_error.code) == (stage, reason.value)
    assert running.index.count_for_doc(job.doc_id) == 0
    scheduled = [event["Name"] for event in events_of(running, "file.bin") if event["EventType"] == 4]
    assert scheduled.count(stage) == 1  # never retried


def test_duplicate_and_out_of_order_events_start_one_orchestration(running: Running) -> None:
    """The same BlobCreated many times, and an old one late, give one instance and one set of chunks."""
    running.blobs.put("handbook.txt", TEXT)
    running.settle()
    job = running.job("handbook.txt")
    created = blob_event(BLOB_CREATED, container=running.blobs.container, path="handbook.txt", sequencer=f"{2:032x}")
    stale = blob_event(BLOB_CREATED, container=running.blobs.container, path="handbook.txt", sequencer=f"{1:032x}")
    for event in (created, created, stale, created):
        running.host.deliver(event)
    running.settle()
    instances = running.host.engine.query(prefix=job.doc_id)
    assert len(instances) == 1
    after = running.job("handbook.txt")
    assert (after.status, after.chunk_count) == (JobStatus.INDEXED, job.chunk_count)
    assert running.index.count_for_doc(job.doc_id) == job.chunk_count


def test_an_overwrite_during_ingestion_ends_with_only_the_new_version(running: Running) -> None:
    """The old run, overtaken while embedding, writes nothing; the index holds only the new chunks."""
    running.gate.hold()
    running.blobs.put("handbook.txt", TEXT)
    assert running.gate.entered.wait(60)
    old = running.job("handbook.txt")
    running.blobs.put("handbook.txt", TEXT.replace(b"twenty five", b"thirty"))
    running.host.wait_for_events(60)
    running.gate.release()
    running.settle()
    new = running.job("handbook.txt")
    assert new.status is JobStatus.INDEXED
    assert new.version.etag != old.version.etag
    assert running.chunk_versions("handbook.txt") == {new.version.content_hash}
    assert running.index.count_for_doc(new.doc_id) == new.chunk_count
    assert old.instance_id is not None
    old_run = running.host.engine.get_status(old.instance_id)
    assert old_run is not None
    assert old_run["output"]["status"] == "superseded"
    new_ids = {chunk_id for chunk_id, _ in running.index.ids_for_doc(new.doc_id)}
    assert {chunk_id for batch in running.index.upserts for chunk_id in batch} <= new_ids  # the old run never wrote


def delete_while_held(running: Running, gate: Gate) -> Job:
    """Upload, hold the run at ``gate``, delete the blob, let the run go on; the job at the end."""
    gate.hold()
    running.blobs.put("handbook.txt", TEXT)
    assert gate.entered.wait(60)
    running.blobs.delete("handbook.txt")
    running.host.wait_for_events(60)
    assert running.job("handbook.txt").status is JobStatus.DELETED
    gate.release()
    running.settle()
    return running.job("handbook.txt")


def test_a_delete_during_ingestion_ends_with_no_chunks(running: Running) -> None:
    """A file deleted while it is embedded ends deleted, and its run writes nothing to the index."""
    job = delete_while_held(running, running.gate)
    assert job.status is JobStatus.DELETED
    assert running.index.count_for_doc(job.doc_id) == 0
    assert running.index.upserts == []


def test_a_delete_during_persist_ends_with_no_chunks(running: Running) -> None:
    """A file deleted while persist is writing its chunks ends deleted with none left in the index."""
    job = delete_while_held(running, running.index_gate)  # held once persist passed its version check
    assert job.status is JobStatus.DELETED
    assert running.index.count_for_doc(job.doc_id) == 0


def test_an_older_dated_copy_replaces_the_file(running: Running) -> None:
    """A copy that keeps an older modification time (cp -p, rsync -t) is still the file's new version."""
    running.blobs.put("handbook.txt", TEXT)
    running.settle()
    first = running.job("handbook.txt")
    running.blobs.put(
        "handbook.txt", TEXT.replace(b"twenty five", b"thirty"), last_modified=datetime(2020, 1, 1, tzinfo=UTC)
    )
    running.settle()
    second = running.job("handbook.txt")
    assert second.status is JobStatus.INDEXED
    assert second.version.content_hash != first.version.content_hash
    assert running.chunk_versions("handbook.txt") == {second.version.content_hash}


def test_a_delete_event_for_a_blob_that_still_exists_is_ignored(running: Running) -> None:
    """A BlobDeleted event while the blob exists (stale, or re-uploaded since) changes nothing."""
    running.blobs.put("handbook.txt", TEXT)
    running.settle()
    before = running.job("handbook.txt")
    running.host.deliver(
        blob_event(BLOB_DELETED, container=running.blobs.container, path="handbook.txt", sequencer=f"{9:032x}")
    )
    running.settle()
    after = running.job("handbook.txt")
    assert (after.status, after.etag) == (JobStatus.INDEXED, before.etag)
    assert running.index.count_for_doc(after.doc_id) == before.chunk_count


def test_a_real_delete_removes_the_document(running: Running) -> None:
    """Deleting an indexed file removes its chunks and marks its job deleted."""
    running.blobs.put("handbook.txt", TEXT)
    running.settle()
    running.blobs.delete("handbook.txt")
    running.settle()
    job = running.job("handbook.txt")
    assert job.status is JobStatus.DELETED
    assert running.index.count_for_doc(DocumentRef(running.blobs.container, "handbook.txt").doc_id) == 0


def test_history_stays_the_same_size_for_a_1_page_and_a_500_page_file(running: Running) -> None:
    """Activities batch inside, so the orchestration history does not grow with the document."""
    running.blobs.put("one.pdf", minimal_pdf("Chapter one of the handbook"))
    running.blobs.put(
        "many.pdf", minimal_pdf(*(f"Page {n} of the long handbook, about topic {n * 7}" for n in range(500)))
    )
    running.settle()
    small, large = running.job("one.pdf"), running.job("many.pdf")
    assert (small.status, large.status) == (JobStatus.INDEXED, JobStatus.INDEXED)
    assert large.chunk_count > small.chunk_count
    small_events, large_events = len(events_of(running, "one.pdf")), len(events_of(running, "many.pdf"))
    print(f"history events: 1 page {small_events}, 500 pages {large_events}")
    assert abs(large_events - small_events) <= 2
