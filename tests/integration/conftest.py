"""One fixture per port, parametrized over implementations: the in-memory fake and the embedded
adapter (an "azure" parameter joins later). Every contract test runs against each of them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Protocol

import pytest

from ingestion.adapters.local_artifacts import FolderArtifactStore
from ingestion.adapters.local_blob import FolderBlobSource
from ingestion.adapters.local_embedder import HashingEmbedder
from ingestion.adapters.sqlite_index import SqliteSearchIndex
from ingestion.adapters.sqlite_jobs import SqliteJobStore
from ingestion.ports import ArtifactStore, BlobInfo, BlobSource, Embedder, JobStore, SearchIndex
from ingestion.tokens import Tokenizer
from tests.fakes import (
    CountingEmbedder,
    InMemoryArtifactStore,
    InMemoryBlobSource,
    InMemoryJobStore,
    InMemorySearchIndex,
)
from tests.integration.builders import DIMENSIONS

IMPLEMENTATIONS = ["memory", "embedded"]


class WritableBlobSource(BlobSource, Protocol):
    """A blob source the tests can also write to (as users do, through upload and delete)."""

    def put(self, path: str, data: bytes, last_modified: datetime | None = None) -> BlobInfo: ...

    def delete(self, path: str) -> bool: ...


@pytest.fixture(params=IMPLEMENTATIONS)
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> WritableBlobSource:
    if request.param == "memory":
        return InMemoryBlobSource()
    return FolderBlobSource(tmp_path / "inbox")


@pytest.fixture(params=IMPLEMENTATIONS)
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "memory":
        return InMemoryArtifactStore()
    return FolderArtifactStore(tmp_path / "artifacts")


@pytest.fixture(params=IMPLEMENTATIONS)
def jobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "memory":
        yield InMemoryJobStore()
        return
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    yield store
    store.close()


@pytest.fixture(params=IMPLEMENTATIONS)
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SearchIndex]:
    if request.param == "memory":
        yield InMemorySearchIndex(DIMENSIONS)
        return
    store = SqliteSearchIndex(tmp_path / "index.sqlite", DIMENSIONS)
    yield store
    store.close()


@pytest.fixture(params=IMPLEMENTATIONS)
def embedder(request: pytest.FixtureRequest, tokenizer: Tokenizer) -> Embedder:
    hashing = HashingEmbedder(256, tokenizer)
    return CountingEmbedder(hashing) if request.param == "memory" else hashing
