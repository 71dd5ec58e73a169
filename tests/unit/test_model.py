"""The domain model: identities, versions, chunk ids, payload round trips and the job state machine."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from ingestion.errors import InvalidTransition
from ingestion.model import (
    TRANSITIONS,
    Block,
    Chunk,
    DocumentRef,
    DocumentVersion,
    ErrorInfo,
    Job,
    JobStatus,
    Page,
    ParsedDocument,
    chunk_ids_digest,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
S = JobStatus

# The state machine written out by hand: the test fails if model.TRANSITIONS drifts from it.
EXPECTED = {
    S.QUEUED: {
        S.FETCHING,
        S.PARSING,
        S.CHUNKING,
        S.EMBEDDING,
        S.INDEXING,
        S.SKIPPED,
        S.NEEDS_REVIEW,
        S.RETRY_LATER,
        S.DELETED,
    },
    S.FETCHING: {
        S.PARSING,
        S.CHUNKING,
        S.EMBEDDING,
        S.INDEXING,
        S.SKIPPED,
        S.NEEDS_REVIEW,
        S.RETRY_LATER,
        S.QUEUED,
        S.DELETED,
    },
    S.PARSING: {S.CHUNKING, S.EMBEDDING, S.INDEXING, S.SKIPPED, S.NEEDS_REVIEW, S.RETRY_LATER, S.QUEUED, S.DELETED},
    S.CHUNKING: {S.EMBEDDING, S.INDEXING, S.SKIPPED, S.NEEDS_REVIEW, S.RETRY_LATER, S.QUEUED, S.DELETED},
    S.EMBEDDING: {S.INDEXING, S.SKIPPED, S.NEEDS_REVIEW, S.RETRY_LATER, S.QUEUED, S.DELETED},
    S.INDEXING: {S.INDEXED, S.SKIPPED, S.NEEDS_REVIEW, S.RETRY_LATER, S.QUEUED, S.DELETED},
    S.INDEXED: {S.INDEXING, S.QUEUED, S.DELETED},
    S.SKIPPED: {S.QUEUED, S.DELETED},
    S.RETRY_LATER: {S.NEEDS_REVIEW, S.QUEUED, S.DELETED},
    S.NEEDS_REVIEW: {S.QUEUED, S.DELETED},
    S.DELETED: {S.QUEUED},
}


def make_job(status: JobStatus = S.QUEUED) -> Job:
    version = DocumentVersion(etag='"e1"', size=10, last_modified=T0)
    return Job("d1", "uploads", "a.txt", version, status, created_at=T0, updated_at=T0)


def test_transition_table_matches_the_design() -> None:
    """TRANSITIONS allows exactly the hand-written table, for every status."""
    assert dict(TRANSITIONS) == EXPECTED


@pytest.mark.parametrize(("source", "target"), list(itertools.product(JobStatus, JobStatus)))
def test_every_pair_is_allowed_or_refused_as_the_table_says(source: JobStatus, target: JobStatus) -> None:
    """Job.transition accepts exactly the table's pairs (and staying put), and refuses all others."""
    job = make_job(source)
    if target is source or target in EXPECTED[source]:
        moved = job.transition(target, T0 + timedelta(seconds=1), "why")
        assert moved.status is target
        assert moved.trail[-1].status is target
        assert moved.trail[-1].note == "why"
    else:
        with pytest.raises(InvalidTransition):
            job.transition(target, T0)


def test_every_status_can_reach_a_terminal_one_and_come_back() -> None:
    """No dead ends: from any status a terminal one is reachable, and any job can be re-queued."""
    for status in JobStatus:
        seen, frontier = {status}, [status]
        while frontier:
            for target in TRANSITIONS[frontier.pop()]:
                if target not in seen:
                    seen.add(target)
                    frontier.append(target)
        assert seen & {S.INDEXED, S.SKIPPED, S.NEEDS_REVIEW, S.DELETED}
        assert S.QUEUED in seen


def test_indexed_only_after_indexing() -> None:
    """Nothing becomes indexed without passing through indexing (persist)."""
    assert [s for s in JobStatus if S.INDEXED in TRANSITIONS[s]] == [S.INDEXING]


