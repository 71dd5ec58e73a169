"""Races, crashes and slow services: each test replays a failure the pipeline must survive."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ingestion.adapters.local_embedder import HashingEmbedder
from ingestion.bootstrap import build_services
from ingestion.config import ChunkingSettings, Settings, SettingsError
from ingestion.errors import Superseded, TransientError
from ingestion.jobs import register_version
from ingestion.model import DocumentRef, IndexRecord, JobStatus
from ingestion.pipeline import run_document
from ingestion.ports import IndexResult, SearchMode, SearchQuery
from ingestion.retry import RetryPolicy
from ingestion.services import Services
from ingestion.stages import StageRequest, chunk_document, embed_chunks, fetch_blob, parse_document, persist_chunks
from ingestion.tokens import Tokenizer
from tests.fakes import CountingEmbedder, InMemoryJobStore, InMemorySearchIndex
from tests.unit.conftest import FakeClock
from tests.unit.pipeline_helpers import blobs, index, indexed_versions, ingest, upload


class InterruptingIndex(InMemorySearchIndex):
    """An index that runs ``interrupt`` once, just before the first listing or upsert it serves."""

    def __init__(self, dimensions: int, on: str) -> None:
        super().__init__(dimensions)
        self.on = on
        self.interrupt: Callable[[], None] | None = None

    def _maybe_interrupt(self, operation: str) -> None:
        if operation == self.on and self.interrupt is not None:
            interrupt, self.interrupt = self.interrupt, None
            interrupt()

    def ids_for_doc(self, doc_id: str) -> Iterator[tuple[str, str]]:
        self._maybe_interrupt("ids_for_doc")
        return super().ids_for_doc(doc_id)

    def upsert(self, records: Sequence[IndexRecord]) -> list[IndexResult]:
        self._maybe_interrupt("upsert")
        return super().upsert(records)


def prepare_until_persist(services: Services, path: str, data: bytes) -> StageRequest:
    request = upload(services, path, data)
    for stage in (fetch_blob, parse_document, chunk_document, embed_chunks):
        stage(services, request)
    return request


def assert_index_holds_exactly_the_jobs_version(services: Services, doc_id: str) -> None:
    job = services.jobs.get(doc_id)
    assert job is not None
    assert job.status is JobStatus.INDEXED
    assert services.index.count_for_doc(doc_id) == job.chunk_count
    assert indexed_versions(services, doc_id) == {job.version.content_hash}


@pytest.mark.parametrize("moment", ["ids_for_doc", "upsert"])
def test_a_run_overtaken_while_persisting_leaves_the_new_version_intact(services: Services, moment: str) -> None:
    """Version 2 finishes while version 1 persists: v1 stops, and the index holds exactly v2's chunks."""
    # Given version 1 ready to persist, and an index that lets version 2 run in between
    interrupting = InterruptingIndex(64, on=moment)
    services = dataclasses.replace(services, index=interrupting)
    old = prepare_until_persist(services, "a.txt", b"Version one of the file. Alpha beta gamma.")
    newer: list[StageRequest] = []

    def run_version_two() -> None:
        newer.append(upload(services, "a.txt", b"Version two, entirely rewritten. Delta epsilon."))
        run_document(services, newer[0])

    interrupting.interrupt = run_version_two
    # When version 1's persist resumes after version 2 is indexed
    with pytest.raises(Superseded):
        persist_chunks(services, old)
    # Then version 2's chunks, and only those, are in the index
    assert_index_holds_exactly_the_jobs_version(services, old.doc_id)


def test_reverting_after_a_half_persisted_version_restores_the_old_text(services: Services) -> None:
    """A indexed, B persisted but never finalized, then A uploaded again: the index holds A, not B."""
    original = b"Original text about lighthouses and ships."
    ingest(services, "a.txt", original)
    replacement = prepare_until_persist(services, "a.txt", b"Replacement text about glaciers and orchards.")
    persist_chunks(services, replacement)  # the worker dies before recording success
    job = ingest(services, "a.txt", original)
    assert_index_holds_exactly_the_jobs_version(services, job.doc_id)
    hits = services.index.search(SearchQuery(text="lighthouses", mode=SearchMode.KEYWORD))
    assert [hit.doc_id for hit in hits] == [job.doc_id]


def test_an_unchanged_reupload_writes_nothing_to_the_index(services: Services) -> None:
    """The same bytes under a new ETag: the index already holds them, so persist only lists."""
    first = ingest(services, "a.txt", b"Stable content that never changes.")
    requests = len(index(services).upserts)
    second = ingest(services, "a.txt", b"Stable content that never changes.")
    assert second.version.etag != first.version.etag
    assert second.status is JobStatus.INDEXED
    assert len(index(services).upserts) == requests


@pytest.mark.parametrize(
    ("replacement", "status", "reason"),
    [
        (b"", JobStatus.SKIPPED, "empty"),
        (b"\x89PNG\r\n\x1a\n" + bytes(300), JobStatus.NEEDS_REVIEW, "unsupported_type"),
    ],
)
def test_a_file_overwritten_with_nothing_usable_leaves_the_index(
    services: Services, replacement: bytes, status: JobStatus, reason: str
) -> None:
    """An indexed file replaced by an empty or unsupported one: its old chunks are removed."""
    first = ingest(services, "a.txt", b"Text that will be replaced by nothing useful.")
    assert services.index.count_for_doc(first.doc_id) == 1
    job = ingest(services, "a.txt", replacement)
    assert (job.status, job.last_error and job.last_error.code) == (status, reason)
    assert services.index.count_for_doc(job.doc_id) == 0
    assert (job.indexed_hash, job.chunk_count) == (None, 0)


