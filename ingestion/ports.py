"""The capabilities the core needs from the outside world, as ``typing.Protocol``s.

Each port has an embedded adapter (``adapters/local_*``, ``adapters/sqlite_*``) and, later, an Azure
adapter; both pass the same contract tests. Adapters raise only the errors of ``ingestion.errors``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from ingestion.model import DocumentVersion, IndexRecord, Job, JobStatus

# --------------------------------------------------------------------------- blobs


@dataclass(frozen=True)
class BlobInfo:
    """A blob's name and version, as a listing or a properties call reports it."""

    path: str
    version: DocumentVersion


@dataclass(frozen=True)
class BlobPage:
    """One page of a blob listing and the opaque token that continues it (``None`` at the end)."""

    blobs: list[BlobInfo]
    continuation: str | None


class BlobSource(Protocol):
    """Where users' files live (the ``uploads`` container, or a local folder)."""

    @property
    def container(self) -> str: ...

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Every blob under ``prefix``, in name order, fetched page by page."""
        ...

    def page(self, continuation: str | None = None, limit: int = 1000) -> BlobPage:
        """One page of every blob, in name order: at most ``limit`` blobs from where ``continuation``
        (a token from the previous page) left off. The reconciler resumes a listing across runs."""
        ...

    def properties(self, path: str) -> BlobInfo:
        """The blob's current version; ``PermanentError(NOT_FOUND)`` when it is gone."""
        ...

    def read(self, path: str, etag: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The content of version ``etag``, streamed.

        Raises ``Superseded`` when the blob now has another ETag, ``PermanentError(NOT_FOUND)``
        when it is gone, ``TransientError`` for faults worth retrying.
        """
        ...


class ArtifactStore(Protocol):
    """Checkpoints and intermediate files, keyed by short path-safe keys (``doc_id/version/stage``)."""

    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` atomically: readers see the old value or the new one, never a part."""
        ...

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store a stream atomically; returns its size. If ``chunks`` raises, nothing is stored."""
        ...

    def get(self, key: str) -> bytes | None:
        """The stored bytes, or ``None`` when the key has none."""
        ...

    def open(self, key: str) -> Iterator[bytes]:
        """The stored bytes, streamed; ``KeyError`` when missing."""
        ...

    def exists(self, key: str) -> bool: ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key under ``prefix``; returns how many."""
        ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key under ``prefix``, in order."""
        ...


# --------------------------------------------------------------------------- dead letters


@dataclass(frozen=True)
class DeadLetter:
    """A blob event that could not be delivered or handled (Event Grid's dead-letter container, or
    the local host's poison file): the reconciler re-drives its file, then removes it."""

    key: str  # what ``remove`` takes (one stored letter may hold several events)
    event_type: str  # Microsoft.Storage.BlobCreated / BlobDeleted
    subject: str  # /blobServices/default/containers/<c>/blobs/<path>
    reason: str
    attempts: int


class DeadLetters(Protocol):
    def list(self, limit: int = 100) -> list[DeadLetter]:
        """Up to ``limit`` letters, oldest first (all events of a stored letter together)."""
        ...

    def remove(self, keys: Iterable[str]) -> None:
        """Forget the letters stored under ``keys`` (handled); a missing key is fine."""
        ...


# --------------------------------------------------------------------------- jobs


@dataclass(frozen=True)
class JobPage:
    """One page of a job listing and the token that continues it (``None`` at the end)."""

    jobs: list[Job]
    continuation: str | None


class JobStore(Protocol):
    """Job documents with optimistic concurrency (each write checks and returns a new ``etag``)."""

    def get(self, doc_id: str) -> Job | None: ...

    def get_many(self, doc_ids: Sequence[str]) -> dict[str, Job]:
        """The jobs of ``doc_ids`` that exist, by doc id (one round trip for a reconciler page)."""
        ...

    def create(self, job: Job) -> Job:
        """Insert a new job; ``ConcurrencyError`` when one exists. Returns it with its ``etag``."""
        ...

    def replace(self, job: Job) -> Job:
        """Write ``job`` if the stored one still has ``job.etag``; else ``ConcurrencyError``."""
        ...

    def list(
        self,
        status: JobStatus | None = None,
        *,
        updated_before: datetime | None = None,
        limit: int = 500,
        continuation: str | None = None,
    ) -> JobPage:
        """Jobs (optionally with ``status``, last updated before a moment), in ``doc_id`` order."""
        ...

    def count_by_status(self) -> dict[JobStatus, int]: ...


# --------------------------------------------------------------------------- search index


@dataclass(frozen=True)
class IndexResult:
    """The outcome for one document of a batch (Azure AI Search's ``IndexingResult``)."""

    key: str
    succeeded: bool
    status_code: int
    message: str = ""


class SearchMode(StrEnum):
    HYBRID = "hybrid"
    VECTOR = "vector"
    KEYWORD = "keyword"


@dataclass(frozen=True)
class SearchFilter:
    """Structured filters (adapters translate them; the Azure one to OData)."""

    doc_ids: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()
    content_types: tuple[str, ...] = ()
    access_groups: tuple[str, ...] = ()  # a hit must carry at least one of these, when given


@dataclass(frozen=True)
class SearchQuery:
    text: str = ""
    vector: tuple[float, ...] | None = None
    mode: SearchMode = SearchMode.HYBRID
    top: int = 5
    filter: SearchFilter = field(default_factory=SearchFilter)


@dataclass(frozen=True)
class SearchHit:
    """A chunk that matched, with what a citation needs."""

    id: str
    doc_id: str
    path: str
    title: str
    content: str
    ordinal: int
    page_start: int | None
    page_end: int | None
    headings: tuple[str, ...]
    version: str
    score: float


@dataclass(frozen=True)
class IndexedChunk:
    """A chunk as a full listing of the index reports it (what the reconciler compares)."""

    id: str
    doc_id: str
    version: str
    path: str


class SearchIndex(Protocol):
    """The chunk index that the chatbot searches."""

    def upsert(self, records: Sequence[IndexRecord]) -> list[IndexResult]:
        """Merge-or-upload ``records`` (one request's worth); one result per record, never raises
        for a per-document failure (only ``TransientError`` when the whole request failed)."""
        ...

    def delete(self, ids: Sequence[str]) -> list[IndexResult]:
        """Delete chunks by id; deleting a missing id succeeds."""
        ...

    def ids_for_doc(self, doc_id: str) -> Iterator[tuple[str, str]]:
        """``(chunk id, version)`` of every chunk the index holds for ``doc_id``, in id order."""
        ...

    def count_for_doc(self, doc_id: str) -> int: ...

    def chunks(self, after: str | None = None, limit: int = 1000) -> list[IndexedChunk]:
        """One page of the whole index: up to ``limit`` chunks with ids greater than ``after``, in id
        order (an empty page at the end). Pages by id, never by offset (``$skip`` stops at 100,000)."""
        ...

    def search(self, query: SearchQuery) -> list[SearchHit]: ...


# --------------------------------------------------------------------------- embeddings


@dataclass(frozen=True)
class Embeddings:
    """Vectors for a batch of inputs (same order) and the tokens the service counted."""

    vectors: list[tuple[float, ...]]
    prompt_tokens: int


class Embedder(Protocol):
    """Turns text into vectors. Limits tell the embed stage how to batch."""

    @property
    def model(self) -> str: ...

    @property
    def dimensions(self) -> int: ...

    @property
    def max_batch_inputs(self) -> int: ...

    @property
    def max_batch_tokens(self) -> int: ...

    @property
    def max_input_tokens(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> Embeddings: ...
