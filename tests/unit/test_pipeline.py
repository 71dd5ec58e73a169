"""The stages end to end over fakes: outcomes, idempotence, versions, retries and vector reuse."""

from __future__ import annotations

import dataclasses

import pytest

from ingestion.errors import PermanentError, ReasonCode, Superseded, TransientError
from ingestion.jobs import register_version
from ingestion.model import DocumentRef, JobStatus
from ingestion.pipeline import run_document
from ingestion.retry import RetryPolicy
from ingestion.services import Services
from ingestion.stages import StageRequest, chunk_document, embed_chunks, fetch_blob, parse_document, persist_chunks
from tests.unit.conftest import FakeClock
from tests.unit.pipeline_helpers import blobs, embedder, index, indexed_versions, ingest, long_text, upload


def test_a_text_file_becomes_searchable(services: Services) -> None:
    """A plain text file ends indexed, with its chunks in the index and its journey on the trail."""
    job = ingest(services, "notes/hello world.txt", b"The lighthouse keeper counts ships every night.\n")
    assert job.status is JobStatus.INDEXED
    assert job.chunk_count == services.index.count_for_doc(job.doc_id) == 1
    assert [entry.status for entry in job.trail] == [
        JobStatus.QUEUED, JobStatus.FETCHING, JobStatus.PARSING, JobStatus.CHUNKING,
        JobStatus.EMBEDDING, JobStatus.INDEXING, JobStatus.INDEXED,
    ]  # fmt: skip
    assert indexed_versions(services, job.doc_id) == {job.version.content_hash}


def test_stages_are_checkpointed_and_rerunning_them_does_no_work(services: Services) -> None:
    """Running every stage a second time reads no blob, embeds nothing and writes the same chunks."""
    request = upload(services, "a.md", "\n\n".join(long_text(40)).encode())
    for stage in (fetch_blob, parse_document, chunk_document, embed_chunks, persist_chunks):
        stage(services, request)
    reads, calls, ids = (
        len(blobs(services).reads),
        embedder(services).calls,
        sorted(services.index.ids_for_doc(request.doc_id)),
    )
    for stage in (fetch_blob, parse_document, chunk_document, embed_chunks, persist_chunks):
        stage(services, request)
    assert (len(blobs(services).reads), embedder(services).calls) == (reads, calls)
    assert sorted(services.index.ids_for_doc(request.doc_id)) == ids


def test_reingesting_an_unchanged_file_makes_no_embedding_calls(services: Services) -> None:
    """Overwriting a file with the same bytes (a new ETag) re-indexes it without embedding anything."""
    body = "\n\n".join(long_text(200)).encode()
    first = ingest(services, "book.txt", body)
    calls, ids = embedder(services).calls, sorted(services.index.ids_for_doc(first.doc_id))
    second = ingest(services, "book.txt", body)
    assert second.version.etag != first.version.etag
    assert second.status is JobStatus.INDEXED
    assert embedder(services).calls == calls
    assert sorted(services.index.ids_for_doc(first.doc_id)) == ids


@pytest.mark.parametrize("edit", ["insert near the start", "edit in the middle"])
def test_an_edit_reembeds_few_chunks_and_leaves_nothing_stale(services: Services, edit: str) -> None:
    """A paragraph inserted near the start, or edited mid-file, re-embeds a few chunks; old chunks vanish."""
    paragraphs = long_text(1500)
    first = ingest(services, "long.txt", "\n\n".join(paragraphs).encode())
    assert first.chunk_count > 100
    if edit == "insert near the start":
        paragraphs.insert(4, "A new paragraph about the ferry timetable, added in this revision.")
    else:
        paragraphs[750] += " Edited: the orchard closes at dusk."
    inputs_before = embedder(services).inputs
    second = ingest(services, "long.txt", "\n\n".join(paragraphs).encode())
    assert second.status is JobStatus.INDEXED
    assert 1 <= embedder(services).inputs - inputs_before <= 5
    assert services.index.count_for_doc(second.doc_id) == second.chunk_count
    assert indexed_versions(services, second.doc_id) == {second.version.content_hash}


