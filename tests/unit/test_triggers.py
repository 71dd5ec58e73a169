"""The starter and deletion handlers' logic: one orchestration per blob version, deletions believed only when true."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import pytest

from ingestion.activities import record_outcome, run_stage
from ingestion.errors import TransientError
from ingestion.model import DocumentRef, JobStatus
from ingestion.services import Services
from ingestion.stages import StageRequest
from ingestion.triggers import (
    BLOB_CREATED,
    BLOB_DELETED,
    blob_from_subject,
    handle_blob_event,
    ingest_blob,
    instance_id_for,
    plan_ingestion,
    remove_blob,
)
from ingestion.workflow import FETCH_BLOB, ORCHESTRATOR
from tests.unit.pipeline_helpers import blobs, ingest, upload


class Runtime(Enum):
    RUNNING = "Running"
    COMPLETED = "Completed"


@dataclass
class Status:
    runtime_status: Runtime


@dataclass
class FakeDurableClient:
    """Behaves like the Durable HTTP API: start_new refuses an instance that is pending or running."""

    instances: dict[str, Runtime] = field(default_factory=dict)
    started: list[tuple[str, str, Any]] = field(default_factory=list)

    async def start_new(self, name: str, instance_id: str, client_input: Any) -> str:
        if self.instances.get(instance_id) is Runtime.RUNNING:
            raise Exception(f"An Orchestration instance with the status Running already exists: {instance_id}")
        self.instances[instance_id] = Runtime.RUNNING
        self.started.append((name, instance_id, client_input))
        return instance_id

    async def get_status(self, instance_id: str) -> Status | None:
        runtime = self.instances.get(instance_id)
        return Status(runtime) if runtime else None


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_subject_parsing() -> None:
    """Event Grid subjects give the container and the full blob path, slashes included."""
    assert blob_from_subject("/blobServices/default/containers/uploads/blobs/a/b c.pdf") == ("uploads", "a/b c.pdf")
    with pytest.raises(ValueError, match="not a blob event"):
        blob_from_subject("/blobServices/default/containers/uploads")


def test_starter_registers_the_version_and_starts_one_orchestration(services: Services) -> None:
    """A created blob gets a queued job with its instance id and one orchestration with that id."""
    info = blobs(services).put("a.txt", b"hello world")
    client = FakeDurableClient()
    assert run(ingest_blob(services, client, "uploads", "a.txt")) is True
    doc_id = DocumentRef("uploads", "a.txt").doc_id
    job = services.jobs.get(doc_id)
    assert job is not None
    assert job.status is JobStatus.QUEUED
    assert job.instance_id == instance_id_for(job)
    assert info.version.etag == job.version.etag
    [(name, instance_id, payload)] = client.started
    assert (name, instance_id) == (ORCHESTRATOR, job.instance_id)
    assert payload["request"] == {"doc_id": doc_id, "etag": info.version.etag}
    assert payload["policy"] == services.settings.retry.to_payload()


def test_duplicate_events_start_nothing_more(services: Services) -> None:
    """The same event delivered again (orchestration running) is treated as already started."""
    blobs(services).put("a.txt", b"hello world")
    client = FakeDurableClient()
    assert run(ingest_blob(services, client, "uploads", "a.txt")) is True
    assert run(ingest_blob(services, client, "uploads", "a.txt")) is False
    assert len(client.started) == 1


def test_an_overwrite_starts_a_new_instance_id(services: Services) -> None:
    """A new version gets a new deterministic id; the old run will find itself superseded."""
    blobs(services).put("a.txt", b"one")
    client = FakeDurableClient()
    run(ingest_blob(services, client, "uploads", "a.txt"))
    blobs(services).put("a.txt", b"two")
    run(ingest_blob(services, client, "uploads", "a.txt"))
    assert len({instance_id for _, instance_id, _ in client.started}) == 2


def test_an_event_for_a_blob_already_gone_starts_nothing(services: Services) -> None:
    """A created event that arrives after the blob was deleted registers nothing."""
    client = FakeDurableClient()
    assert plan_ingestion(services, "uploads", "missing.txt") is None
    assert run(ingest_blob(services, client, "uploads", "missing.txt")) is False


def test_other_containers_are_ignored(services: Services) -> None:
    """Only the configured container is ingested."""
    blobs(services).put("a.txt", b"x")
    assert plan_ingestion(services, "elsewhere", "a.txt") is None


def test_delete_removes_chunks_and_marks_the_job_deleted(services: Services) -> None:
    """A real deletion purges the document's chunks and ends the job deleted."""
    job = ingest(services, "a.txt", b"Some words worth indexing. " * 20)
    assert services.index.count_for_doc(job.doc_id) > 0
    blobs(services).delete("a.txt")
    outcome = run(
        handle_blob_event(
            services, FakeDurableClient(), BLOB_DELETED, "/blobServices/default/containers/uploads/blobs/a.txt"
        )
    )
    assert outcome == "deleted"
    deleted = services.jobs.get(job.doc_id)
    assert deleted is not None
    assert (deleted.status, deleted.chunk_count, deleted.indexed_hash) == (JobStatus.DELETED, 0, None)
    assert services.index.count_for_doc(job.doc_id) == 0


