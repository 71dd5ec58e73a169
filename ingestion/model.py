"""The domain model: documents, their versions, pages, chunks and the job state machine.

Everything here is a frozen dataclass with ``to_payload``/``from_payload`` (plain JSON dicts), so
values cross process, artifact and Durable boundaries unchanged. No I/O.

Versions (ARCHITECTURE.md, "Versions, checked at every write"):
- ``etag`` says *that* a blob changed (metadata-only writes change it too); it keys the job's
  current version and the fetch checkpoint.
- ``content_hash`` (SHA-256 computed by fetch while streaming) says *what* changed; it keys the
  parse/chunk/embed checkpoints and is the ``version`` every chunk carries, so a metadata-only change
  reuses all work and leaves no chunk stale.
- ``last_modified`` (and the Event Grid ``sequencer``, when known) says which version is *newer*;
  ETags are unordered.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ingestion.errors import InvalidTransition


def stable_hash(*parts: str, length: int = 32) -> str:
    """A hex SHA-256 over ``parts`` separated by a byte that cannot occur in text (NUL)."""
    digest = hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:length]


def to_iso(moment: datetime) -> str:
    """UTC ISO-8601 text; naive datetimes are refused because they hide bugs."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment.astimezone(UTC).isoformat()


def from_iso(text: str) -> datetime:
    """Parse ``to_iso`` output (and the ``Z`` suffix Azure uses)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# --------------------------------------------------------------------------- documents


@dataclass(frozen=True)
class DocumentRef:
    """A blob's identity. ``doc_id`` is a hash, so names never reach a file system or a key."""

    container: str
    path: str

    @property
    def doc_id(self) -> str:
        return stable_hash("doc", self.container, self.path)


@dataclass(frozen=True)
class DocumentVersion:
    """One version of a blob, as its properties (and later its content) describe it."""

    etag: str
    size: int
    last_modified: datetime
    content_hash: str | None = None  # filled in by fetch
    sequencer: str | None = None  # Event Grid's ordering token, when the event carried one

    @property
    def key(self) -> str:
        """A short, path-safe key for this version (the ETag itself may hold quotes)."""
        return stable_hash("etag", self.etag, length=20)

    def is_newer_than(self, other: DocumentVersion) -> bool | None:
        """Whether this version supersedes ``other``; ``None`` when the metadata cannot tell.

        Sequencers decide when both versions have one. Otherwise ``last_modified`` does, but two
        writes within one clock tick (Azure's Last-Modified has one-second resolution) tie: then
        only the blob's current properties can say which is current, so the caller must ask.
        The same ETag is never newer.
        """
        if self.etag == other.etag:
            return False
        if self.sequencer and other.sequencer and len(self.sequencer) == len(other.sequencer):
            return self.sequencer > other.sequencer
        if self.last_modified == other.last_modified:
            return None
        return self.last_modified > other.last_modified

    def to_payload(self) -> dict[str, Any]:
        return {
            "etag": self.etag,
            "size": self.size,
            "last_modified": to_iso(self.last_modified),
            "content_hash": self.content_hash,
            "sequencer": self.sequencer,
        }

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> DocumentVersion:
        return cls(
            etag=str(data["etag"]),
            size=int(data["size"]),
            last_modified=from_iso(str(data["last_modified"])),
            content_hash=data.get("content_hash"),
            sequencer=data.get("sequencer"),
        )


@dataclass(frozen=True)
class Block:
    """A run of text in reading order: a paragraph, a table row group, or a heading."""

    text: str
    heading_level: int = 0  # 0 = body text; 1..6 = a heading of that level

    def to_payload(self) -> list[Any]:
        return [self.text, self.heading_level]

    @classmethod
    def from_payload(cls, data: list[Any]) -> Block:
        return cls(text=str(data[0]), heading_level=int(data[1]))


@dataclass(frozen=True)
class Page:
    """A page (PDF), slide (PPTX) or sheet (XLSX); formats without pages have one with ``number=None``."""

    number: int | None
    blocks: tuple[Block, ...]

    @property
    def text(self) -> str:
        return "\n\n".join(block.text for block in self.blocks)

    def to_payload(self) -> dict[str, Any]:
        return {"number": self.number, "blocks": [b.to_payload() for b in self.blocks]}

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> Page:
        return cls(number=data["number"], blocks=tuple(Block.from_payload(b) for b in data["blocks"]))


