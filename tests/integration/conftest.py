"""One fixture per port, parametrized over implementations: the in-memory fake, the embedded adapter
and the Azure adapter (against Azurite, the Cosmos DB emulator, or the local AI Search and
embeddings servers of ``tests/emulators``). Every contract test runs against each of them.

The "azure" parameters need their server: they skip locally when it cannot start and fail under
``CI=true`` (``tests/emulators/process.py``)."""

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

IMPLEMENTATIONS = ["memory", "embedded", "azure"]


class WritableBlobSource(BlobSource, Protocol):
    """A blob source the tests can also write to (as users do, through upload and delete)."""

    def put(self, path: str, data: bytes, last_modified: datetime | None = None) -> BlobInfo: ...

    def delete(self, path: str) -> bool: ...


@pytest.fixture(params=IMPLEMENTATIONS)
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> WritableBlobSource:
    if request.param == "memory":
        return InMemoryBlobSource()
    if request.param == "azure":
        from tests.emulators.azurite import azure_blob_source  # noqa: PLC0415 -- only when asked for

        return azure_blob_source(request)
    return FolderBlobSource(tmp_path / "inbox")


@pytest.fixture(params=IMPLEMENTATIONS)
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "memory":
        return InMemoryArtifactStore()
    if request.param == "azure":
        from tests.emulators.azurite import azure_artifact_store  # noqa: PLC0415 -- only when asked for

        return azure_artifact_store(request)
    return FolderArtifactStore(tmp_path / "artifacts")


@pytest.fixture(params=IMPLEMENTATIONS)
def jobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "memory":
        yield InMemoryJobStore()
        return
    if request.param == "azure":
        from tests.emulators.cosmos import cosmos_job_store  # noqa: PLC0415 -- only when asked for

        yield from cosmos_job_store(request)
        return
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    yield store
    store.close()


@pytest.fixture(params=IMPLEMENTATIONS)
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SearchIndex]:
    if request.param == "memory":
        yield InMemorySearchIndex(DIMENSIONS)
        return
    if request.param == "azure":
        from tests.emulators.search import azure_search_index  # noqa: PLC0415 -- only when asked for

        yield from azure_search_index(request, DIMENSIONS)
        return
    store = SqliteSearchIndex(tmp_path / "index.sqlite", DIMENSIONS)
    yield store
    store.close()


@pytest.fixture(params=IMPLEMENTATIONS)
def embedder(request: pytest.FixtureRequest, tokenizer: Tokenizer) -> Embedder:
    if request.param == "azure":
        from tests.emulators.embeddings import openai_embedder  # noqa: PLC0415 -- only when asked for

        return openai_embedder(request, tokenizer)
    hashing = HashingEmbedder(256, tokenizer)
    return CountingEmbedder(hashing) if request.param == "memory" else hashing
