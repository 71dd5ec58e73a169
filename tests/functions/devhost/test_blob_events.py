"""Blob events: Event Grid payloads, the folder watcher's stable-file rule, delivery, retries and poison."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ingestion.adapters.local_blob import FolderBlobSource
from ingestion.devhost.events import Sequencer, blob_event, blob_of
from ingestion.devhost.host import Host
from ingestion.devhost.watcher import BlobWatcher
from ingestion.errors import TransientError
from ingestion.ports import BlobInfo
from ingestion.triggers import BLOB_CREATED, BLOB_DELETED
from tests.functions.devhost import sample_app

pytestmark = pytest.mark.timeout(60)


def test_blob_created_payload_has_the_azure_storage_shape() -> None:
    """BlobCreated carries every field Azure Storage sends, in Event Grid schema."""
    event = blob_event(
        BLOB_CREATED, container="uploads", path="a dir/r.pdf", sequencer="0" * 32, etag='"x"', content_length=9
    )
    assert set(event) == {"topic", "subject", "eventType", "id", "data", "dataVersion", "metadataVersion", "eventTime"}
    assert event["subject"] == "/blobServices/default/containers/uploads/blobs/a dir/r.pdf"
    assert event["topic"].endswith("/providers/Microsoft.Storage/storageAccounts/devstoreaccount1")
    assert event["metadataVersion"] == "1"
    assert event["eventTime"].endswith("0Z")
    assert len(event["eventTime"]) == len("2017-06-26T18:41:00.9584103Z")
    data = event["data"]
    assert list(data) == [
        *("api", "clientRequestId", "requestId", "eTag", "contentType", "contentLength"),
        *("blobType", "url", "sequencer", "storageDiagnostics"),
    ]
    assert (data["api"], data["eTag"], data["contentLength"], data["blobType"]) == ("PutBlob", '"x"', 9, "BlockBlob")
    assert data["contentType"] == "application/pdf"
    assert data["url"] == "http://127.0.0.1:10000/devstoreaccount1/uploads/a%20dir/r.pdf"
    assert blob_of(event) == ("uploads", "a dir/r.pdf")


def test_blob_deleted_payload_has_no_etag_or_length() -> None:
    """BlobDeleted says DeleteBlob and, as in Azure, carries neither eTag nor contentLength."""
    data = blob_event(BLOB_DELETED, container="uploads", path="r.txt", sequencer="1" * 32)["data"]
    assert data["api"] == "DeleteBlob"
    assert "eTag" not in data
    assert "contentLength" not in data


def test_sequencer_is_fixed_width_and_strictly_increasing() -> None:
    """Even with a clock that stands still, each sequencer sorts after the last, as a string."""
    sequencer = Sequencer(clock_ns=lambda: 1_700_000_000_000_000_000)
    values = [sequencer.next() for _ in range(3)]
    assert all(len(value) == 32 for value in values)
    assert values == sorted(values)
    assert len(set(values)) == 3


@pytest.fixture
def watched(inbox: FolderBlobSource) -> tuple[BlobWatcher, list[dict[str, Any]]]:
    emitted: list[dict[str, Any]] = []
    return BlobWatcher(inbox, emitted.append), emitted


def kinds(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(event["eventType"].rsplit(".", 1)[1], event["subject"].rsplit("/blobs/", 1)[1]) for event in events]


def test_watcher_reports_a_change_once_the_file_is_stable(
    inbox: FolderBlobSource, watched: tuple[BlobWatcher, list[dict[str, Any]]]
) -> None:
    """Create, overwrite, delete: each reported once, created/changed only after an unchanged poll."""
    watcher, emitted = watched
    first = inbox.put("doc.txt", b"one")
    assert watcher.poll() == []
    assert kinds(watcher.poll()) == [("BlobCreated", "doc.txt")]
    assert watcher.poll() == []
    second = inbox.put("doc.txt", b"two, longer")
    assert watcher.poll() == []
    created = watcher.poll()
    assert kinds(created) == [("BlobCreated", "doc.txt")]
    assert (created[0]["data"]["eTag"], created[0]["data"]["contentLength"]) == (second.version.etag, 11)
    assert first.version.etag != second.version.etag
    inbox.delete("doc.txt")
    assert kinds(watcher.poll()) == [("BlobDeleted", "doc.txt")]
    assert watcher.poll() == []
    assert kinds(emitted) == [("BlobCreated", "doc.txt"), ("BlobCreated", "doc.txt"), ("BlobDeleted", "doc.txt")]
    sequencers = [event["data"]["sequencer"] for event in emitted]
    assert sequencers == sorted(sequencers)


def test_watcher_waits_while_a_file_keeps_changing(
    inbox: FolderBlobSource, watched: tuple[BlobWatcher, list[dict[str, Any]]]
) -> None:
    """A file whose ETag differs at every poll (still being copied) is not reported yet."""
    watcher, _ = watched
    for size in range(1, 4):
        inbox.put("growing.bin", b"x" * size)
        assert watcher.poll() == []
    assert kinds(watcher.poll()) == [("BlobCreated", "growing.bin")]


def test_watcher_reports_files_present_at_start_and_ignores_short_lived_ones(
    inbox: FolderBlobSource, watched: tuple[BlobWatcher, list[dict[str, Any]]]
) -> None:
    """Files dropped while the host was down are reported; one gone before it settled is not."""
    watcher, _ = watched
    inbox.put("a.txt", b"a")
    inbox.put("sub/b.txt", b"b")
    inbox.put("brief.txt", b"c")
    assert watcher.poll() == []
    inbox.delete("brief.txt")
    assert kinds(watcher.poll()) == [("BlobCreated", "a.txt"), ("BlobCreated", "sub/b.txt")]


def test_files_deleted_while_the_host_was_down_are_reported_deleted(inbox: FolderBlobSource, tmp_path: Path) -> None:
    """With a state file, a restarted watcher reports what vanished since the last run, and re-reports the rest."""
    state = tmp_path / "watcher.json"
    before = BlobWatcher(inbox, lambda _event: None, state_path=state)
    inbox.put("kept.txt", b"k")
    inbox.put("gone.txt", b"g")
    before.poll()
    assert kinds(before.poll()) == [("BlobCreated", "gone.txt"), ("BlobCreated", "kept.txt")]
    inbox.delete("gone.txt")  # while no host runs
    after = BlobWatcher(inbox, lambda _event: None, state_path=state)
    assert kinds(after.poll()) == [("BlobDeleted", "gone.txt")]
    assert kinds(after.poll()) == [("BlobCreated", "kept.txt")]
    assert kinds(BlobWatcher(inbox, lambda _event: None).poll()) == []  # without state nothing is known gone


def test_a_crash_right_after_a_restart_forgets_no_file_the_state_knew(inbox: FolderBlobSource, tmp_path: Path) -> None:
    """The first poll after a restart keeps the files not yet re-reported in the state, so a second
    crash and a deletion while the host is down are still reported."""
    state = tmp_path / "watcher.json"
    first = BlobWatcher(inbox, lambda _event: None, state_path=state)
    for name in ("a.txt", "b.txt", "c.txt"):
        inbox.put(name, name.encode())
    first.poll()
    first.poll()  # all three reported and saved
    inbox.delete("a.txt")  # while the host is down
    second = BlobWatcher(inbox, lambda _event: None, state_path=state)
    assert kinds(second.poll()) == [("BlobDeleted", "a.txt")]  # then the host crashes again
    inbox.delete("b.txt")  # while it is down again
    third = BlobWatcher(inbox, lambda _event: None, state_path=state)
    assert kinds(third.poll()) == [("BlobDeleted", "b.txt")]
    assert kinds(third.poll()) == [("BlobCreated", "c.txt")]


def test_failed_listing_is_not_taken_for_deletions(inbox: FolderBlobSource) -> None:
    """A listing that raises skips the poll instead of reporting every blob deleted."""

    class Flaky:
        container = "uploads"
        failing = False

        def list(self, prefix: str = "") -> Iterator[BlobInfo]:
            if self.failing:
                raise TransientError("listing timed out")
            return inbox.list(prefix)

    source = Flaky()
    emitted: list[dict[str, Any]] = []
    watcher = BlobWatcher(source, emitted.append)  # type: ignore[arg-type]  # a partial BlobSource
    inbox.put("kept.txt", b"k")
    watcher.poll()
    watcher.poll()
    source.failing = True
    assert watcher.poll() == []
    source.failing = False
    assert watcher.poll() == []
    assert kinds(emitted) == [("BlobCreated", "kept.txt")]


def test_host_delivers_watched_changes_to_blob_and_event_grid_triggers(
    make_host: Callable[..., Host], inbox: FolderBlobSource
) -> None:
    """A dropped file reaches the blob trigger (a BlobClient) and Event Grid; a deletion only Event Grid."""
    host = make_host(blob_source=inbox)
    inbox.put("report.txt", b"quarterly")
    host.wait_for_events(timeout=30)
    [blob] = sample_app.calls("on_blob")
    assert blob["type"] == "azure.storage.blob._blob_client.BlobClient"
    assert (blob["container"], blob["name"]) == ("uploads", "report.txt")
    assert blob["url"] == "http://127.0.0.1:10000/devstoreaccount1/uploads/report.txt"
    assert host.engine.wait_for("blob-report.txt", timeout=30)["output"]["shout"] == "REPORT.TXT"
    inbox.delete("report.txt")
    host.wait_for_events(timeout=30)
    events = [(call["type"], call["subject"]) for call in sample_app.calls("on_event")]
    subject = "/blobServices/default/containers/uploads/blobs/report.txt"
    assert events == [(BLOB_CREATED, subject), (BLOB_DELETED, subject)]
    assert len(sample_app.calls("on_blob")) == 1


def test_blob_client_comes_from_the_extension_when_the_connection_is_set(
    make_host: Callable[..., Host], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the connection app setting defined, the extension's converter builds the client from it."""
    key = "a2V5"  # any base64 text: building a client sends nothing
    setting = f"DefaultEndpointsProtocol=http;AccountName=devhosttest;AccountKey={key};BlobEndpoint=http://127.0.0.1:10000/devhosttest;"
    monkeypatch.setenv("AzureWebJobsStorage", setting)
    host = make_host()
    host.deliver(blob_event(BLOB_CREATED, container="uploads", path="x.txt", sequencer="2" * 32, etag='"e"'))
    [blob] = sample_app.calls("on_blob")
    assert blob["url"] == "http://127.0.0.1:10000/devhosttest/uploads/x.txt"
    assert blob["type"] == "azure.storage.blob._blob_client.BlobClient"