@dataclass(frozen=True)
class ParsedDocument:
    """What a parser extracted: the sniffed content type, an optional title and the pages."""

    content_type: str
    pages: tuple[Page, ...]
    title: str | None = None

    @property
    def text(self) -> str:
        return "\n\n".join(page.text for page in self.pages if page.blocks)

    def to_payload(self) -> dict[str, Any]:
        return {
            "content_type": self.content_type,
            "title": self.title,
            "pages": [p.to_payload() for p in self.pages],
        }

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> ParsedDocument:
        return cls(
            content_type=str(data["content_type"]),
            title=data.get("title"),
            pages=tuple(Page.from_payload(p) for p in data["pages"]),
        )


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough to embed and cite.

    ``id`` = H(doc_id, ordinal, content_hash): upserting the same chunk twice never duplicates it.
    ``content_hash`` = H(normalized text): the key for vector reuse across versions and ordinals.
    ``version`` = the document's content hash this chunk was cut from.
    """

    doc_id: str
    ordinal: int
    text: str
    version: str
    page_start: int | None
    page_end: int | None
    headings: tuple[str, ...]
    token_count: int

    @property
    def content_hash(self) -> str:
        return text_hash(self.text)

    @property
    def id(self) -> str:
        return stable_hash("chunk", self.doc_id, str(self.ordinal), self.content_hash)

    def to_payload(self) -> dict[str, Any]:
        return {
            "doc_id": self.doc_id,
            "ordinal": self.ordinal,
            "text": self.text,
            "version": self.version,
            "page_start": self.page_start,
            "page_end": self.page_end,
            "headings": list(self.headings),
            "token_count": self.token_count,
        }

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> Chunk:
        return cls(
            doc_id=str(data["doc_id"]),
            ordinal=int(data["ordinal"]),
            text=str(data["text"]),
            version=str(data["version"]),
            page_start=data.get("page_start"),
            page_end=data.get("page_end"),
            headings=tuple(data.get("headings", ())),
            token_count=int(data["token_count"]),
        )


def normalize_text(text: str) -> str:
    """Whitespace-insensitive form of a chunk's text (what its hash and vector depend on)."""
    return " ".join(text.split())


def text_hash(text: str) -> str:
    return stable_hash("text", normalize_text(text))


@dataclass(frozen=True)
class IndexRecord:
    """One search-index document: a chunk, its vector and what a citation needs."""

    chunk: Chunk
    vector: tuple[float, ...]
    path: str
    title: str
    content_type: str
    last_modified: datetime
    ingested_at: datetime
    access_groups: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return self.chunk.id


# --------------------------------------------------------------------------- jobs


class JobStatus(StrEnum):
    QUEUED = "queued"
    FETCHING = "fetching"
    PARSING = "parsing"
    CHUNKING = "chunking"
    EMBEDDING = "embedding"
    INDEXING = "indexing"
    INDEXED = "indexed"
    SKIPPED = "skipped"
    RETRY_LATER = "retry_later"
    NEEDS_REVIEW = "needs_review"
    DELETED = "deleted"

    @property
    def is_terminal(self) -> bool:
        """Whether nothing more happens to this job without a new version or a person."""
        return self in TERMINAL

    @property
    def in_progress(self) -> bool:
        return self in PROGRESS

    @property
    def in_backlog(self) -> bool:
        """Whether the pipeline still owes this job a run: in progress, or waiting to be re-driven."""
        return self in PROGRESS or self is JobStatus.RETRY_LATER


PROGRESS: tuple[JobStatus, ...] = (
    JobStatus.QUEUED,
    JobStatus.FETCHING,
    JobStatus.PARSING,
    JobStatus.CHUNKING,
    JobStatus.EMBEDDING,
    JobStatus.INDEXING,
)
TERMINAL = frozenset({JobStatus.INDEXED, JobStatus.SKIPPED, JobStatus.NEEDS_REVIEW, JobStatus.DELETED})


def _transitions() -> dict[JobStatus, frozenset[JobStatus]]:
    s = JobStatus
    # Any job can be deleted or re-queued (new version, re-drive, manual re-ingest).
    always = {s.QUEUED, s.DELETED}
    table: dict[JobStatus, set[JobStatus]] = {}
    for index, status in enumerate(PROGRESS):
        # Forward along the pipeline (stages skip ahead when their checkpoint exists), or out to
        # an outcome: empty files are skipped, permanent failures need review, transient ones
        # that outlived their retries wait for the reconciler.
        table[status] = set(PROGRESS[index + 1 :]) | {s.SKIPPED, s.NEEDS_REVIEW, s.RETRY_LATER}
    table[s.INDEXING].add(s.INDEXED)
    table[s.INDEXED] = {s.INDEXING}  # the reconciler re-persists a damaged index entry
    table[s.SKIPPED] = set()
    table[s.RETRY_LATER] = {s.NEEDS_REVIEW}  # too many re-drives
    table[s.NEEDS_REVIEW] = set()
    table[s.DELETED] = set()
    return {status: frozenset((targets | always) - {status}) for status, targets in table.items()}


TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = _transitions()