def test_empty_and_unsupported_files_end_with_reasons(services: Services) -> None:
    """An empty file is skipped; an image needs review as unsupported; neither is retried."""
    empty = ingest(services, "empty.txt", b"")
    png = ingest(services, "photo.txt", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    assert (empty.status, empty.last_error and empty.last_error.code) == (JobStatus.SKIPPED, "empty")
    assert (png.status, png.last_error and png.last_error.code) == (JobStatus.NEEDS_REVIEW, "unsupported_type")
    assert embedder(services).calls == 0


def test_a_file_over_the_size_limit_stops_while_streaming(services: Services) -> None:
    """A file larger than the limit ends too_large, without the whole file being stored."""
    job = ingest(services, "big.txt", b"word " * 300_000)
    assert (job.status, job.last_error and job.last_error.code) == (JobStatus.NEEDS_REVIEW, "too_large")


def test_transient_read_failures_are_retried_with_backoff(services: Services, clock: FakeClock) -> None:
    """Two transient read failures are retried (honouring retry_after); the file still ends indexed."""
    blobs(services).fail_next(2, TransientError("connection reset", retry_after=7))
    job = ingest(services, "a.txt", b"Retry me until it works.")
    assert job.status is JobStatus.INDEXED
    assert clock.slept == [7, 7]
    assert job.attempts == 0 and job.last_error is None


def test_transient_failures_that_outlast_retries_wait_in_retry_later(services: Services, clock: FakeClock) -> None:
    """When retries run out the job goes to retry_later with a time, never to a terminal state."""
    index(services).fail_next_request(TransientError("service unavailable"), times=10)
    job = ingest(services, "a.txt", b"The index is down today.")
    assert job.status is JobStatus.RETRY_LATER
    assert not job.status.is_terminal
    assert job.retry_at is not None and job.retry_at > clock.now
    assert job.last_error is not None and (job.last_error.stage, job.last_error.kind) == ("persist_chunks", "transient")
    assert job.attempts == RetryPolicy().attempts


def test_partial_index_failures_retry_only_the_failed_keys(services: Services) -> None:
    """A 503 for some chunks retries just those chunks; the rest are not sent again."""
    fake = index(services)
    fake.fail_keys(503, lambda key: key.endswith(("0", "1", "2", "3")), times=1)
    job = ingest(services, "long.txt", "\n\n".join(long_text(300)).encode())
    assert job.status is JobStatus.INDEXED
    first, retry = fake.upserts[0], fake.upserts[1]
    assert set(retry) < set(first)
    assert all(key.endswith(("0", "1", "2", "3")) for key in retry)


def test_a_rejected_chunk_ends_in_review(services: Services) -> None:
    """A 400 for a chunk is permanent: the job needs review with reason index_rejected."""
    index(services).fail_keys(400, lambda key: True, times=None)
    job = ingest(services, "a.txt", b"Nobody will index this.")
    assert (job.status, job.last_error and job.last_error.code) == (JobStatus.NEEDS_REVIEW, "index_rejected")


def test_index_batches_respect_the_document_limit(services: Services) -> None:
    """Upsert requests never carry more documents than the configured batch size."""
    settings = dataclasses.replace(services.settings, index=dataclasses.replace(services.settings.index, batch_docs=10))
    services = dataclasses.replace(services, settings=settings)
    job = ingest(services, "long.txt", "\n\n".join(long_text(300)).encode())
    assert job.chunk_count > 20
    assert max(len(batch) for batch in index(services).upserts) <= 10
    assert sum(len(batch) for batch in index(services).upserts) == job.chunk_count


def test_an_interrupted_embed_resumes_without_paying_twice(services: Services) -> None:
    """Batches finished before a crash are kept: the rerun embeds only what was left."""
    settings = dataclasses.replace(
        services.settings, embedding=dataclasses.replace(services.settings.embedding, batch_inputs=8)
    )
    services = dataclasses.replace(services, settings=settings)
    request = upload(services, "long.txt", "\n\n".join(long_text(300)).encode())
    for stage in (fetch_blob, parse_document, chunk_document):
        stage(services, request)
    counting = embedder(services)
    original = counting.embed
    calls = 0

    def crash_on_third(texts: list[str]) -> object:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise TransientError("worker lost")
        return original(texts)

    object.__setattr__(counting, "embed", crash_on_third)
    with pytest.raises(TransientError):
        embed_chunks(services, request)
    object.__setattr__(counting, "embed", original)
    result = embed_chunks(services, request)
    # Two batches of 8 finished before the crash; every distinct text was embedded exactly once.
    assert counting.inputs == result.chunks
    assert result.embedded == result.chunks - 16


def test_an_old_run_cannot_write_after_a_new_version_arrives(services: Services) -> None:
    """A run for version 1 that resumes after version 2 registered stops before touching the index."""
    old = upload(services, "a.txt", b"Version one of the file.")
    for stage in (fetch_blob, parse_document, chunk_document, embed_chunks):
        stage(services, old)
    new = upload(services, "a.txt", b"Version two of the file, rewritten.")
    with pytest.raises(Superseded):
        persist_chunks(services, old)
    assert services.index.count_for_doc(old.doc_id) == 0
    assert run_document(services, old) is None
    run_document(services, new)
    job = services.jobs.get(new.doc_id)
    assert job is not None and job.status is JobStatus.INDEXED
    assert indexed_versions(services, new.doc_id) == {job.version.content_hash}


def test_a_blob_overwritten_before_fetch_supersedes_the_run(services: Services) -> None:
    """If the blob changed after its event, fetch refuses the stale version instead of mixing them."""
    request = upload(services, "a.txt", b"first")
    blobs(services).put("a.txt", b"second")  # no registration: the event is still on its way
    assert run_document(services, request) is None
    job = services.jobs.get(request.doc_id)
    assert job is not None and job.status is JobStatus.FETCHING


def test_registration_is_idempotent_and_ignores_older_versions(services: Services) -> None:
    """The same event twice starts nothing new once done; an older version never replaces a newer one."""
    old_info = blobs(services).put("a.txt", b"old")
    new_info = blobs(services).put("a.txt", b"new")
    ref = DocumentRef("uploads", "a.txt")
    assert register_version(services, ref, new_info.version).start
    older = register_version(services, ref, old_info.version)
    assert (older.start, older.reason) == (False, "not the blob's current version")
    run_document(services, StageRequest(ref.doc_id, new_info.version.etag))
    again = register_version(services, ref, new_info.version)
    assert (again.start, again.job.status) == (False, JobStatus.INDEXED)


def test_a_vanished_blob_ends_deleted_with_not_found(services: Services) -> None:
    """A blob deleted before fetch ends deleted, with not_found as the recorded reason: its delete
    event may have been handled before this version was registered, and nothing else would end it."""
    request = upload(services, "gone.txt", b"soon gone")
    blobs(services).delete("gone.txt")
    run_document(services, request)
    job = services.jobs.get(request.doc_id)
    assert job is not None and (job.status, job.last_error and job.last_error.code) == (
        JobStatus.DELETED,
        "not_found",
    )


def test_permanent_errors_are_not_retried(services: Services, clock: FakeClock) -> None:
    """A permanent failure is recorded at once, without sleeping or a second attempt."""
    blobs(services).fail_next(5, PermanentError(ReasonCode.CORRUPT, "unreadable"))
    job = ingest(services, "a.txt", b"text")
    assert job.status is JobStatus.NEEDS_REVIEW
    assert clock.slept == []
    assert len(blobs(services).reads) == 1
