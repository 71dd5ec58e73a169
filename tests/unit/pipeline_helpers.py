"""Helpers for the pipeline tests: uploading through registration, and typed access to the fakes."""

from __future__ import annotations

import random

from ingestion.jobs import register_version
from ingestion.model import DocumentRef, Job
from ingestion.pipeline import run_document
from ingestion.services import Services
from ingestion.stages import StageRequest
from tests.fakes import CountingEmbedder, InMemoryBlobSource, InMemorySearchIndex

WORDS = ("harbour", "lantern", "meadow", "copper", "violin", "glacier", "orchard", "thunder", "saffron", "pebble")


def long_text(paragraph_count: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    return [
        " ".join(
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16))).capitalize() + "."
            for _ in range(rng.randint(2, 5))
        )
        for _ in range(paragraph_count)
    ]


def blobs(services: Services) -> InMemoryBlobSource:
    assert isinstance(services.blobs, InMemoryBlobSource)
    return services.blobs


def index(services: Services) -> InMemorySearchIndex:
    assert isinstance(services.index, InMemorySearchIndex)
    return services.index


def embedder(services: Services) -> CountingEmbedder:
    assert isinstance(services.embedder, CountingEmbedder)
    return services.embedder


def upload(services: Services, path: str, data: bytes) -> StageRequest:
    info = blobs(services).put(path, data)
    registration = register_version(services, DocumentRef(services.blobs.container, path), info.version)
    return StageRequest(registration.job.doc_id, info.version.etag)


def ingest(services: Services, path: str, data: bytes) -> Job:
    request = upload(services, path, data)
    run_document(services, request)
    job = services.jobs.get(request.doc_id)
    assert job is not None
    return job


def indexed_versions(services: Services, doc_id: str) -> set[str]:
    return {version for _, version in services.index.ids_for_doc(doc_id)}
