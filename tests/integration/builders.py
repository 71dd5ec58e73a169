"""Small builders of domain values for the contract tests (jobs, chunks, index records)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ingestion.model import Chunk, DocumentVersion, IndexRecord, Job, JobStatus

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DIMENSIONS = 8


def make_job(doc_id: str, status: JobStatus = JobStatus.QUEUED, *, minutes: int = 0, path: str = "") -> Job:
    """A job for ``doc_id``, last updated ``minutes`` after T0."""
    at = T0 + timedelta(minutes=minutes)
    version = DocumentVersion(etag='"0x1"', size=10, last_modified=T0)
    return Job(
        doc_id=doc_id,
        container="uploads",
        path=path or f"docs/{doc_id}.txt",
        version=version,
        status=status,
        created_at=at,
        updated_at=at,
    )


def axis(index: int, scale: float = 1.0) -> tuple[float, ...]:
    """A vector along axis ``index`` (of DIMENSIONS), scaled."""
    return tuple(scale if i == index else 0.0 for i in range(DIMENSIONS))


def blend(*weights: float) -> tuple[float, ...]:
    """A vector with the given leading components, zero-padded to DIMENSIONS."""
    return tuple(weights) + (0.0,) * (DIMENSIONS - len(weights))


def make_record(
    doc_id: str,
    ordinal: int,
    text: str,
    vector: tuple[float, ...] | None = None,
    *,
    version: str = "v1",
    content_type: str = "text/plain",
    access_groups: tuple[str, ...] = (),
    title: str = "",
    headings: tuple[str, ...] = (),
) -> IndexRecord:
    """An index record for chunk ``ordinal`` of ``doc_id`` (vector defaults to axis 0)."""
    chunk = Chunk(
        doc_id=doc_id,
        ordinal=ordinal,
        text=text,
        version=version,
        page_start=ordinal + 1,
        page_end=ordinal + 2,
        headings=headings,
        token_count=len(text.split()),
    )
    return IndexRecord(
        chunk=chunk,
        vector=vector if vector is not None else axis(0),
        path=f"docs/{doc_id}.pdf",
        title=title or f"Title of {doc_id}",
        content_type=content_type,
        last_modified=T0,
        ingested_at=T0,
        access_groups=access_groups,
    )
