"""Dead-letter stores: the local host's poison file, and Event Grid's dead-letter container (Azurite)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from ingestion.adapters.azure_dead_letters import AzureDeadLetters
from ingestion.adapters.local_dead_letters import FileDeadLetters, locked
from tests.emulators.azurite import Azurite

SUBJECT = "/blobServices/default/containers/uploads/blobs/{}"


def event(name: str, *, reason: str = "MaxDeliveryAttemptsExceeded", attempts: int = 30) -> dict[str, object]:
    """An undelivered event as Event Grid dead-letters it (Event Grid schema plus its two fields)."""
    return {
        "id": name,
        "eventType": "Microsoft.Storage.BlobCreated",
        "subject": SUBJECT.format(name),
        "deadLetterReason": reason,
        "deliveryAttempts": attempts,
    }


def test_event_grid_dead_letters_are_listed_per_event_and_removed_per_blob(
    azurite: Azurite, request: pytest.FixtureRequest
) -> None:
    """Each blob's events are listed under the blob's name; removing the name deletes the blob."""
    container = azurite.fresh_container(request, "deadletters")
    container.upload_blob("topic/2026/12/05/15/a.json", json.dumps([event("a.txt"), event("b.txt")]))
    container.upload_blob("topic/2026/12/05/15/b.json", json.dumps([event("c.txt", reason="NoSubscriber")]))
    store = AzureDeadLetters(container)
    letters = store.list()
    assert [(letter.subject, letter.reason, letter.attempts) for letter in letters] == [
        (SUBJECT.format("a.txt"), "MaxDeliveryAttemptsExceeded", 30),
        (SUBJECT.format("b.txt"), "MaxDeliveryAttemptsExceeded", 30),
        (SUBJECT.format("c.txt"), "NoSubscriber", 30),
    ]
    store.remove([letters[0].key, letters[1].key, "topic/never-existed.json"])
    assert [letter.subject for letter in store.list()] == [SUBJECT.format("c.txt")]


def test_a_dead_letter_blob_that_is_not_json_is_left_for_a_person(
    azurite: Azurite, request: pytest.FixtureRequest
) -> None:
    """A blob the reconciler cannot read yields no letter (and is not deleted)."""
    container = azurite.fresh_container(request, "deadletters")
    container.upload_blob("topic/broken.json", b"\x00not json")
    assert AzureDeadLetters(container).list() == []
    assert [blob.name for blob in container.list_blobs()] == ["topic/broken.json"]


def test_the_poison_file_keeps_lines_appended_while_it_is_rewritten(tmp_path: Path) -> None:
    """remove() and the dispatcher's appends share a lock: no appended letter is ever lost."""
    path = tmp_path / "poison-events.jsonl"
    store = FileDeadLetters(path)

    def append(name: str) -> None:
        record = {"attempts": 5, "error": "boom", "event": event(name)}
        with locked(path, "a") as file:
            file.write(json.dumps(record) + "\n")

    for n in range(50):
        append(f"old-{n}.txt")
    old = store.list(limit=1000)
    writers = [threading.Thread(target=append, args=(f"new-{n}.txt",)) for n in range(50)]
    for writer in writers:
        writer.start()
    store.remove(letter.key for letter in old)
    for writer in writers:
        writer.join()
    assert sorted(letter.subject for letter in store.list(limit=1000)) == sorted(
        SUBJECT.format(f"new-{n}.txt") for n in range(50)
    )
