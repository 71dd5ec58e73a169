"""The dead-letter rule: poisoned or undeliverable blob events re-driven, then forgotten."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

from ingestion import reconcile_run
from ingestion.adapters.local_dead_letters import FileDeadLetters
from ingestion.errors import TransientError
from ingestion.model import DocumentRef, JobStatus
from ingestion.ports import DeadLetter
from ingestion.reconcile import Action, Rule
from ingestion.reconcile_letters import redrive_dead_letters
from ingestion.reconcile_run import STATE_KEY, reconcile
from ingestion.services import Services
from ingestion.triggers import BLOB_CREATED, BLOB_DELETED, StartPlan, instance_id_for
from tests.fakes import InMemoryBlobSource
from tests.unit.reconcile_helpers import InProcessOrchestrations


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


def poisoned_upload(services: Services, tmp_path: Path, blob: str, content: bytes) -> tuple[Services, Path]:
    """``blob`` uploaded and its BlobCreated dead-lettered: the services reading that letter, and its file."""
    blobs = services.blobs
    assert isinstance(blobs, InMemoryBlobSource)
    blobs.put(blob, content)
    letters = tmp_path / "poison-events.jsonl"
    poison(letters, BLOB_CREATED, blob)
    return with_letters(services, letters), letters


def redrive(services: Services) -> list[tuple[Action, str]]:
    """One re-drive of the dead letters, each started run carried out in process."""
    return asyncio.run(redrive_dead_letters(services, InProcessOrchestrations(services), dry_run=False, limit=10))


def test_a_poisoned_created_event_is_ingested_and_forgotten(services: Services, tmp_path: Path) -> None:
    """A BlobCreated the starter gave up on: the file is ingested, the letter removed, the trail says why."""
    services, letters = poisoned_upload(services, tmp_path, "report.txt", b"Quarterly revenue grew in the north. " * 20)
    results = redrive(services)
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
    services, letters = poisoned_upload(services, tmp_path, "old.txt", b"Text that will be deleted soon enough. " * 20)
    redrive(services)
    doc_id = DocumentRef("uploads", "old.txt").doc_id
    assert services.index.count_for_doc(doc_id) > 0
    assert isinstance(services.blobs, InMemoryBlobSource)
    services.blobs.delete("old.txt")
    poison(letters, BLOB_DELETED, "old.txt")
    results = redrive(services)
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
    services, letters = poisoned_upload(services, tmp_path, "b.txt", b"Some words worth indexing here. " * 20)
    services.jobs.fail_next(1, TransientError("cosmos busy"))  # type: ignore[attr-defined]
    first = redrive(services)
    assert first[0][1].startswith("failed: transient")
    assert len(FileDeadLetters(letters).list()) == 1
    second = redrive(services)
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
    results = redrive(services)
    assert [outcome for _, outcome in results] == ["nothing to start"]  # the other container is not ours
    assert letters.read_text() == "{not json\n"


class StoredLetters:
    """Dead letters kept in memory, several events under one key as Event Grid's blobs hold them;
    ``broken`` makes ``list`` fail, ``broken_remove`` makes ``remove`` fail, as an unreachable
    container would."""

    def __init__(self, letters: list[DeadLetter], broken: BaseException | None = None) -> None:
        self.letters = letters
        self.broken = broken
        self.broken_remove: BaseException | None = None
        self.removed: list[str] = []

    def list(self, limit: int = 100) -> list[DeadLetter]:
        if self.broken is not None:
            raise self.broken
        return [letter for letter in self.letters if letter.key not in self.removed][:limit]

    def remove(self, keys: Iterable[str]) -> None:
        if self.broken_remove is not None:
            raise self.broken_remove
        self.removed.extend(sorted(keys))


class SlowToStart(InProcessOrchestrations):
    """Starting takes a second of the clock (the round trip to Durable), and the run never begins."""

    async def start(self, plan: StartPlan) -> bool:
        self.services.clock.now += timedelta(seconds=1)  # type: ignore[attr-defined] -- the FakeClock
        return await super().start(plan)


def subject(blob: str, container: str = "uploads") -> str:
    return f"/blobServices/default/containers/{container}/blobs/{blob}"


def test_a_noted_letter_keeps_the_instance_id_of_the_run_it_started(services: Services, tmp_path: Path) -> None:
    """The trail note is not a new registration: a duplicate BlobCreated arriving while the re-driven
    run is still queued derives the same instance id, which Durable refuses, instead of a second run."""
    services, _ = poisoned_upload(
        services, tmp_path, "slow.txt", b"A long report that takes a while to get going. " * 20
    )
    orchestrations = SlowToStart(services)
    doc_id = DocumentRef("uploads", "slow.txt").doc_id
    orchestrations.lose.add(doc_id)  # accepted, not yet running: the job stays queued
    results = asyncio.run(redrive_dead_letters(services, orchestrations, dry_run=False, limit=10))
    [started] = orchestrations.started
    assert results[0][1] == f"started {started}"
    job = services.jobs.get(doc_id)
    assert job is not None and job.status is JobStatus.QUEUED
    assert job.trail[-1].note.startswith("reconcile: dead_letter: ")
    assert (job.instance_id, instance_id_for(job)) == (started, started)


def test_a_letter_only_planned_is_not_removed_with_the_stored_letter_it_shares(services: Services) -> None:
    """Without a Durable client nothing is re-driven: a stored letter holding a planned event and a
    dropped one (not about a blob) stays, or the planned event would be lost unhandled."""
    store = StoredLetters(
        [
            DeadLetter("batch-1.json", BLOB_CREATED, "/not/a/blob", "undeliverable", 3),
            DeadLetter("batch-1.json", BLOB_CREATED, subject("a.txt"), "undeliverable", 3),
            DeadLetter("batch-2.json", BLOB_CREATED, "/not/a/blob", "undeliverable", 3),
        ]
    )
    services = dataclasses.replace(services, dead_letters=store)
    results = asyncio.run(redrive_dead_letters(services, None, dry_run=False, limit=10))
    assert [outcome for _, outcome in results] == ["planned"]
    assert store.removed == ["batch-2.json"]


def test_an_unreachable_dead_letter_store_does_not_stop_the_pass(services: Services) -> None:
    """The dead-letter container is down (or misconfigured): the rule reports nothing and the pass's
    sweeps still run and save their cursors, instead of every pass failing before it starts."""
    services = dataclasses.replace(
        services, dead_letters=StoredLetters([], broken=TransientError("dead letters unavailable (503)"))
    )
    blobs = services.blobs
    assert isinstance(blobs, InMemoryBlobSource)
    blobs.put("a.txt", b"Words about the harbour and the lantern. " * 20)
    report = asyncio.run(reconcile(services, InProcessOrchestrations(services)))
    assert [(action.rule, outcome.split(" ")[0]) for action, outcome in report.actions] == [
        (Rule.MISSED_TRIGGER, "started")
    ]
    assert services.artifacts.exists(STATE_KEY)


def test_a_failed_removal_keeps_the_handled_results(services: Services) -> None:
    """Removing the handled letters fails: what was done is still reported, the pass goes on, and the
    letter stays for the next pass, whose handling finds the work already done (it is idempotent)."""
    store = StoredLetters([DeadLetter("batch-1.json", BLOB_DELETED, subject("gone.txt"), "undeliverable", 3)])
    store.broken_remove = TransientError("dead letters unavailable (503)")
    services = dataclasses.replace(services, dead_letters=store)
    results = redrive(services)
    assert [outcome for _, outcome in results] == ["deleted"]
    assert store.removed == []
    store.broken_remove = None
    results = redrive(services)
    assert [outcome for _, outcome in results] == ["deleted"]
    assert store.removed == ["batch-1.json"]


def test_a_dry_run_with_dead_letters_counts_nothing(services: Services, tmp_path: Path) -> None:
    """A dry run reports dead letters as planned and leaves the per-rule metric as it was."""
    letters = tmp_path / "poison-events.jsonl"
    poison(letters, BLOB_CREATED, "a.txt")
    services = with_letters(services, letters)
    counted = reconcile_run.ACTIONS.snapshot()
    report = asyncio.run(reconcile(services, InProcessOrchestrations(services), dry_run=True))
    assert [(action.rule, outcome) for action, outcome in report.actions] == [(Rule.DEAD_LETTER, "planned")]
    assert reconcile_run.ACTIONS.snapshot() == counted


def test_a_bug_while_handling_one_letter_does_not_stop_the_others(services: Services) -> None:
    """An unexpected exception for one letter is reported for it; the other letters are handled."""
    blobs = services.blobs
    assert isinstance(blobs, InMemoryBlobSource)
    blobs.put("a.txt", b"First file with its own words. " * 20)
    blobs.put("b.txt", b"Second file with other words. " * 20)
    store = StoredLetters(
        [
            DeadLetter("1.json", BLOB_CREATED, subject("a.txt"), "undeliverable", 3),
            DeadLetter("2.json", BLOB_CREATED, subject("b.txt"), "undeliverable", 3),
        ]
    )
    services = dataclasses.replace(services, dead_letters=store)
    orchestrations = InProcessOrchestrations(services)
    orchestrations.fail_start[DocumentRef("uploads", "a.txt").doc_id] = RuntimeError("boom")
    results = asyncio.run(redrive_dead_letters(services, orchestrations, dry_run=False, limit=10))
    assert [outcome.split(" ")[0] for _, outcome in results] == ["failed:", "started"]
    assert results[0][1] == "failed: unexpected RuntimeError: boom"
    assert store.removed == ["2.json"]
