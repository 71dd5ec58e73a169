"""Polls a ``BlobSource`` and turns what changed into Event Grid blob events, as Azure Storage would.

Each poll lists the source and diffs ``{path: etag}`` against what was already reported. A new or
changed blob is reported (BlobCreated) only once it is stable: the same ETag on two consecutive
polls, so a file still being copied into the folder is not ingested half-written. A reported blob
that disappears is reported deleted (BlobDeleted). At start the first polls see every existing
blob as new, so files dropped (or events lost) while the host was down are caught (the functions
are idempotent); and with a ``state_path`` the blobs reported before the restart that are gone now
are reported deleted, so a file deleted while the host was down leaves the index too. A failed
listing is logged and skipped, never taken for "everything was deleted".
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ingestion.devhost.events import Sequencer, blob_event
from ingestion.errors import IngestionError
from ingestion.ports import BlobInfo, BlobSource
from ingestion.triggers import BLOB_CREATED, BLOB_DELETED

log = logging.getLogger(__name__)


class BlobWatcher:
    """Emits an Event Grid payload per settled change in ``source``, on its own polling thread."""

    def __init__(
        self,
        source: BlobSource,
        emit: Callable[[dict[str, Any]], None],
        *,
        interval_s: float = 1.0,
        sequencer: Sequencer | None = None,
        state_path: Path | None = None,
    ) -> None:
        self._source = source
        self._state_path = state_path
        self._before_restart = _load_state(state_path)  # path -> etag reported by the previous run
        self._emit = emit
        self._interval_s = interval_s
        self._sequencer = sequencer or Sequencer()
        self._reported: dict[str, str] = {}  # path -> etag last reported as created
        self._candidates: dict[str, BlobInfo] = {}  # seen changed once; reported if unchanged next poll
        self._polls_started = 0
        self._polls_done = 0
        self._progress = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="devhost-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._progress:
            self._progress.notify_all()

    def poll(self) -> list[dict[str, Any]]:
        """List the source once; emit (and return) the events for what has settled since last time."""
        with self._progress:
            self._polls_started += 1
        try:
            try:
                snapshot = {info.path: info for info in self._source.list()}
            except (IngestionError, OSError) as error:
                log.warning("blob listing failed, skipping this poll: %s", error)
                return []
            events = self._diff(snapshot)
            for event in events:
                self._emit(event)
            if events:
                self._save_state()
            return events
        finally:
            with self._progress:
                self._polls_done += 1
                self._progress.notify_all()

    def wait_caught_up(self, timeout: float) -> None:
        """Block until a poll that started after this call has found nothing left to settle."""
        with self._progress:
            target = self._polls_started + 1
            if not self._progress.wait_for(
                lambda: self._stopping.is_set() or (self._polls_done >= target and not self._candidates),
                timeout,
            ):
                raise TimeoutError(f"blob changes still settling after {timeout} s: {sorted(self._candidates)}")

    def _diff(self, snapshot: Mapping[str, BlobInfo]) -> list[dict[str, Any]]:
        container = self._source.container
        events: list[dict[str, Any]] = []
        candidates: dict[str, BlobInfo] = {}
        for path, info in snapshot.items():
            etag = info.version.etag
            if self._reported.get(path) == etag:
                continue
            seen = self._candidates.get(path)
            if seen is None or seen.version.etag != etag:
                candidates[path] = info  # new or still changing: wait one more poll
                continue
            self._reported[path] = etag
            events.append(
                blob_event(
                    BLOB_CREATED,
                    container=container,
                    path=path,
                    etag=etag,
                    content_length=info.version.size,
                    sequencer=self._sequencer.next(),
                )
            )
        gone = (self._reported.keys() | self._before_restart.keys()) - snapshot.keys()
        # Blobs reported before the restart that are still here stay in the saved state until they
        # are reported again: saving only ``_reported`` (empty right after a start) would forget them,
        # and after a crash before their re-report a deletion while the host is down would go unreported.
        self._before_restart = {
            path: etag for path, etag in self._before_restart.items() if path in snapshot and path not in self._reported
        }
        for path in sorted(gone):
            self._reported.pop(path, None)
            events.append(blob_event(BLOB_DELETED, container=container, path=path, sequencer=self._sequencer.next()))
        with self._progress:
            self._candidates = candidates
        return events

    def _save_state(self) -> None:
        if self._state_path is None:
            return
        scratch = self._state_path.with_suffix(".tmp")
        known = self._before_restart | self._reported  # see _diff: not yet re-reported ones too
        scratch.write_text(json.dumps(known))  # ASCII: names may hold undecodable bytes
        os.replace(scratch, self._state_path)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.poll()
            except Exception:  # the watcher must outlive one bad poll (an emit bug, a source fault)
                log.exception("blob watcher poll failed")
            self._stopping.wait(self._interval_s)


def _load_state(path: Path | None) -> dict[str, str]:
    if path is None or not path.is_file():
        return {}
    try:
        loaded = json.loads(path.read_text())
    except ValueError:
        log.warning("ignoring unreadable watcher state %s", path)
        return {}
    return {str(name): str(etag) for name, etag in loaded.items()} if isinstance(loaded, dict) else {}
