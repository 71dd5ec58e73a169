"""chunk: cut the parsed document into content-defined chunks (see ``ingestion.chunking``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ingestion.errors import PermanentError, ReasonCode, TransientError
from ingestion.model import Chunk, JobStatus, ParsedDocument
from ingestion.services import Services
from ingestion.stages.common import (
    StageRequest,
    advance,
    chunking_variant,
    chunks_key,
    content_key,
    finished,
    read_json,
    require_content_hash,
    write_json,
)


@dataclass(frozen=True)
class ChunkResult:
    chunks_key: str
    chunks: int
    tokens: int

    def to_payload(self) -> dict[str, Any]:
        return {"chunks_key": self.chunks_key, "chunks": self.chunks, "tokens": self.tokens}

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> ChunkResult:
        return cls(**data)


def chunk_document(services: Services, request: StageRequest) -> ChunkResult:
    """Chunk ``parsed.json`` into ``<doc>/c-<hash>/chunks-<variant>.json``; no-op when already done."""
    job = advance(services, request, JobStatus.CHUNKING)
    content_hash = require_content_hash(job, "chunk")
    checkpoint = content_key(job.doc_id, content_hash, f"chunk-{chunking_variant(services)}.json")
    output = chunks_key(services, job.doc_id, content_hash)
    if (done := finished(services, checkpoint, output)) is not None:
        return ChunkResult.from_payload(done)
    parsed = read_json(services, content_key(job.doc_id, content_hash, "parsed.json"))
    if parsed is None:
        raise TransientError(f"{job.doc_id}: chunk ran before parse finished (no parsed artifact)")
    chunks = services.chunker.chunk(ParsedDocument.from_payload(parsed), job.doc_id, content_hash)
    if not chunks:
        raise PermanentError(ReasonCode.EMPTY, "no text to index after parsing")
    write_json(services, output, [chunk.to_payload() for chunk in chunks])
    result = ChunkResult(chunks_key=output, chunks=len(chunks), tokens=sum(c.token_count for c in chunks))
    write_json(services, checkpoint, result.to_payload())
    return result


def load_chunks(services: Services, doc_id: str, content_hash: str) -> list[Chunk]:
    data = read_json(services, chunks_key(services, doc_id, content_hash))
    if data is None:
        raise TransientError(f"{doc_id}: chunks artifact for {content_hash[:12]} is missing")
    return [Chunk.from_payload(item) for item in data]
