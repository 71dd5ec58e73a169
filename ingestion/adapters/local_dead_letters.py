"""The local host's dead letters: the poison file its event dispatcher appends to.

``devhost/events.py`` appends one JSON line per event a function gave up on; the reconciler reads
them and, once it has re-driven their files, rewrites the file without them. Both sides hold an
exclusive ``flock`` on the file while they touch it, so a line appended during a rewrite is kept.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ingestion.model import stable_hash
from ingestion.ports import DeadLetter

log = logging.getLogger(__name__)
POISON_FILE = "poison-events.jsonl"  # in the data directory, beside the host's durable store


@contextmanager
def locked(path: Path, mode: str) -> Iterator[IO[str]]:
    """``path`` opened with an exclusive lock held (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open(mode, encoding="utf-8") as file:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX)
        try:
            yield file
        finally:
            fcntl.flock(file.fileno(), fcntl.LOCK_UN)


class FileDeadLetters:
    """Dead letters in a JSON-lines file (``<data>/poison-events.jsonl``)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def list(self, limit: int = 100) -> list[DeadLetter]:
        if not self._path.exists():
            return []
        with locked(self._path, "a+") as file:
            file.seek(0)
            lines = file.readlines()
        letters = [letter for line in lines if (letter := _letter(line)) is not None]
        return letters[:limit]

    def remove(self, keys: Iterable[str]) -> None:
        gone = set(keys)
        if not gone or not self._path.exists():
            return
        with locked(self._path, "r+") as file:
            kept = [line for line in file.readlines() if _key(line) not in gone]
            file.seek(0)
            file.writelines(kept)
            file.truncate()
            file.flush()
            os.fsync(file.fileno())


def _key(line: str) -> str:
    return stable_hash("dead-letter", line.strip(), length=24)


def _letter(line: str) -> DeadLetter | None:
    if not line.strip():
        return None
    try:
        record: dict[str, Any] = json.loads(line)
        event = record["event"]
        return DeadLetter(
            key=_key(line),
            event_type=str(event.get("eventType", "")),
            subject=str(event.get("subject", "")),
            reason=str(record.get("error", "")),
            attempts=int(record.get("attempts", 0)),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        log.warning("unreadable dead letter skipped: %.200s", line)
        return None
