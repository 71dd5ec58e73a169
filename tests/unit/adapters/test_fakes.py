"""The fakes' fault injection and bookkeeping (their port semantics are the contract tests' job)."""

from __future__ import annotations

import pytest

from ingestion.adapters.local_embedder import HashingEmbedder
from ingestion.errors import ConcurrencyError, PermanentError, ReasonCode, TransientError
from ingestion.tokens import Tokenizer
from tests.fakes import (
    CountingEmbedder,
    InMemoryArtifactStore,
    InMemoryBlobSource,
    InMemoryJobStore,
    InMemorySearchIndex,
)
from tests.integration.builders import DIMENSIONS, make_job, make_record


def test_blob_fail_next_breaks_exactly_n_reads() -> None:
    """fail_next(2, error) makes the next two reads raise it; the third succeeds."""
    blobs = InMemoryBlobSource()
    etag = blobs.put("a.txt", b"hello").version.etag
    blobs.fail_next(2, TransientError("503"))
    for _ in range(2):
        with pytest.raises(TransientError):
            b"".join(blobs.read("a.txt", etag))
    assert b"".join(blobs.read("a.txt", etag)) == b"hello"
    assert blobs.reads == ["a.txt"] * 3


def test_blob_failure_can_strike_mid_stream() -> None:
    """after_chunks=2 lets two chunks through before the error: a torn download."""
    blobs = InMemoryBlobSource()
    etag = blobs.put("a.txt", b"abcdef").version.etag
    blobs.fail_next(1, TransientError("connection reset"), after_chunks=2)
    received: list[bytes] = []
    with pytest.raises(TransientError):
        received.extend(blobs.read("a.txt", etag, chunk_size=2))
    assert received == [b"ab", b"cd"]


def test_blob_last_modified_increases_with_every_put() -> None:
    """Writes without an explicit time get strictly increasing last_modified values."""
    blobs = InMemoryBlobSource()
    times = [blobs.put("a.txt", b"x").version.last_modified for _ in range(50)]
    assert times == sorted(set(times))


def test_job_store_fail_next_breaks_writes_only() -> None:
    """fail_next makes create()/replace() raise without writing; reads are unaffected."""
    jobs = InMemoryJobStore()
    jobs.fail_next(1, TransientError("throttled"))
    with pytest.raises(TransientError):
        jobs.create(make_job("doc-1"))
    assert jobs.get("doc-1") is None
    created = jobs.create(make_job("doc-1"))
    jobs.fail_next(1, ConcurrencyError("simulated race"))
    with pytest.raises(ConcurrencyError):
        jobs.replace(created)
    assert jobs.replace(created).etag != created.etag


def test_index_fail_keys_fails_chosen_keys_a_number_of_times() -> None:
    """fail_keys(503, keys, times=2) fails those keys twice, then lets them through; others pass."""
    index = InMemorySearchIndex(DIMENSIONS)
    records = [make_record("doc1", n, f"text {n}") for n in range(3)]
    index.fail_keys(503, [records[1].id], times=2)
    outcomes = [[(r.succeeded, r.status_code) for r in index.upsert(records)] for _ in range(3)]
    assert outcomes == [
        [(True, 201), (False, 503), (True, 201)],
        [(True, 200), (False, 503), (True, 200)],
        [(True, 200), (True, 201), (True, 200)],
    ]
    assert index.count_for_doc("doc1") == 3
    assert index.upserts == [[r.id for r in records]] * 3


def test_index_fail_keys_by_predicate_forever() -> None:
    """A predicate with times=None fails matching keys on every upsert (a permanent 400)."""
    index = InMemorySearchIndex(DIMENSIONS)
    record = make_record("doc1", 0, "text")
    index.fail_keys(400, lambda key: key == record.id, times=None)
    for _ in range(3):
        (result,) = index.upsert([record])
        assert (result.succeeded, result.status_code) == (False, 400)
    assert index.count_for_doc("doc1") == 0


def test_index_fail_next_request_fails_whole_calls() -> None:
    """fail_next_request makes the next call raise before doing anything."""
    index = InMemorySearchIndex(DIMENSIONS)
    index.fail_next_request(TransientError("503 service unavailable"), times=2)
    with pytest.raises(TransientError):
        index.upsert([make_record("doc1", 0, "text")])
    with pytest.raises(TransientError):
        index.count_for_doc("doc1")
    assert index.count_for_doc("doc1") == 0
    assert index.upserts == []


def test_counting_embedder_counts_successful_calls(tokenizer: Tokenizer) -> None:
    """calls, inputs, tokens and batch sizes add up over successful calls only."""
    embedder = CountingEmbedder(HashingEmbedder(16, tokenizer))
    first = embedder.embed(["a b", "c"])
    second = embedder.embed(["d e f"])
    assert (embedder.calls, embedder.inputs, embedder.batches) == (2, 3, [2, 1])
    assert embedder.tokens == first.prompt_tokens + second.prompt_tokens
    assert embedder.dimensions == 16
    assert embedder.model == "local-hashing-v1"


def test_counting_embedder_fail_next_and_inner_failures(tokenizer: Tokenizer) -> None:
    """Injected failures and the inner embedder's own errors count as failed calls."""
    embedder = CountingEmbedder(HashingEmbedder(16, tokenizer))
    embedder.fail_next(1, TransientError("429", retry_after=2.0))
    with pytest.raises(TransientError):
        embedder.embed(["a"])
    with pytest.raises(PermanentError) as caught:
        embedder.embed(["word " * 9000])
    assert caught.value.reason is ReasonCode.EMBED_REJECTED
    embedder.embed(["a"])
    assert (embedder.calls, embedder.failed_calls, embedder.inputs) == (1, 2, 1)


def test_artifact_store_counts_writes() -> None:
    """writes counts successful puts, so tests can prove a checkpoint was not rewritten."""
    artifacts = InMemoryArtifactStore()
    artifacts.put("a", b"1")
    artifacts.put_stream("b", iter([b"2"]))
    assert artifacts.writes == 2
