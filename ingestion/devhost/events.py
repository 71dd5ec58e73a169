"""Event Grid blob events as Azure Storage sends them, and their at-least-once delivery to functions.

``blob_event`` builds a ``Microsoft.Storage.BlobCreated``/``BlobDeleted`` payload (Event Grid schema).
``EventDispatcher`` delivers events on one worker thread, so events reach functions in the order they
were seen (per blob path, and overall). A function that raises is retried with a short backoff up
to ``max_attempts`` (host.json ``extensions.queues.maxDequeueCount``, as for blob-trigger messages);
then the event is appended to a poison file, like ``webjobs-blobtrigger-poison``, and logged.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import queue
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ingestion.adapters.local_dead_letters import locked
from ingestion.triggers import BLOB_CREATED

log = logging.getLogger(__name__)

# Azurite's well-known development account: the BlobClient a blob trigger receives points there too.
DEV_ACCOUNT = "devstoreaccount1"
DEV_BLOB_ENDPOINT = f"http://127.0.0.1:10000/{DEV_ACCOUNT}"
_SUBJECT_PREFIX = "/blobServices/default/containers/"


class Sequencer:
    """Event Grid's ``data.sequencer``: 32 hex digits, strictly increasing, compared as strings.

    Derived from the wall clock in nanoseconds so that events after a restart still sort after
    the ones before it (the app stores sequencers with job versions); bumped by one when the clock
    has not advanced, so two events never share a value.
    """

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self._clock_ns = clock_ns
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            self._last = max(self._last + 1, self._clock_ns())
            return f"{self._last:032x}"


def blob_event(
    event_type: str,
    *,
    container: str,
    path: str,
    sequencer: str,
    etag: str | None = None,
    content_length: int | None = None,
    account: str = DEV_ACCOUNT,
    blob_endpoint: str = DEV_BLOB_ENDPOINT,
    now: datetime | None = None,
) -> dict[str, Any]:
    """One Event Grid event for a blob, shaped as Azure Storage publishes it.

    BlobCreated carries ``eTag`` and ``contentLength``; BlobDeleted does not (as in Azure).
    """
    created = event_type == BLOB_CREATED
    data: dict[str, Any] = {
        "api": "PutBlob" if created else "DeleteBlob",
        "clientRequestId": str(uuid.uuid4()),
        "requestId": str(uuid.uuid4()),
    }
    if created:
        data["eTag"] = etag
    data["contentType"] = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if created:
        data["contentLength"] = content_length
    data |= {
        "blobType": "BlockBlob",
        # A local file name may hold bytes that are not UTF-8 (kept as surrogates): percent-encode them.
        "url": f"{blob_endpoint}/{quote(container)}/{quote(path, safe='/', errors='surrogateescape')}",
        "sequencer": sequencer,
        "storageDiagnostics": {"batchId": str(uuid.uuid4())},
    }
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return {
        "topic": (
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/devhost"
            f"/providers/Microsoft.Storage/storageAccounts/{account}"
        ),
        "subject": f"{_SUBJECT_PREFIX}{container}/blobs/{path}",
        "eventType": event_type,
        "id": str(uuid.uuid4()),
        "data": data,
        "dataVersion": "",
        "metadataVersion": "1",
        # Azure writes seven fractional digits; Python has six, so the seventh is always 0.
        "eventTime": moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z",
    }


def blob_of(event: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(container, blob name)`` from a blob event's subject; ``None`` for other subjects."""
    subject = str(event.get("subject") or "")
    if not subject.startswith(_SUBJECT_PREFIX) or "/blobs/" not in subject:
        return None
    container, _, name = subject[len(_SUBJECT_PREFIX) :].partition("/blobs/")
    return (container, name) if container and name else None


@dataclass(frozen=True)
class Target:
    """One function an event goes to: ``run(event, attempt)`` raises when the invocation failed."""

    name: str
    run: Callable[[Mapping[str, Any], int], None]


class EventDispatcher:
    """Delivers events in order on one thread, retrying failed functions, then recording poison."""

    def __init__(
        self,
        route: Callable[[Mapping[str, Any]], Sequence[Target]],
        *,
        poison_path: Path,
        max_attempts: int = 5,
        backoff_s: float = 0.1,
    ) -> None:
        self._route = route
        self._poison_path = poison_path
        self.max_attempts = max(1, max_attempts)
        self._backoff_s = backoff_s
        self._queue: queue.SimpleQueue[Mapping[str, Any] | None] = queue.SimpleQueue()
        self._outstanding = 0
        self._idle = threading.Condition()
        self._stopping = threading.Event()
        self._poison_lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="devhost-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the event in hand; drop queued ones (a restart's rescan re-emits them)."""
        self._stopping.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, event: Mapping[str, Any]) -> None:
        """Queue ``event`` for delivery on the worker thread."""
        with self._idle:
            self._outstanding += 1
        self._queue.put(event)

    def wait_idle(self, timeout: float) -> None:
        """Block until every submitted event has been delivered (or poisoned); ``TimeoutError`` if not."""
        with self._idle:
            if not self._idle.wait_for(lambda: self._outstanding == 0, timeout):
                raise TimeoutError(f"{self._outstanding} event(s) still being delivered after {timeout} s")

    def deliver(self, event: Mapping[str, Any]) -> None:
        """Run every function ``event`` routes to, now, on this thread, with retries and poison."""
        for target in self._route(event):
            self._deliver_to(target, event)

    def _work(self) -> None:
        while True:
            event = self._queue.get()
            if event is None or self._stopping.is_set():
                return
            try:
                self.deliver(event)
            except Exception:  # a bug in routing must not kill delivery for every later event
                log.exception("could not deliver event %s", event.get("id"))
            finally:
                with self._idle:
                    self._outstanding -= 1
                    self._idle.notify_all()

    def _deliver_to(self, target: Target, event: Mapping[str, Any]) -> None:
        failure: Exception | None = None
        for attempt in range(self.max_attempts):
            if attempt and self._stopping.wait(min(self._backoff_s * 2 ** (attempt - 1), 5.0)):
                return  # stopping: not poison; the next start's rescan re-delivers the blob's event
            try:
                target.run(event, attempt)
            except Exception as error:  # noqa: BLE001 - any failure of user code is retried, then poisoned
                failure = error
                log.warning(
                    "function %s failed on event %s (attempt %d of %d): %r",
                    target.name,
                    event.get("id"),
                    attempt + 1,
                    self.max_attempts,
                    error,
                )
            else:
                return
        if failure is not None:
            self._poison(target, event, failure)

    def _poison(self, target: Target, event: Mapping[str, Any], error: Exception) -> None:
        log.error(
            "function %s gave up on event %s (%s %s) after %d attempts; recorded in %s",
            target.name,
            event.get("id"),
            event.get("eventType"),
            event.get("subject"),
            self.max_attempts,
            self._poison_path,
            exc_info=error,
        )
        record = {
            "function": target.name,
            "attempts": self.max_attempts,
            "error": f"{type(error).__name__}: {error}",
            "failedAt": datetime.now(UTC).isoformat(),
            "event": event,
        }
        line = json.dumps(record, default=str) + "\n"  # ASCII: names may hold undecodable bytes
        # Under the file's lock: the reconciler rewrites this file once it re-drove the letters.
        with self._poison_lock, locked(self._poison_path, "a") as file:
            file.write(line)
