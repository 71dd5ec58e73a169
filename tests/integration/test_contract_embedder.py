"""Embedder contract: one unit vector per input, in order, deterministic, with the service's limits."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import pytest

from ingestion.errors import PermanentError, ReasonCode
from ingestion.ports import Embedder
from ingestion.tokens import Tokenizer


def cosine(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (math.hypot(*a) * math.hypot(*b))


def test_limits_are_within_the_service_limits(embedder: Embedder) -> None:
    """The advertised limits never exceed Azure OpenAI's (2,048 inputs, 300k tokens, 8,191 per input)."""
    assert embedder.model
    assert 0 < embedder.max_batch_inputs <= 2048
    assert 0 < embedder.max_batch_tokens <= 300_000
    assert 0 < embedder.max_input_tokens <= 8191


def test_one_unit_vector_per_input_in_order(embedder: Embedder) -> None:
    """embed() returns a vector of the advertised size per input, each of length 1, in input order."""
    texts = ["the cat sat on the mat", "quarterly revenue report", "the cat sat on the mat"]
    result = embedder.embed(texts)
    assert len(result.vectors) == 3
    assert all(len(vector) == embedder.dimensions for vector in result.vectors)
    assert all(math.isclose(math.hypot(*vector), 1.0, rel_tol=1e-9) for vector in result.vectors)
    assert result.vectors[0] == result.vectors[2]
    assert result.vectors[0] != result.vectors[1]


def test_vectors_are_deterministic(embedder: Embedder) -> None:
    """The same text gives the same vector alone or in a batch (reuse by content hash relies on it)."""
    alone = embedder.embed(["Reliability is a feature."]).vectors[0]
    batched = embedder.embed(["something else", "Reliability is a feature."]).vectors[1]
    assert alone == batched


def test_prompt_tokens_are_the_sum_of_token_counts(embedder: Embedder, tokenizer: Tokenizer) -> None:
    """prompt_tokens is what the tokenizer counts over all inputs."""
    texts = ["one two three", "naïve café — déjà vu", "x" * 100]
    assert embedder.embed(texts).prompt_tokens == sum(tokenizer.count(text) for text in texts)


def test_an_empty_batch_costs_nothing(embedder: Embedder) -> None:
    """Embedding no texts returns no vectors and zero tokens."""
    result = embedder.embed([])
    assert result.vectors == []
    assert result.prompt_tokens == 0


def test_text_without_words_still_gets_a_unit_vector(embedder: Embedder) -> None:
    """Whitespace or punctuation only yields a defined unit vector (cosine stays defined)."""
    for vector in embedder.embed(["   ", "!!! ... ???"]).vectors:
        assert math.isclose(math.hypot(*vector), 1.0, rel_tol=1e-9)


def test_related_texts_are_closer_than_unrelated_ones(embedder: Embedder) -> None:
    """Texts sharing words are nearer (cosine) than texts sharing none."""
    base, near, far = embedder.embed(
        [
            "the annual budget for the marketing department",
            "marketing department budget planning for next year",
            "volcanic rocks cool into basalt columns",
        ]
    ).vectors
    assert cosine(base, near) > cosine(base, far) + 0.2


def test_an_input_over_the_token_limit_is_rejected(embedder: Embedder) -> None:
    """One input longer than max_input_tokens fails the request with EMBED_REJECTED."""
    too_long = "word " * (embedder.max_input_tokens + 10)
    with pytest.raises(PermanentError) as caught:
        embedder.embed(["fine", too_long])
    assert caught.value.reason is ReasonCode.EMBED_REJECTED


def test_too_many_inputs_are_rejected(embedder: Embedder) -> None:
    """More inputs than max_batch_inputs in one call fails with EMBED_REJECTED."""
    with pytest.raises(PermanentError) as caught:
        embedder.embed(["a"] * (embedder.max_batch_inputs + 1))
    assert caught.value.reason is ReasonCode.EMBED_REJECTED


def test_too_many_tokens_in_one_request_are_rejected(embedder: Embedder) -> None:
    """Inputs each within limits but over max_batch_tokens together fail with EMBED_REJECTED."""
    per_input = "word " * (embedder.max_input_tokens - 10)
    count = embedder.max_batch_tokens // (embedder.max_input_tokens - 10) + 1
    with pytest.raises(PermanentError) as caught:
        embedder.embed([per_input] * count)
    assert caught.value.reason is ReasonCode.EMBED_REJECTED


def test_an_input_exactly_at_the_token_limit_is_accepted(embedder: Embedder, tokenizer: Tokenizer) -> None:
    """The per-input limit is inclusive: max_input_tokens tokens embed fine."""
    text = "word" + " word" * (embedder.max_input_tokens - 1)
    assert tokenizer.count(text) == embedder.max_input_tokens
    result = embedder.embed([text])
    assert len(result.vectors[0]) == embedder.dimensions
    assert result.prompt_tokens == embedder.max_input_tokens


def test_concurrent_calls_give_the_same_vectors_as_sequential_ones(embedder: Embedder) -> None:
    """Activities embed from several threads at once; each thread gets exactly its own texts' vectors."""
    batches = [[f"thread {n} text {i} about topic {n * i}" for i in range(5)] for n in range(6)]
    sequential = [embedder.embed(batch).vectors for batch in batches]
    with ThreadPoolExecutor(max_workers=6) as pool:
        concurrent = list(pool.map(lambda batch: embedder.embed(batch).vectors, batches))
    assert concurrent == sequential
