"""The whole pipeline on the embedded adapters: real files, hostile names, killed parse children."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingestion.adapters.local_artifacts import FolderArtifactStore
from ingestion.adapters.local_blob import FolderBlobSource
from ingestion.adapters.local_embedder import HashingEmbedder
from ingestion.adapters.sqlite_index import SqliteSearchIndex
from ingestion.adapters.sqlite_jobs import SqliteJobStore
from ingestion.bootstrap import build_services
from ingestion.config import ParseLimits, Settings
from ingestion.devhost.folder import ingest_folder
from ingestion.jobs import register_version
from ingestion.model import DocumentRef, Job, JobStatus
from ingestion.pipeline import run_document
from ingestion.ports import BlobSource
from ingestion.services import Services
from ingestion.stages import StageRequest
from ingestion.tokens import Tokenizer
from tests.fakes import CountingEmbedder, InMemoryBlobSource


def embedded(root: Path, tokenizer: Tokenizer, blobs: BlobSource, limits: ParseLimits | None = None) -> Services:
    settings = dataclasses.replace(Settings.from_env({}), data_dir=root, limits=limits or ParseLimits())
    jobs = SqliteJobStore(root / "jobs.sqlite3")
    index = SqliteSearchIndex(root / "index.sqlite3", settings.embedding.dimensions)
    return Services(
        settings=settings,
        blobs=blobs,
        artifacts=FolderArtifactStore(root / "artifacts"),
        jobs=jobs,
        index=index,
        embedder=CountingEmbedder(HashingEmbedder(settings.embedding.dimensions, tokenizer)),
        tokenizer=tokenizer,
        sleep=lambda _: None,
        closers=(jobs.close, index.close),
    )


@pytest.fixture
def services(tmp_path: Path, tokenizer: Tokenizer) -> Iterator[Services]:
    built = embedded(tmp_path / "data", tokenizer, FolderBlobSource(tmp_path / "inbox"))
    yield built
    built.close()


def ingest(services: Services, path: str, data: bytes) -> Job:
    blobs = services.blobs
    assert isinstance(blobs, FolderBlobSource | InMemoryBlobSource)
    info = blobs.put(path, data)
    registration = register_version(services, DocumentRef(blobs.container, path), info.version)
    run_document(services, StageRequest(registration.job.doc_id, info.version.etag))
    job = services.jobs.get(registration.job.doc_id)
    assert job is not None
    return job


def embedded_inputs(services: Services) -> int:
    assert isinstance(services.embedder, CountingEmbedder)
    return services.embedder.inputs


@pytest.mark.corpus
def test_editing_a_novel_reembeds_a_few_chunks_and_leaves_no_stale_ones(corpus: Path, services: Services) -> None:
    """War and Peace (3 MB): unchanged, a paragraph inserted near the start, one edited mid-book."""
    # Given the novel, ingested once
    paragraphs = (corpus / "book-war-and-peace-1225p.txt").read_text(encoding="utf-8-sig").split("\n\n")
    first = ingest(services, "books/war and peace.txt", "\n\n".join(paragraphs).encode())
    assert first.status is JobStatus.INDEXED
    assert first.chunk_count > 1000
    assert 0 < embedded_inputs(services) <= first.chunk_count  # repeated passages are embedded once

    # When it is uploaded again unchanged, then with an inserted paragraph, then with an edit
    before = embedded_inputs(services)
    same = ingest(services, "books/war and peace.txt", "\n\n".join(paragraphs).encode())
    unchanged_cost = embedded_inputs(services) - before
    paragraphs.insert(12, "A paragraph that no edition of this novel has ever contained, inserted here.")
    before = embedded_inputs(services)
    inserted = ingest(services, "books/war and peace.txt", "\n\n".join(paragraphs).encode())
    insert_cost = embedded_inputs(services) - before
    middle = len(paragraphs) // 2
    paragraphs[middle] = paragraphs[middle] + " (An editor's note added in the middle of the book.)"
    before = embedded_inputs(services)
    edited = ingest(services, "books/war and peace.txt", "\n\n".join(paragraphs).encode())
    edit_cost = embedded_inputs(services) - before

    # Then nothing was embedded twice, only a few chunks each time, and the index holds exactly the last version
    assert (same.status, inserted.status, edited.status) == (JobStatus.INDEXED,) * 3
    assert unchanged_cost == 0
    assert 1 <= insert_cost <= 5
    assert 1 <= edit_cost <= 5
    held = list(services.index.ids_for_doc(edited.doc_id))
    assert len(held) == edited.chunk_count
    assert {version for _, version in held} == {edited.version.content_hash}


@pytest.mark.parametrize(
    "name",
    [
        "reports/Q3 summary (final).txt",
        "unicode/Überblick – 日本語 – ملف.txt",
        "../../escape/attempt.txt",
        "/leading/slash.txt",
        "a/./b/../c.txt",
        "deep/" + "x" * 995 + ".txt",
    ],
)
def test_hostile_blob_names_are_ingested_without_touching_anything_outside_the_data_root(
    tmp_path: Path, tokenizer: Tokenizer, name: str
) -> None:
    """Names reach only the job document and the index: every file written is under the data root, named by hash."""
    # Given a blob store that accepts any name, and a sentinel beside the data root
    sentinel = tmp_path / "escape" / "attempt.txt"
    data_root = tmp_path / "sandbox" / "data"
    services = embedded(data_root, tokenizer, InMemoryBlobSource())
    try:
        # When a file with that name is ingested
        job = ingest(services, name, b"Quarterly figures: revenue grew by nine percent.")
    finally:
        services.close()

    # Then it is indexed under its exact name, and nothing outside the data root was written
    assert job.status is JobStatus.INDEXED
    assert job.path == name
    assert not sentinel.exists()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written
    assert all(p.is_relative_to(data_root) for p in written)
    artifact_names = [p.relative_to(data_root / "artifacts").parts for p in written if "artifacts" in p.parts]
    assert all(all(ch.isalnum() or ch in "-_.=" for part in parts for ch in part) for parts in artifact_names)


def test_a_killed_parse_child_ends_its_file_and_the_next_proceeds(
    corpus: Path, tmp_path: Path, tokenizer: Tokenizer
) -> None:
    """A parse past its time limit is killed, the file ends parse_timeout, and the next parse works."""
    inbox = FolderBlobSource(tmp_path / "inbox")
    # Given a 619-page PDF (about a second to parse here) and a limit far below that
    hurried = embedded(tmp_path / "data", tokenizer, inbox, ParseLimits(timeout_s=0.05))
    try:
        slow = ingest(hurried, "big.pdf", (corpus / "pdf_DA-619p.pdf").read_bytes())
    finally:
        hurried.close()
    # When the next file is parsed with the default limit, by the same fork server
    patient = embedded(tmp_path / "data", tokenizer, inbox)
    try:
        after = ingest(patient, "small.pdf", (corpus / "pdf_embedded-link.pdf").read_bytes())
    finally:
        patient.close()
    # Then the slow file has its reason and the next one is indexed
    assert (slow.status, slow.last_error and slow.last_error.code) == (JobStatus.NEEDS_REVIEW, "parse_timeout")
    assert after.status is JobStatus.INDEXED


def test_a_folder_with_broken_entries_still_ingests_every_real_file(tmp_path: Path, tokenizer: Tokenizer) -> None:
    """A looping symlink and a non-UTF-8 file name in the inbox: the good file is indexed, the odd name
    ends invalid_name with its job stored, and nothing aborts the run."""
    inbox = FolderBlobSource(tmp_path / "inbox")
    inbox.put("good.txt", b"A perfectly ordinary file.")
    os.symlink("loop", inbox.root / "loop")
    with open(os.path.join(os.fsencode(inbox.root), b"caf\xe9.txt"), "wb") as odd:
        odd.write(b"Latin-1 name, ordinary content.")
    settings = dataclasses.replace(Settings.from_env({}), inbox_dir=inbox.root, data_dir=tmp_path / "data")
    jobs = ingest_folder(settings)
    outcomes = {job.path: (job.status, job.last_error and job.last_error.code) for job in jobs}
    assert outcomes == {
        "good.txt": (JobStatus.INDEXED, None),
        "caf\udce9.txt": (JobStatus.NEEDS_REVIEW, "invalid_name"),
    }
    # And deleting both while no host runs, the next run marks them deleted (the odd name too)
    inbox.delete("good.txt")
    os.remove(os.path.join(os.fsencode(inbox.root), b"caf\xe9.txt"))
    services = build_services(settings)
    try:
        assert ingest_folder(settings) == []
        statuses = {job.path: job.status for job in services.jobs.list().jobs}
    finally:
        services.close()
    assert statuses == {"good.txt": JobStatus.DELETED, "caf\udce9.txt": JobStatus.DELETED}
