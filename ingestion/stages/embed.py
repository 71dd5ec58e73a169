"""embed: vectors for every chunk, computing only those whose text has never been embedded.

Vectors are keyed by a hash of the chunk's normalized text, the model and the dimensions, not by
chunk id: an inserted paragraph shifts every later ordinal (and so every later id) but leaves their
text, and so their vectors, reusable. Old vectors come from the embed artifact of the version the
index holds. Large documents are embedded in batches bounded by input count and tokens; each batch
is saved as it completes, so a crash mid-document resumes without paying for a batch twice.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ingestion.errors import PermanentError, ReasonCode, TransientError
from ingestion.model import Chunk, JobStatus, normalize_text, stable_hash
from ingestion.ports import Embedder
from ingestion.services import Services
from ingestion.stages.chunk import load_chunks
from ingestion.stages.common import (
    StageRequest,
    advance,
    bounded_batches,
    content_key,
    embedding_variant,
    finished,
    read_json,
    require_content_hash,
    vectors_key,
    write_json,
)


@dataclass(frozen=True)
class EmbedResult:
    vectors_key: str
    chunks: int
    embedded: int  # distinct texts this run had to embed (not found in earlier versions or saved batches)
    reused: int  # chunks whose vector came from an earlier version or a duplicate chunk
    calls: int
    prompt_tokens: int

    def to_payload(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> EmbedResult:
        return cls(**data)


def embed_key(embedder: Embedder, text: str) -> str:
    return stable_hash("embed", embedder.model, str(embedder.dimensions), normalize_text(text))


def pack_vectors(keys: Sequence[str], vectors: Sequence[Sequence[float]], embedder: Embedder) -> dict[str, Any]:
    matrix = np.asarray(vectors, dtype="<f4").reshape(len(keys), embedder.dimensions)
    return {
        "model": embedder.model,
        "dimensions": embedder.dimensions,
        "keys": list(keys),
        "vectors": base64.b64encode(matrix.tobytes()).decode("ascii"),
    }


def unpack_vectors(data: dict[str, Any] | None, embedder: Embedder) -> dict[str, tuple[float, ...]]:
    """``{embed key: vector}`` from a packed artifact; empty if absent or from another model."""
    if not data or data.get("model") != embedder.model or data.get("dimensions") != embedder.dimensions:
        return {}
    matrix = np.frombuffer(base64.b64decode(data["vectors"]), dtype="<f4").reshape(-1, embedder.dimensions)
    return {key: tuple(float(x) for x in row) for key, row in zip(data["keys"], matrix.tolist(), strict=True)}


def embed_chunks(services: Services, request: StageRequest) -> EmbedResult:
    """Write ``<doc>/c-<hash>/vectors-<variant>.json`` (one vector per chunk); no-op when already done."""
    job = advance(services, request, JobStatus.EMBEDDING)
    content_hash = require_content_hash(job, "embed")
    output = vectors_key(services, job.doc_id, content_hash)
    checkpoint = output.replace("/vectors-", "/embed-")
    if (done := finished(services, checkpoint, output)) is not None:
        return EmbedResult.from_payload(done)

    embedder = services.embedder
    chunks = load_chunks(services, job.doc_id, content_hash)
    keys = [embed_key(embedder, chunk.text) for chunk in chunks]
    known: dict[str, tuple[float, ...]] = {}
    if job.indexed_hash and job.indexed_hash != content_hash:
        known.update(unpack_vectors(read_json(services, vectors_key(services, job.doc_id, job.indexed_hash)), embedder))
    # Saved batches are keyed by text and model, not by chunking: any run's parts are reusable.
    parts_prefix = content_key(job.doc_id, content_hash, f"embed-parts-{embedding_variant(services)}/")
    for part in services.artifacts.list(parts_prefix):
        known.update(unpack_vectors(read_json(services, part), embedder))

    missing: dict[str, Chunk] = {}
    for key, chunk in zip(keys, chunks, strict=True):
        if key not in known and key not in missing:
            if chunk.token_count > embedder.max_input_tokens:
                raise PermanentError(
                    ReasonCode.EMBED_REJECTED,
                    f"chunk {chunk.ordinal} has {chunk.token_count} tokens, over the model's "
                    f"{embedder.max_input_tokens}",
                )
            missing[key] = chunk

    settings = services.settings.embedding
    max_inputs = min(embedder.max_batch_inputs, settings.batch_inputs)
    max_tokens = min(embedder.max_batch_tokens, settings.batch_tokens)
    calls = tokens = 0
    for batch in bounded_batches(missing.items(), max_inputs, max_tokens, cost=lambda item: item[1].token_count):
        result = embedder.embed([chunk.text for _, chunk in batch])
        if len(result.vectors) != len(batch):
            raise TransientError(f"embedder returned {len(result.vectors)} vectors for {len(batch)} inputs")
        batch_keys = [key for key, _ in batch]
        part_key = parts_prefix + stable_hash("part", *batch_keys, length=24)
        write_json(services, part_key, pack_vectors(batch_keys, result.vectors, embedder))
        known.update(zip(batch_keys, result.vectors, strict=True))
        calls += 1
        tokens += result.prompt_tokens

    write_json(services, output, pack_vectors(keys, [known[key] for key in keys], embedder))
    result_record = EmbedResult(
        vectors_key=output,
        chunks=len(chunks),
        embedded=len(missing),
        reused=len(chunks) - len(missing),
        calls=calls,
        prompt_tokens=tokens,
    )
    write_json(services, checkpoint, result_record.to_payload())
    services.artifacts.delete_prefix(parts_prefix)
    return result_record


def load_vectors(services: Services, doc_id: str, content_hash: str) -> list[tuple[float, ...]]:
    """The vectors of ``content_hash``'s chunks, in chunk order."""
    data = read_json(services, vectors_key(services, doc_id, content_hash))
    if data is None:
        raise TransientError(f"{doc_id}: vectors artifact for {content_hash[:12]} is missing")
    by_key = unpack_vectors(data, services.embedder)
    if not by_key:
        raise TransientError(f"{doc_id}: vectors for {content_hash[:12]} were made by another model")
    return [by_key[key] for key in data["keys"]]