def test_duplicate_events_are_delivered_again_and_absorbed(make_host: Callable[..., Host], tmp_path: Path) -> None:
    """Injected duplicates reach the starter twice; "already exists" counts as success, so no poison."""
    host = make_host()
    event = blob_event(BLOB_CREATED, container="uploads", path="dup.txt", sequencer="3" * 32, etag='"d"')
    host.deliver(event)
    host.deliver(event)
    assert len(sample_app.calls("on_blob")) == 2
    host.engine.wait_for("blob-dup.txt", timeout=30)
    assert not (tmp_path / "data" / "poison-events.jsonl").exists()


def test_a_function_that_keeps_failing_ends_in_the_poison_file(make_host: Callable[..., Host], tmp_path: Path) -> None:
    """After maxDequeueCount attempts the event is recorded, with the function and the error."""
    host_json = tmp_path / "host.json"
    host_json.write_text(json.dumps({"version": "2.0", "extensions": {"queues": {"maxDequeueCount": 3}}}))
    host = make_host(host_json=host_json)
    event = blob_event(BLOB_CREATED, container="uploads", path="poison.txt", sequencer="4" * 32, etag='"p"')
    host.deliver(event)
    assert [call["id"] for call in sample_app.calls("on_event")] == [event["id"]] * 3
    assert len(sample_app.calls("on_blob")) == 1  # the blob trigger succeeded: only Event Grid's is poison
    [line] = (tmp_path / "data" / "poison-events.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert (record["function"], record["attempts"], record["event"]) == ("on_event", 3, event)
    assert record["error"] == "ValueError: this event always fails"


def test_watched_failures_are_retried_on_the_delivery_thread(
    make_host: Callable[..., Host], inbox: FolderBlobSource, tmp_path: Path
) -> None:
    """A watched blob whose trigger always raises is attempted maxDequeueCount times (default 5)."""
    host = make_host(blob_source=inbox)
    inbox.put("fail-me.txt", b"x")
    host.wait_for_events(timeout=30)
    assert [call["name"] for call in sample_app.calls("on_blob")] == ["fail-me.txt"] * 5
    [line] = (tmp_path / "data" / "poison-events.jsonl").read_text().splitlines()
    assert json.loads(line)["function"] == "on_blob"