def test_trail_is_bounded() -> None:
    """The trail keeps the most recent transitions only, so job documents stay small."""
    job = make_job()
    for i in range(100):
        job = job.transition(S.FETCHING if i % 2 == 0 else S.QUEUED, T0 + timedelta(seconds=i))
    assert len(job.trail) == 30
    assert job.trail[-1].at == T0 + timedelta(seconds=99)


def test_doc_id_is_a_stable_hash_of_container_and_path() -> None:
    """Ids are hashes: same input same id, different container or path a different id, always hex."""
    ref = DocumentRef("uploads", "../../etc/passwd")
    assert ref.doc_id == DocumentRef("uploads", "../../etc/passwd").doc_id
    assert ref.doc_id != DocumentRef("other", "../../etc/passwd").doc_id
    assert ref.doc_id != DocumentRef("uploads", "../../etc/passwd ").doc_id
    assert all(c in "0123456789abcdef" for c in ref.doc_id)
    long_ref = DocumentRef("uploads", "/" + "é" * 999)
    assert len(long_ref.doc_id) == 32


def test_newer_version_uses_sequencer_then_last_modified() -> None:
    """Sequencers decide when both have one; otherwise last_modified; the same ETag is never newer."""
    old = DocumentVersion('"a"', 1, T0, sequencer="0000000000000000000000000000100000000000000000aa")
    new = DocumentVersion(
        '"b"', 1, T0 - timedelta(hours=1), sequencer="0000000000000000000000000000200000000000000000aa"
    )
    assert new.is_newer_than(old)
    assert not old.is_newer_than(new)
    later = DocumentVersion('"c"', 1, T0 + timedelta(seconds=1))
    assert later.is_newer_than(old)
    assert later.is_newer_than(DocumentVersion('"d"', 1, T0)) is True
    assert DocumentVersion('"d"', 1, T0).is_newer_than(later) is False
    assert not DocumentVersion('"a"', 2, T0 + timedelta(days=1)).is_newer_than(old)


def test_versions_written_in_the_same_tick_are_undecidable() -> None:
    """Equal last_modified and no sequencer: neither is newer, and the answer says so (None)."""
    first = DocumentVersion('"a"', 1, T0)
    second = DocumentVersion('"b"', 1, T0)
    assert first.is_newer_than(second) is None
    assert second.is_newer_than(first) is None


def test_chunk_id_depends_on_doc_ordinal_and_text_only() -> None:
    """Chunk ids are deterministic; whitespace changes do not change the text hash."""
    a = Chunk("d", 0, "Hello  world", "v1", 1, 1, (), 2)
    assert a.id == Chunk("d", 0, "Hello world\n", "v2", 3, 4, ("h",), 9).id
    assert a.id != Chunk("d", 1, "Hello world", "v1", 1, 1, (), 2).id
    assert a.id != Chunk("e", 0, "Hello world", "v1", 1, 1, (), 2).id
    assert a.content_hash == Chunk("x", 5, " Hello world ", "v", None, None, (), 2).content_hash


def test_payload_round_trips() -> None:
    """Jobs, parsed documents and chunks survive to_payload/from_payload unchanged."""
    job = make_job().transition(S.FETCHING, T0, "go")
    job = job.transition(S.NEEDS_REVIEW, T0, "bad", last_error=ErrorInfo("parse", "permanent", "corrupt", "broken", T0))
    assert Job.from_payload(job.to_payload(), etag="x") == job.__class__(**{**job.__dict__, "etag": "x"})
    doc = ParsedDocument("text/html", (Page(1, (Block("Title", 1), Block("body"))), Page(None, ())), "T")
    assert ParsedDocument.from_payload(doc.to_payload()) == doc
    chunk = Chunk("d", 3, "text", "v", 2, 5, ("A", "B"), 1)
    assert Chunk.from_payload(chunk.to_payload()) == chunk


def test_chunk_ids_digest_ignores_order() -> None:
    """The digest of a chunk-id set does not depend on listing order."""
    assert chunk_ids_digest(["b", "a"]) == chunk_ids_digest(["a", "b"])
    assert chunk_ids_digest(["a"]) != chunk_ids_digest(["a", "b"])
