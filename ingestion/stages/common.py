"""What every stage shares: the request, checkpoint keys, and version-guarded job updates."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from ingestion.chunking import Chunker
from ingestion.errors import ConcurrencyError, Superseded, TransientError
from ingestion.model import PROGRESS, Job, JobStatus, stable_hash
from ingestion.services import Services

T = TypeVar("T")
_UPDATE_ATTEMPTS = 20


@dataclass(frozen=True)
class StageRequest:
    """Which document, at which blob version (ETag), a stage is asked to work on."""

    doc_id: str
    etag: str

    def to_payload(self) -> dict[str, str]:
        return {"doc_id": self.doc_id, "etag": self.etag}

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> StageRequest:
        return cls(doc_id=str(data["doc_id"]), etag=str(data["etag"]))


# ------------------------------------------------------------------ checkpoint keys
# Keys are built from hashes only: blob names never reach the artifact store's paths.
# Fetch output is per blob version (ETag); everything derived from the bytes is per content hash,
# so a metadata-only change (new ETag, same bytes) reuses parse, chunk and embed work. Chunks are
# also keyed by the chunker's settings and vectors by the embedding model, so changing either
# recomputes instead of reusing work done under other settings.


def version_key(doc_id: str, version: str, name: str) -> str:
    return f"{doc_id}/v-{version}/{name}"


def content_key(doc_id: str, content_hash: str, name: str) -> str:
    return f"{doc_id}/c-{content_hash[:32]}/{name}"


def chunking_variant(services: Services) -> str:
    chunking = services.settings.chunking
    return stable_hash("chunking", Chunker.VERSION, str(chunking.target_tokens), str(chunking.overlap_tokens),
                       chunking.encoding, length=12)  # fmt: skip


def embedding_variant(services: Services) -> str:
    return stable_hash("embedding", services.embedder.model, str(services.embedder.dimensions), length=12)


def chunks_key(services: Services, doc_id: str, content_hash: str) -> str:
    return content_key(doc_id, content_hash, f"chunks-{chunking_variant(services)}.json")


def vectors_key(services: Services, doc_id: str, content_hash: str) -> str:
    variant = f"{chunking_variant(services)}-{embedding_variant(services)}"
    return content_key(doc_id, content_hash, f"vectors-{variant}.json")


def finished(services: Services, checkpoint: str, *outputs: str) -> Any:
    """A stage's recorded result, if it has one and every artifact it produced is still there."""
    done = read_json(services, checkpoint)
    if done is None or not all(services.artifacts.exists(key) for key in outputs):
        return None
    return done


def read_json(services: Services, key: str) -> Any:
    data = services.artifacts.get(key)
    return None if data is None else json.loads(data)


def write_json(services: Services, key: str, value: Any) -> None:
    # Text reaching artifacts is valid Unicode: the parser registry replaces lone surrogates.
    services.artifacts.put(key, json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())


def bounded_batches(items: Iterable[T], max_items: int, max_cost: int, cost: Callable[[T], int]) -> Iterator[list[T]]:
    """Consecutive runs of ``items`` with at most ``max_items`` items and ``max_cost`` summed cost.

    An item costlier than ``max_cost`` on its own still goes, alone: refusing it is the caller's call.
    """
    batch: list[T] = []
    total = 0
    for item in items:
        price = cost(item)
        if batch and (len(batch) >= max_items or total + price > max_cost):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += price
    if batch:
        yield batch


def require_content_hash(job: Job, stage: str) -> str:
    """The content hash fetch recorded; a stage that runs before it is out of order (transient)."""
    if job.version.content_hash is None:
        raise TransientError(f"{job.doc_id}: {stage} ran before fetch recorded the content hash")
    return job.version.content_hash


# ------------------------------------------------------------------ job updates


def current_job(services: Services, request: StageRequest) -> Job:
    """The job, if ``request`` is still its current, live version; else ``Superseded``."""
    return _require_current(services.jobs.get(request.doc_id), request)


def _require_current(job: Job | None, request: StageRequest) -> Job:
    # A deleted document is superseded too: its blob is gone, whatever version the job names.
    if job is None:
        raise Superseded(f"{request.doc_id}: no job document (deleted?)")
    if job.version.etag != request.etag:
        raise Superseded(f"{request.doc_id}: version {request.etag} replaced by {job.version.etag}")
    if job.status is JobStatus.DELETED:
        raise Superseded(f"{request.doc_id}: the blob was deleted")
    return job


def rewrite_job(services: Services, doc_id: str, change: Callable[[Job | None], Job | None]) -> Job | None:
    """Read-check-write on one job document: apply ``change`` to it as stored and write the result,
    re-reading and trying again when another writer got there first (the store's ETag check).
    ``change`` returns ``None`` to leave the document as it is; the document as it ends up."""
    for _ in range(_UPDATE_ATTEMPTS):
        job = services.jobs.get(doc_id)
        changed = change(job)
        if changed is None:
            return job
        try:
            return services.jobs.replace(changed)
        except ConcurrencyError:
            continue
    raise TransientError(f"{doc_id}: job document kept changing under {_UPDATE_ATTEMPTS} updates")


def update_job(services: Services, request: StageRequest, change: Callable[[Job], Job | None]) -> Job:
    """``rewrite_job`` for a stage: every attempt re-checks that ``request`` is still the current
    version (else ``Superseded``), so an older run never overwrites a newer one."""
    job = rewrite_job(services, request.doc_id, lambda stored: change(_require_current(stored, request)))
    if job is None:  # not reachable: _require_current refuses a missing document
        raise Superseded(f"{request.doc_id}: no job document")
    return job


def advance(services: Services, request: StageRequest, status: JobStatus, note: str = "") -> Job:
    """Move the job forward to ``status`` unless it is already there or further along.

    A replayed or retried stage finds the job past it and leaves it alone. A job that is not in
    progress (finished, waiting for review, deleted) is not this run's to move: ``Superseded``.
    """

    def change(job: Job) -> Job | None:
        if not job.status.in_progress:
            raise Superseded(f"{job.doc_id}: job is {job.status}, not in progress")
        if PROGRESS.index(job.status) >= PROGRESS.index(status):
            return None
        return job.transition(status, services.clock(), note)

    return update_job(services, request, change)