def test_a_delete_event_for_a_blob_that_exists_is_ignored(services: Services) -> None:
    """A stale delete event (the blob was uploaded again) changes nothing."""
    job = ingest(services, "a.txt", b"Some words worth indexing. " * 20)
    assert remove_blob(services, "uploads", "a.txt") == "blob exists"
    current = services.jobs.get(job.doc_id)
    assert current is not None
    assert current.status is JobStatus.INDEXED
    assert services.index.count_for_doc(job.doc_id) == job.chunk_count


def test_created_events_are_not_the_deletion_handlers_business(services: Services) -> None:
    """The Event Grid function ignores event types other than BlobDeleted."""
    outcome = run(
        handle_blob_event(
            services, FakeDurableClient(), BLOB_CREATED, "/blobServices/default/containers/uploads/blobs/a"
        )
    )
    assert outcome == "ignored"


def test_a_blob_uploaded_again_after_deletion_is_ingested_again(services: Services) -> None:
    """A deleted job whose blob reappears with the same version is queued and started again."""
    job = ingest(services, "a.txt", b"Some words worth indexing. " * 20)
    blobs(services).delete("a.txt")
    assert remove_blob(services, "uploads", "a.txt") == "deleted"
    blobs(services).put("a.txt", b"Some words worth indexing. " * 20)
    client = FakeDurableClient()
    assert run(ingest_blob(services, client, "uploads", "a.txt")) is True
    current = services.jobs.get(job.doc_id)
    assert current is not None
    assert current.status is JobStatus.QUEUED


def test_a_version_queued_again_gets_a_new_instance_id(services: Services) -> None:
    """Re-uploading the same bytes after a delete re-queues the version under a fresh id, so a run of
    that version that is just stopping cannot swallow the start."""
    blobs(services).put("a.txt", b"same bytes")
    first = plan_ingestion(services, "uploads", "a.txt")
    assert first is not None
    assert remove_blob(services, "uploads", "a.txt") == "blob exists"
    blobs(services).delete("a.txt")
    assert remove_blob(services, "uploads", "a.txt") == "deleted"
    blobs(services).put("a.txt", b"same bytes")
    services.sleep(1.0)  # the fixture's clock moves on
    again = plan_ingestion(services, "uploads", "a.txt")
    assert again is not None
    assert again.instance_id != first.instance_id
    duplicate = plan_ingestion(services, "uploads", "a.txt")  # the same event again: same registration
    assert duplicate is not None
    assert duplicate.instance_id == again.instance_id


def test_run_stage_answers_with_envelopes(services: Services) -> None:
    """A stage's result comes back as ok+result; a missing blob as a permanent not_found envelope."""
    request = upload(services, "a.txt", b"Some words worth indexing.")
    assert run_stage(services, FETCH_BLOB, request.to_payload())["ok"] is True
    gone = upload(services, "b.txt", b"short")
    blobs(services).delete("b.txt")
    envelope = run_stage(services, FETCH_BLOB, gone.to_payload())
    assert (envelope["ok"], envelope["kind"], envelope["code"]) == (False, "permanent", "not_found")


def test_a_transient_stage_failure_is_counted_on_the_job(services: Services) -> None:
    """The envelope goes back to the orchestrator and the job shows the attempt and its reason."""
    request = upload(services, "a.txt", b"Some words worth indexing.")
    blobs(services).fail_next(1, TransientError("read timed out", code="timeout"))
    envelope = run_stage(services, FETCH_BLOB, request.to_payload())
    assert (envelope["ok"], envelope["kind"]) == (False, "transient")
    job = services.jobs.get(request.doc_id)
    assert job is not None
    assert job.attempts == 1
    assert job.last_error is not None
    assert job.last_error.stage == FETCH_BLOB


def test_record_outcome_of_a_superseded_version_writes_nothing(services: Services) -> None:
    """An outcome for a version the job no longer has is reported as superseded and not written."""
    old = upload(services, "a.txt", b"one")
    upload(services, "a.txt", b"two")
    outcome = {"request": old.to_payload(), "stage": FETCH_BLOB, "outcome": "failed",
               "error": {"ok": False, "kind": "permanent", "code": "corrupt", "message": "x"}}  # fmt: skip
    assert record_outcome(services, outcome)["result"]["status"] == "superseded"
    job = services.jobs.get(old.doc_id)
    assert job is not None
    assert job.status is JobStatus.QUEUED
    assert StageRequest(job.doc_id, job.version.etag) != old
