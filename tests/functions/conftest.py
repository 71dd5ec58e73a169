"""Running function_app.py on the local host (devhost) over in-memory fakes with fault injection."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import function_app
from ingestion.adapters.local_embedder import HashingEmbedder
from ingestion.bootstrap import using_services
from ingestion.config import ParseLimits, Settings
from ingestion.devhost.host import Host
from ingestion.model import DocumentRef, IndexRecord, Job
from ingestion.ports import Embeddings, IndexResult
from ingestion.retry import RetryPolicy
from ingestion.services import Services
from ingestion.tokens import Tokenizer
from tests.fakes import (
    CountingEmbedder,
    InMemoryArtifactStore,
    InMemoryBlobSource,
    InMemoryJobStore,
    InMemorySearchIndex,
)

# Short waits: the policy is the production one, scaled down so a test retries in milliseconds.
FAST_RETRY = RetryPolicy(attempts=3, first_delay_s=0.01, max_delay_s=1.0, retry_later_s=300.0)
SETTLE_S = 60.0


class Gate:
    """Holds a wrapped service's calls while closed, and says when one has started."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self._open = threading.Event()
        self._open.set()

    def hold(self) -> None:
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def pass_through(self) -> None:
        self.entered.set()
        assert self._open.wait(SETTLE_S), "the test never released the gate"


class GatedEmbedder(Gate):
    """Wraps an embedder; while the gate is held, embedding waits."""

    def __init__(self, inner: CountingEmbedder) -> None:
        super().__init__()
        self.inner = inner

    def __getattr__(self, name: str) -> Any:  # model, dimensions and limits come from the inner embedder
        return getattr(self.inner, name)

    def embed(self, texts: Sequence[str]) -> Embeddings:
        self.pass_through()
        return self.inner.embed(texts)


class GatedIndex(Gate):
    """Wraps the index; while the gate is held, upserts wait."""

    def __init__(self, inner: InMemorySearchIndex) -> None:
        super().__init__()
        self.inner = inner

    def __getattr__(self, name: str) -> Any:  # every other call goes straight to the inner index
        return getattr(self.inner, name)

    def upsert(self, records: Sequence[IndexRecord]) -> list[IndexResult]:
        self.pass_through()
        return self.inner.upsert(records)


@dataclass
class Running:
    """A started host and the fakes behind it."""

    host: Host
    services: Services
    blobs: InMemoryBlobSource
    jobs: InMemoryJobStore
    index: InMemorySearchIndex
    embedder: CountingEmbedder
    gate: GatedEmbedder
    index_gate: GatedIndex

    def job(self, path: str) -> Job:
        job = self.services.jobs.get(DocumentRef(self.blobs.container, path).doc_id)
        assert job is not None, path
        return job

    def settle(self) -> None:
        """Wait until the watcher has delivered every change and no orchestration is running."""
        self.host.wait_for_events(SETTLE_S)
        self.host.engine.wait_until_idle(SETTLE_S)

    def chunk_versions(self, path: str) -> set[str]:
        return {version for _, version in self.index.ids_for_doc(DocumentRef(self.blobs.container, path).doc_id)}


def make_services(tokenizer: Tokenizer, tmp_path: Path, **limits: int) -> Services:
    settings = dataclasses.replace(
        Settings.from_env({}),
        data_dir=tmp_path / "data",
        limits=ParseLimits(isolation="inline", **limits),
        retry=FAST_RETRY,
    )
    return Services(
        settings=settings,
        blobs=InMemoryBlobSource(),
        artifacts=InMemoryArtifactStore(),
        jobs=InMemoryJobStore(),
        index=GatedIndex(InMemorySearchIndex(dimensions=64)),
        embedder=GatedEmbedder(CountingEmbedder(HashingEmbedder(64, tokenizer))),
        tokenizer=tokenizer,
    )


@pytest.fixture
def running(tokenizer: Tokenizer, tmp_path: Path) -> Iterator[Running]:
    """function_app.py served by the devhost, its services replaced by fakes (never patched)."""
    services = make_services(tokenizer, tmp_path, max_file_bytes=1_000_000)
    assert isinstance(services.blobs, InMemoryBlobSource)
    assert isinstance(services.jobs, InMemoryJobStore)
    assert isinstance(services.index, GatedIndex)
    assert isinstance(services.embedder, GatedEmbedder)
    with using_services(services):
        host = Host(
            function_app.app,
            data_dir=tmp_path / "host",
            blob_source=services.blobs,
            port=0,
            activity_workers=2,
            watch_interval_s=0.02,
        )
        with host:
            gate, index_gate = services.embedder, services.index
            yield Running(host, services, services.blobs, services.jobs, index_gate.inner, gate.inner, gate, index_gate)
