"""Every file of the real-world corpus, through every stage, on the embedded adapters."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ingestion.bootstrap import build_services
from ingestion.config import ParseLimits, Settings
from ingestion.devhost.folder import ingest_folder
from ingestion.model import Job, JobStatus, normalize_text
from ingestion.services import Services
from ingestion.stages.chunk import load_chunks
from tests.corpus_expectations import EXPECTED


@pytest.mark.corpus
@pytest.mark.timeout(900)
def test_every_corpus_file_is_indexed_with_its_text_or_ends_with_its_reason(corpus: Path, tmp_path: Path) -> None:
    """Each file ends indexed with a phrase of its own text in its chunks, or terminal with the expected reason."""
    # Given the corpus folder as the blob source, with the production limits (process isolation)
    settings = dataclasses.replace(
        Settings.from_env({}),
        inbox_dir=corpus,
        data_dir=tmp_path / "data",
        tiktoken_cache_dir=tmp_path / "tiktoken",
        limits=ParseLimits(timeout_s=90),
    )
    # When every file is ingested through the local host (blob events, orchestrations, activities)
    jobs = {job.path: job for job in ingest_folder(settings)}
    services = build_services(settings)
    try:
        _check_outcomes(services, corpus, jobs)
    finally:
        services.close()


def _check_outcomes(services: Services, corpus: Path, jobs: dict[str, Job]) -> None:

    # Then no file vanished, and each one ended where the expectations table says
    assert sorted(jobs) == sorted(path.name for path in corpus.iterdir())
    assert sorted(jobs) == sorted(EXPECTED)
    problems = []
    for name, (outcome, detail) in sorted(EXPECTED.items()):
        job = jobs[name]
        reason = job.last_error.code if job.last_error else None
        if outcome == "indexed":
            if job.status is not JobStatus.INDEXED:
                problems.append(f"{name}: {job.status} ({reason}: {job.last_error and job.last_error.message})")
                continue
            assert job.version.content_hash is not None
            text = normalize_text(" ".join(c.text for c in load_chunks(services, job.doc_id, job.version.content_hash)))
            if normalize_text(detail).casefold() not in text.casefold():
                problems.append(f"{name}: phrase {detail!r} missing from its chunks")
            if services.index.count_for_doc(job.doc_id) != job.chunk_count or job.chunk_count == 0:
                problems.append(
                    f"{name}: index holds {services.index.count_for_doc(job.doc_id)} chunks, job says {job.chunk_count}"
                )
        elif job.status.value != outcome or reason != detail:
            problems.append(f"{name}: expected {outcome}/{detail}, got {job.status}/{reason}")
    assert not problems, "\n".join(problems)
    assert all(job.status.is_terminal for job in jobs.values())