def test_writes_within_one_clock_tick_are_ordered_by_the_blobs_current_etag(services: Services) -> None:
    """Two versions with the same last_modified: a late event for the older one does not win."""
    tick = datetime(2026, 1, 1, tzinfo=UTC)
    old = blobs(services).put("a.txt", b"old text", last_modified=tick)
    new = blobs(services).put("a.txt", b"new text", last_modified=tick)
    ref = DocumentRef("uploads", "a.txt")
    assert register_version(services, ref, new.version).start
    late = register_version(services, ref, old.version)
    assert (late.start, late.job.version.etag) == (False, new.version.etag)
    run_document(services, StageRequest(ref.doc_id, new.version.etag))
    assert_index_holds_exactly_the_jobs_version(services, ref.doc_id)


def test_the_newer_of_two_same_tick_writes_wins_even_when_its_event_comes_second(services: Services) -> None:
    """Events in write order, same last_modified: the second (the blob's current ETag) replaces the first."""
    tick = datetime(2026, 1, 1, tzinfo=UTC)
    ref = DocumentRef("uploads", "a.txt")
    first = blobs(services).put("a.txt", b"first text", last_modified=tick)
    assert register_version(services, ref, first.version).start
    second = blobs(services).put("a.txt", b"second text", last_modified=tick)
    registration = register_version(services, ref, second.version)
    assert (registration.start, registration.job.version.etag) == (True, second.version.etag)


def test_a_job_store_outage_strands_nothing(services: Services) -> None:
    """The job store fails while a stage starts and again while the failure is recorded: no exception
    escapes, the job stays in progress, and the next registration of its version finishes it."""
    request = upload(services, "a.txt", b"Some text here.")
    jobs = services.jobs
    assert isinstance(jobs, InMemoryJobStore)
    jobs.fail_next(2, TransientError("job store 503"))
    assert run_document(services, request, RetryPolicy(attempts=1)) is None
    job = services.jobs.get(request.doc_id)
    assert job is not None and job.status.in_progress
    again = register_version(services, DocumentRef("uploads", "a.txt"), job.version)
    assert again.start
    run_document(services, request)
    assert_index_holds_exactly_the_jobs_version(services, request.doc_id)


def test_retry_later_is_redriven_when_due_and_gives_up_after_the_limit(services: Services, clock: FakeClock) -> None:
    """A job in retry_later runs again once its time has come; after max_redrives it needs review."""
    # Given a job that ended in retry_later because the index was down
    index(services).fail_next_request(TransientError("index down"), times=4)
    job = ingest(services, "a.txt", b"The index is down today.")
    assert job.status is JobStatus.RETRY_LATER
    assert job.retry_at is not None
    ref = DocumentRef("uploads", "a.txt")
    # When it is registered again before its time, nothing happens; after it, it is re-driven
    assert not register_version(services, ref, job.version).start
    clock.now = job.retry_at
    redrive = register_version(services, ref, job.version)
    assert (redrive.start, redrive.job.redrives) == (True, 1)
    run_document(services, StageRequest(job.doc_id, job.version.etag))
    assert_index_holds_exactly_the_jobs_version(services, job.doc_id)

    # And a job that keeps failing stops being re-driven after the limit, with its last reason
    index(services).fail_next_request(TransientError("index down for good"), times=1000)
    stuck = ingest(services, "b.txt", b"This one never gets in.")
    ref = DocumentRef("uploads", "b.txt")
    for _ in range(services.settings.max_redrives):
        clock.now += timedelta(hours=1)
        assert register_version(services, ref, stuck.version).start
        run_document(services, StageRequest(stuck.doc_id, stuck.version.etag))
    clock.now += timedelta(hours=1)
    final = register_version(services, ref, stuck.version)
    assert (final.start, final.job.status) == (False, JobStatus.NEEDS_REVIEW)
    assert final.job.last_error is not None and final.job.last_error.message == "index down for good"


def test_a_new_embedding_model_recomputes_instead_of_looping(services: Services, tokenizer: Tokenizer) -> None:
    """After a switch to another model (or dimensions), checkpoints of the old one are not reused."""
    request = prepare_until_persist(services, "a.txt", b"Some text that gets embedded.")
    switched = dataclasses.replace(
        services, embedder=CountingEmbedder(HashingEmbedder(48, tokenizer)), index=InMemorySearchIndex(48)
    )
    job = run_document(switched, request)
    assert job is not None and job.status is JobStatus.INDEXED
    assert isinstance(switched.embedder, CountingEmbedder)
    assert switched.embedder.inputs == 1


def test_a_long_retry_after_waits_in_retry_later_not_in_a_worker(services: Services, clock: FakeClock) -> None:
    """429 with retry-after of an hour: no hour-long sleep; the job waits in retry_later at least that long."""
    request = upload(services, "a.txt", b"Throttled.")
    embedder = services.embedder
    assert isinstance(embedder, CountingEmbedder)
    embedder.fail_next(4, TransientError("429 Too Many Requests", retry_after=3600))
    started = clock.now
    job = run_document(services, request)
    assert job is not None and job.status is JobStatus.RETRY_LATER
    assert clock.slept == []
    assert job.retry_at is not None and job.retry_at >= started + timedelta(seconds=3600)


def test_a_chunk_budget_over_the_models_input_limit_stops_start_up(tmp_path: Path) -> None:
    """INGEST_CHUNK_TOKENS above what the embedding model accepts is a settings error, not a file's."""
    settings = dataclasses.replace(
        Settings.from_env({}),
        data_dir=tmp_path,
        tiktoken_cache_dir=tmp_path / "tiktoken",
        chunking=ChunkingSettings(target_tokens=9000, overlap_tokens=0),
    )
    with pytest.raises(SettingsError, match="INGEST_CHUNK_TOKENS"):
        build_services(settings)
