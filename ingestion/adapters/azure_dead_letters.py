"""Event Grid's dead letters: events it could not deliver to the app, kept as blobs in a container.

Event Grid writes each undeliverable batch as one blob (``<topic>/<y>/<m>/<d>/<h>/<guid>.json``)
holding a JSON array of events in the Event Grid schema, each with ``deadLetterReason`` and
``deliveryAttempts``. Every event of a blob is listed under the blob's name; the reconciler removes
the blob once it has re-driven all of them. The container is infrastructure's (never created here).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from contextlib import suppress
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import ContainerClient

from ingestion.adapters.azure_errors import translated
from ingestion.ports import DeadLetter

log = logging.getLogger(__name__)


class AzureDeadLetters:
    """Dead-lettered Event Grid events in ``container_client``'s container."""

    def __init__(self, container_client: ContainerClient) -> None:
        self._container = container_client

    def list(self, limit: int = 100) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        with translated(f"list dead letters in {self._container.container_name}"):
            for blob in self._container.list_blobs():
                if len(letters) >= limit:
                    break
                data = self._container.download_blob(blob.name).readall()
                letters.extend(_letters(blob.name, data))
        return letters

    def remove(self, keys: Iterable[str]) -> None:
        for name in sorted(set(keys)):
            # A letter already gone was removed by another pass, or by an operator.
            with translated(f"delete dead letter {name}"), suppress(ResourceNotFoundError):
                self._container.delete_blob(name)


def _letters(name: str, data: bytes) -> list[DeadLetter]:
    try:
        events: Any = json.loads(data)
    except ValueError:
        log.warning("dead letter %s is not JSON; left for a person", name)
        return []
    events = events if isinstance(events, list) else [events]
    return [
        DeadLetter(
            key=name,
            event_type=str(event.get("eventType", "")),
            subject=str(event.get("subject", "")),
            reason=str(event.get("deadLetterReason", "")),
            attempts=int(event.get("deliveryAttempts", 0) or 0),
        )
        for event in events
        if isinstance(event, dict)
    ]
