"""The bundle of ports and settings that every stage receives (built once by ``bootstrap``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from ingestion.chunking import Chunker
from ingestion.config import Settings
from ingestion.ports import ArtifactStore, BlobSource, DeadLetters, Embedder, JobStore, SearchIndex
from ingestion.tokens import Tokenizer


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Adapters:
    """What a profile builds (``bootstrap``): the stores, the index, and what closes them."""

    blobs: BlobSource
    artifacts: ArtifactStore
    jobs: JobStore
    index: SearchIndex
    closers: tuple[Callable[[], None], ...]
    dead_letters: DeadLetters | None


@dataclass(frozen=True)
class Services:
    settings: Settings
    blobs: BlobSource
    artifacts: ArtifactStore
    jobs: JobStore
    index: SearchIndex
    embedder: Embedder
    tokenizer: Tokenizer
    clock: Callable[[], datetime] = field(default=utc_now)
    sleep: Callable[[float], None] = field(default=time.sleep)
    closers: tuple[Callable[[], None], ...] = ()  # what ``close`` releases (connections, files)
    dead_letters: DeadLetters | None = None  # undeliverable blob events, when the profile has a store for them

    def close(self) -> None:
        for close in self.closers:
            close()

    @property
    def chunker(self) -> Chunker:
        chunking = self.settings.chunking
        return Chunker(self.tokenizer, chunking.target_tokens, chunking.overlap_tokens)
