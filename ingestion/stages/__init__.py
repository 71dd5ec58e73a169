"""The pipeline's stages: fetch -> parse -> chunk -> embed -> persist -> finalize.

Each stage is one public function ``stage(services, request) -> result``: idempotent, checkpointed
in the artifact store under ``(doc_id, version, stage)``, and guarded so that it refuses to write
for a version that is no longer the job's current one. Stages raise only ``ingestion.errors``.
"""

from __future__ import annotations

from ingestion.stages.chunk import chunk_document
from ingestion.stages.common import StageRequest
from ingestion.stages.embed import embed_chunks
from ingestion.stages.fetch import fetch_blob
from ingestion.stages.finalize import record_failure, record_success
from ingestion.stages.parse import parse_document
from ingestion.stages.persist import persist_chunks

__all__ = [
    "StageRequest",
    "chunk_document",
    "embed_chunks",
    "fetch_blob",
    "parse_document",
    "persist_chunks",
    "record_failure",
    "record_success",
]
