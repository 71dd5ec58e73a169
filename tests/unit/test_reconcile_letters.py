"""The dead-letter rule: poisoned or undeliverable blob events re-driven, then forgotten."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

from ingestion.adapters.local_dead_letters import FileDeadLetters
from ingestion.model import DocumentRef, JobStatus
from ingestion.pipeline import run_document
from ingestion.reconcile import Orchestration
from ingestion.reconcile_letters import redrive_dead_letters
from ingestion.services import Services
from ingestion.stages import StageRequest
from ingestion.triggers import BLOB_CREATED, BLOB_DELETED, StartPlan
from tests.fakes import InMemoryBlobSource


class RunInline:
    """Orchestrations that run a started plan to the end, in process."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.started: list[str] = []

    async def state(self, instance_id: str) -> Orchestration:
        return Orchestration(instance_id, "Completed" if instance_id in self.started else None)

    async def start(self, plan: StartPlan) -> bool:
        self.started.append(plan.instance_id)
        request = StageRequest.from_payload(plan.input["request"])
        await asyncio.to_thread(run_document, self.services, request)
        return True

    async def terminate(self, instance_id: str, reason: str) -> None:
        """Nothing runs in the background here."""

    async def purge_ended(self, before: object) -> int:
        return 0


def poison(path: Path, event_type: str, blob: str, *, container: str = "uploads") -> None:
    """Append a poison record as the local host's event dispatcher writes it."""
    event = {
        "id": blob,
        "eventType": event_type,
        "subject": f"/blobServices/default/containers/{container}/blobs/{blob}",
    }
    record = {"function": "start_ingestion", "attempts": 5, "error": "TransientError: jobs down", "event": event}
    with path.open("a", encoding="utf-8") as file:
        file.write(json.dumps(record) + "\n")


def with_letters(services: Services, path: Path) -> Services:
    return dataclasses.replace(services, dead_letters=FileDeadLetters(path))


def test_a_poisoned_created_event_is_ingested_and_forgotten(services: Services, tmp_path: Path) -> None:
    """A BlobCreated the starter gave up on: the file is ingested, the letter removed, the trail says why."""
    blobs = services.blobs
    assert isinstance(blobs, InMemoryBlobSource)
    blobs.put("report.txt", b"Quarterly revenue grew in the north. " * 20)
    letters = tmp_path / "poison-events.jsonl"
    poison(letters, BLOB_CREATED, "report.txt")
    services = with_letters(services, letters)
    results = asyncio.run(redrive_dead_letters(services, RunInline(services), dry_run=False, limit=10))
    assert [(action.rule.value, action.path) for action, _ in results] == [("dead_letter", "report.txt")]
    assert results[0][1].startswith("started ")
    job = services.jobs.get(DocumentRef("uploads", "report.txt").doc_id)
    assert job is not None and job.status is JobStatus.INDEXED
    assert any(
        entry.note.startswith("reconcile: dead_letter: BlobCreated dead-lettered after 5") for entry in job.trail
    )
    assert FileDeadLetters(letters).list() == []


def test_a_poisoned_deleted_event_removes_the_document(services: Services, tmp_path: Path) -> None:
    """A BlobDeleted that never got handled: the job ends deleted and its chunks leave the index."""
    blobs = services.blobs
    assert isinstance(blobs, InMemoryBlobSource)
    blobs.put("old.txt", b"Text that will be deleted soon enough. " * 20)
    letters = tmp_path / "poison-events.jsonl"
    poison(letters, BLOB_CREATED, "old.txt")
    services = with_letters(services, letters)
    asyncio.run(redrive_dead_letters(services, RunInline(services), dry_run=False, limit=10))
    doc_id = DocumentRef("uploads", "old.txt").doc_id
    assert services.index.count_for_doc(doc_id) > 0
    blobs.delete("old.txt")
    poison(letters, BLOB_DELETED, "old.txt")
    results = asyncio.run(redrive_dead_letters(services, RunInline(services), dry_run=False, limit=10))
    assert [outcome for _, outcome in results] == ["deleted"]
    job = services.jobs.get(doc_id)
    assert job is not None and job.status is JobStatus.DELETED
    assert services.index.count_for_doc(doc_id) == 0


def test_a_dry_run_plans_and_keeps_the_letters(services: Services, tmp_path: Path) -> None:
    """--dry-run lists what it would re-drive and leaves the dead letters in place."""
    letters = tmp_path / "poison-events.jsonl"
    poison(letters, BLOB_CREATED, "a.txt")
    services = with_letters(services, letters)
    results = asyncio.run(redrive_dead_letters(services, None, dry_run=True, limit=10))
    assert [outcome for _, outcome in results] == ["planned"]
    assert len(FileDeadLetters(letters).list()) == 1


def test_a_letter_whose_handling_fails_stays_for_the_next_pass(services: Services, tmp_path: Path) -> None:
    """A store fault while re-driving leaves the letter; the next pass handles it."""
    blobs = services.blobs
    assert isinstance(blobs, InMemoryBlobSource)
    blobs.put("b.txt", b"Some words worth indexing here. " * 20)
    letters = tmp_path / "poison-events.jsonl"
    poison(letters, BLOB_CREATED, "b.txt")
    services = with_letters(services, letters)
    from ingestion.errors import TransientError  # noqa: PLC0415 -- the fault this test injects

    services.jobs.fail_next(1, TransientError("cosmos busy"))  # type: ignore[attr-defined]
    first = asyncio.run(redrive_dead_letters(services, RunInline(services), dry_run=False, limit=10))
    assert first[0][1].startswith("failed: transient")
    assert len(FileDeadLetters(letters).list()) == 1
    second = asyncio.run(redrive_dead_letters(services, RunInline(services), dry_run=False, limit=10))
    assert second[0][1].startswith("started ")
    assert FileDeadLetters(letters).list() == []


def test_unreadable_lines_and_non_blob_subjects_do_not_stop_the_rest(services: Services, tmp_path: Path) -> None:
    """A torn line is skipped (kept for a person); an event about something else is dropped."""
    letters = tmp_path / "poison-events.jsonl"
    letters.write_text("{not json\n")
    poison(letters, BLOB_CREATED, "x.txt", container="other")
    with letters.open("a") as file:
        file.write(json.dumps({"event": {"eventType": BLOB_CREATED, "subject": "/not/a/blob"}}) + "\n")
    services = with_letters(services, letters)
    results = asyncio.run(redrive_dead_letters(services, RunInline(services), dry_run=False, limit=10))
    assert [outcome for _, outcome in results] == ["nothing to start"]  # the other container is not ours
    assert letters.read_text() == "{not json\n"