@dataclass(frozen=True)
class ErrorInfo:
    """The last failure recorded on a job."""

    stage: str
    kind: str  # "transient" | "permanent"
    code: str
    message: str
    at: datetime

    def to_payload(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "kind": self.kind,
            "code": self.code,
            "message": self.message,
            "at": to_iso(self.at),
        }

    @classmethod
    def from_payload(cls, data: Mapping[str, Any]) -> ErrorInfo:
        return cls(
            stage=str(data["stage"]),
            kind=str(data["kind"]),
            code=str(data["code"]),
            message=str(data["message"]),
            at=from_iso(str(data["at"])),
        )


@dataclass(frozen=True)
class TrailEntry:
    """One status change, kept so an operator can see why a file is where it is."""

    at: datetime
    status: JobStatus
    note: str

    def to_payload(self) -> list[str]:
        return [to_iso(self.at), self.status.value, self.note]

    @classmethod
    def from_payload(cls, data: list[str]) -> TrailEntry:
        return cls(at=from_iso(data[0]), status=JobStatus(data[1]), note=data[2])


TRAIL_LIMIT = 30


@dataclass(frozen=True)
class Job:
    """The job document: one per document (``id`` = doc id), tracking its current version.

    ``etag`` is the job store's concurrency token for this document (not the blob's ETag);
    stores set it on every write and ``JobStore.replace`` refuses a stale one.
    """

    doc_id: str
    container: str
    path: str
    version: DocumentVersion
    status: JobStatus
    created_at: datetime
    updated_at: datetime
    attempts: int = 0
    redrives: int = 0
    last_error: ErrorInfo | None = None
    retry_at: datetime | None = None
    indexed_hash: str | None = None  # content hash whose chunks the index holds
    chunk_count: int = 0
    chunk_ids_digest: str | None = None
    instance_id: str | None = None
    stage_times: Mapping[str, str] = field(default_factory=dict)
    trail: tuple[TrailEntry, ...] = ()
    etag: str | None = None

    @property
    def queued_at(self) -> datetime:
        """When the job was last queued (a re-drive queues it again): what the backlog's age counts from."""
        stamp = self.stage_times.get(JobStatus.QUEUED.value)
        return from_iso(stamp) if stamp else self.created_at

    @property
    def ref(self) -> DocumentRef:
        return DocumentRef(self.container, self.path)

    def transition(self, to: JobStatus, at: datetime, note: str = "", **changes: Any) -> Job:
        """This job moved to ``to`` (validated against ``TRANSITIONS``), with ``changes`` applied."""
        if to is not self.status and to not in TRANSITIONS[self.status]:
            raise InvalidTransition(f"{self.doc_id}: {self.status} -> {to} is not allowed")
        trail = (*self.trail, TrailEntry(at, to, note))[-TRAIL_LIMIT:]
        stage_times = {**self.stage_times, to.value: to_iso(at)}
        return replace(self, status=to, updated_at=at, trail=trail, stage_times=stage_times, **changes)

    def to_payload(self) -> dict[str, Any]:
        return {
            "id": self.doc_id,
            "container": self.container,
            "path": self.path,
            "version": self.version.to_payload(),
            "status": self.status.value,
            "created_at": to_iso(self.created_at),
            "updated_at": to_iso(self.updated_at),
            "attempts": self.attempts,
            "redrives": self.redrives,
            "last_error": self.last_error.to_payload() if self.last_error else None,
            "retry_at": to_iso(self.retry_at) if self.retry_at else None,
            "indexed_hash": self.indexed_hash,
            "chunk_count": self.chunk_count,
            "chunk_ids_digest": self.chunk_ids_digest,
            "instance_id": self.instance_id,
            "stage_times": dict(self.stage_times),
            "trail": [t.to_payload() for t in self.trail],
        }

    @classmethod
    def from_payload(cls, data: Mapping[str, Any], etag: str | None = None) -> Job:
        return cls(
            doc_id=str(data["id"]),
            container=str(data["container"]),
            path=str(data["path"]),
            version=DocumentVersion.from_payload(data["version"]),
            status=JobStatus(data["status"]),
            created_at=from_iso(data["created_at"]),
            updated_at=from_iso(data["updated_at"]),
            attempts=int(data.get("attempts", 0)),
            redrives=int(data.get("redrives", 0)),
            last_error=ErrorInfo.from_payload(data["last_error"]) if data.get("last_error") else None,
            retry_at=from_iso(data["retry_at"]) if data.get("retry_at") else None,
            indexed_hash=data.get("indexed_hash"),
            chunk_count=int(data.get("chunk_count", 0)),
            chunk_ids_digest=data.get("chunk_ids_digest"),
            instance_id=data.get("instance_id"),
            stage_times=dict(data.get("stage_times", {})),
            trail=tuple(TrailEntry.from_payload(t) for t in data.get("trail", ())),
            etag=etag,
        )


def chunk_ids_digest(ids: Iterable[str]) -> str:
    """An order-independent digest of a set of chunk ids (compared by the reconciler)."""
    return stable_hash("ids", *sorted(ids))
