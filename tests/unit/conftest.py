"""Unit-test fixtures: the stages over in-memory fakes, parsing inline, time frozen, no sleeping."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingestion.adapters.local_embedder import HashingEmbedder
from ingestion.config import ParseLimits, Settings
from ingestion.services import Services
from ingestion.tokens import Tokenizer
from tests.fakes import (
    CountingEmbedder,
    InMemoryArtifactStore,
    InMemoryBlobSource,
    InMemoryJobStore,
    InMemorySearchIndex,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 1, tzinfo=UTC)
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def services(tokenizer: Tokenizer, clock: FakeClock, tmp_path: Path) -> Services:
    settings = dataclasses.replace(
        Settings.from_env({}), data_dir=tmp_path, limits=ParseLimits(isolation="inline", max_file_bytes=1_000_000)
    )
    return Services(
        settings=settings,
        blobs=InMemoryBlobSource(),
        artifacts=InMemoryArtifactStore(),
        jobs=InMemoryJobStore(),
        index=InMemorySearchIndex(dimensions=64),
        embedder=CountingEmbedder(HashingEmbedder(64, tokenizer)),
        tokenizer=tokenizer,
        clock=clock,
        sleep=clock.sleep,
    )
