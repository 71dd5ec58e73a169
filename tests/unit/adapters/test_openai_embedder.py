"""OpenAIEmbedder through the real openai SDK over HTTP, against the local embeddings server.

Faults (429, 503, slow answers, dropped connections, 400) are injected into the server, never into
the SDK; what the server saw is the evidence for what the client sent.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from azure.core.credentials import AccessToken

from ingestion.adapters.local_embedder import HashingEmbedder
from ingestion.adapters.openai_embedder import OpenAIEmbedder, connect_embedder
from ingestion.errors import PermanentError, ReasonCode, TransientError
from ingestion.retry import SDK_RETRIES
from ingestion.tokens import Tokenizer
from tests.emulators.embeddings import API_KEY, DEPLOYMENT, GENEROUS
from tests.emulators.embeddings_server import EmbeddingsServer

DIMENSIONS = 64
TEXTS = ["the cat sat on the mat", "quarterly revenue report", "volcanic rocks cool into basalt", "tents"]

Build = Callable[..., OpenAIEmbedder]


@pytest.fixture
def server(embeddings_server: EmbeddingsServer) -> EmbeddingsServer:
    """The session's server with no quota, no faults and an empty log."""
    embeddings_server.reset()
    return embeddings_server


@pytest.fixture
def build(server: EmbeddingsServer, tokenizer: Tokenizer) -> Iterator[Build]:
    """Builds embedders with connect_embedder against ``server`` (Azure route by default); closes them."""
    built: list[OpenAIEmbedder] = []

    def make(**overrides: Any) -> OpenAIEmbedder:
        options: dict[str, Any] = {
            "kind": "azure_openai",
            "endpoint": server.url,
            "model": DEPLOYMENT,
            "dimensions": DIMENSIONS,
            "tokenizer": tokenizer,
            "api_key": API_KEY,
            **GENEROUS,
            **overrides,
        }
        embedder = connect_embedder(**options)
        built.append(embedder)
        return embedder

    yield make
    for embedder in built:
        embedder.close()


def openai_retries() -> int:
    return SDK_RETRIES.snapshot().get("openai", 0)


class FakeCredential:
    """A token credential that hands out one fixed Microsoft Entra ID token."""

    def __init__(self) -> None:
        self.scopes: list[str] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken("entra-token", 4_102_444_800)


# ------------------------------------------------------------------ requests and answers


def test_a_batch_comes_back_in_input_order(build: Build, server: EmbeddingsServer, tokenizer: Tokenizer) -> None:
    """One request carries the batch; vector i is the embedding of text i (the server's hashing vectors)."""
    result = build().embed(TEXTS)
    expected = HashingEmbedder(DIMENSIONS, tokenizer).embed(TEXTS).vectors
    assert len(result.vectors) == len(TEXTS)
    for got, want in zip(result.vectors, expected, strict=True):
        assert got == pytest.approx(want, abs=1e-6)
        assert math.isclose(math.hypot(*got), 1.0, rel_tol=1e-12)
    assert result.prompt_tokens == sum(tokenizer.count(text) for text in TEXTS)
    [record] = server.records
    assert (record.route, record.deployment, record.auth, record.inputs) == ("azure", DEPLOYMENT, "api-key", 4)


def test_the_sdk_asks_for_base64_and_the_vectors_arrive_decoded(build: Build, server: EmbeddingsServer) -> None:
    """openai 3.x requests encoding_format=base64 by default; the embedder still returns float vectors."""
    [vector] = build().embed(["base64 on the wire"]).vectors
    assert server.records[0].encoding == "base64"
    assert len(vector) == DIMENSIONS
    assert all(isinstance(x, float) for x in vector)


def test_the_openai_compatible_route_works_with_a_bearer_key(build: Build, server: EmbeddingsServer) -> None:
    """kind="openai" posts to {base_url}/embeddings with the key as a bearer token and the model in the body."""
    result = build(kind="openai", endpoint=server.v1_url, model="text-embedding-3-small").embed(TEXTS[:2])
    assert len(result.vectors) == 2
    [record] = server.records
    assert (record.route, record.deployment, record.auth) == ("v1", "text-embedding-3-small", "bearer")


def test_without_a_key_azure_gets_an_entra_id_token(build: Build, server: EmbeddingsServer) -> None:
    """With a credential and no key, the Azure client sends a bearer token for the Cognitive Services scope."""
    server.accept_bearer("entra-token")
    credential = FakeCredential()
    build(api_key=None, credential=credential).embed(["managed identity"])
    assert server.records[0].auth == "bearer"
    assert credential.scopes == ["https://cognitiveservices.azure.com/.default"]


def test_ada_002_is_sent_without_dimensions(build: Build, server: EmbeddingsServer) -> None:
    """text-embedding-ada-002 refuses the dimensions parameter, so it is omitted (the server would 400)."""
    [vector] = build(model="text-embedding-ada-002", dimensions=1536).embed(["fixed size"]).vectors
    assert len(vector) == 1536


def test_vectors_of_the_wrong_size_are_a_transient_fault(build: Build, server: EmbeddingsServer) -> None:
    """A response whose vectors do not have the configured size is refused, not stored."""
    with pytest.raises(TransientError, match="not 64 finite numbers"):
        build(model="text-embedding-ada-002").embed(["1536 floats come back"])


# ------------------------------------------------------------------ refused before sending


def test_an_input_over_the_token_limit_is_refused_before_sending(build: Build, server: EmbeddingsServer) -> None:
    """An input over 8,191 tokens fails with EMBED_REJECTED naming its index; nothing reaches the service."""
    with pytest.raises(PermanentError) as caught:
        build().embed(["fine", "word " * 8200])
    assert caught.value.reason is ReasonCode.EMBED_REJECTED
    assert "input 1" in caught.value.message
    assert server.requests == 0


def test_an_empty_input_is_refused_before_sending(build: Build, server: EmbeddingsServer) -> None:
    """The service refuses empty strings (400); the embedder says which input, without a request."""
    with pytest.raises(PermanentError, match="input 2 is empty"):
        build().embed(["a", "b", ""])
    assert server.requests == 0


def test_the_batch_limit_follows_the_quota(build: Build) -> None:
    """One request stays a small share of a minute's tokens, and never below one full input."""
    assert build(tokens_per_minute=400_000).max_batch_tokens == 10_000
    assert build(tokens_per_minute=1_000).max_batch_tokens == 8191
    assert build(tokens_per_minute=100_000_000).max_batch_tokens == 300_000


# ------------------------------------------------------------------ faults and retries


def test_a_429_with_a_long_retry_after_comes_back_at_once(build: Build, server: EmbeddingsServer) -> None:
    """A 429 asking for 40 s is not slept in the SDK: one request, TransientError(retry_after=40), and the
    limiter holds every later call, which is refused without reaching the service."""
    embedder = build(max_wait_s=10.0)
    server.fail_next(3, 429, retry_after_s=40.0)
    with pytest.raises(TransientError) as caught:
        embedder.embed(["throttled"])
    assert caught.value.retry_after == pytest.approx(40.0)
    assert caught.value.code == "http_429"
    assert server.requests == 1
    assert embedder.limiter is not None
    assert embedder.limiter.paused_for() > 30.0
    with pytest.raises(TransientError) as held:
        embedder.embed(["held back by the limiter"])
    assert held.value.retry_after is not None and held.value.retry_after > 30.0
    assert server.requests == 1


def test_short_429s_are_retried_by_the_sdk_up_to_its_cap(build: Build, server: EmbeddingsServer) -> None:
    """With retries=2 a throttled call makes exactly 3 requests, each 429 pauses the limiter, and the two
    SDK retries are counted."""
    embedder = build(retries=2)
    server.fail_next(5, 429, retry_after_s=0.05)
    before = openai_retries()
    with pytest.raises(TransientError) as caught:
        embedder.embed(["still throttled"])
    assert caught.value.retry_after == pytest.approx(0.05)
    assert server.requests == 3
    assert [record.retry_count for record in server.records] == [0, 1, 2]
    assert openai_retries() - before == 2
    assert embedder.limiter is not None and embedder.limiter.penalties >= 3


def test_a_retry_that_succeeds_is_counted(build: Build, server: EmbeddingsServer) -> None:
    """A 503 then a success: the call returns vectors, and the one SDK retry is in SDK_RETRIES."""
    server.fail_next(1, 503)
    before = openai_retries()
    assert len(build(retries=2).embed(["second time lucky"]).vectors) == 1
    assert [record.status for record in server.records] == [503, 200]
    assert openai_retries() - before == 1


def test_retries_are_counted_for_a_client_built_elsewhere(server: EmbeddingsServer, tokenizer: Tokenizer) -> None:
    """The count comes from the SDK's own attempt header, so any openai client is counted."""
    client = openai.OpenAI(base_url=server.v1_url, api_key=API_KEY, max_retries=1)
    embedder = OpenAIEmbedder(client, model="m", dimensions=DIMENSIONS, tokenizer=tokenizer, limiter=None)
    server.fail_next(1, 500)
    before = openai_retries()
    try:
        embedder.embed(["counted"])
    finally:
        embedder.close()
    assert openai_retries() - before == 1


def test_a_persistent_503_is_transient(build: Build, server: EmbeddingsServer) -> None:
    """A 503 after the capped retries (here none) is a TransientError."""
    server.fail_next(1, 503)
    with pytest.raises(TransientError) as caught:
        build(retries=0).embed(["unavailable"])
    assert caught.value.code == "http_503"
    assert server.requests == 1


def test_a_slow_service_times_out_as_transient(build: Build, server: EmbeddingsServer) -> None:
    """A response slower than timeout_s ends the call with a transient connection error."""
    server.delay_next(1, 5.0)
    with pytest.raises(TransientError) as caught:
        build(retries=0, timeout_s=0.3).embed(["slow"])
    assert caught.value.code == "connection"
    assert "Timeout" in caught.value.message


def test_a_dropped_connection_is_retried(build: Build, server: EmbeddingsServer) -> None:
    """A connection closed without an answer is retried by the SDK, and the retry is counted."""
    server.drop_next(1)
    before = openai_retries()
    assert len(build(retries=2).embed(["dropped once"]).vectors) == 1
    assert [record.status for record in server.records] == [0, 200]
    assert openai_retries() - before == 1


def test_a_400_is_a_permanent_rejection(build: Build, server: EmbeddingsServer) -> None:
    """The service refusing the request (400) is PermanentError(EMBED_REJECTED), not retried."""
    server.fail_next(1, 400)
    with pytest.raises(PermanentError) as caught:
        build(retries=2).embed(["refused"])
    assert caught.value.reason is ReasonCode.EMBED_REJECTED
    assert server.requests == 1


def test_a_wrong_key_is_a_transient_auth_fault(build: Build, server: EmbeddingsServer) -> None:
    """401 is not the file's fault (keys rotate, roles propagate): transient, code auth, no key in the message."""
    with pytest.raises(TransientError) as caught:
        build(api_key="not-the-key").embed(["who am I"])
    assert caught.value.code == "auth"
    assert "not-the-key" not in caught.value.message


def test_connect_refuses_an_unknown_kind_or_missing_credentials(tokenizer: Tokenizer) -> None:
    """A configuration mistake fails when the embedder is built, not at the first document."""
    options: dict[str, Any] = {"endpoint": "http://127.0.0.1:9", "model": "m", "dimensions": 8, "tokenizer": tokenizer}
    with pytest.raises(ValueError, match="unknown embedder kind"):
        connect_embedder(kind="hashing", api_key="k", **options, **GENEROUS)
    with pytest.raises(ValueError, match="API key or a credential"):
        connect_embedder(kind="azure_openai", **options, **GENEROUS)


# ------------------------------------------------------------------ quota


def test_threads_sharing_one_limiter_stay_within_the_quota(build: Build, server: EmbeddingsServer) -> None:
    """Four threads embedding flat out for about two compressed minutes never get a 429."""
    # Given a quota of 20,000 tokens per 2-second "minute", and an embedder paced to it
    window_s, quota = 2.0, 20_000
    server.reset(tokens_per_minute=quota, requests_per_minute=10_000, window_s=window_s)
    embedder = build(tokens_per_minute=quota, requests_per_minute=10_000, minute_s=window_s, max_wait_s=30.0)
    batch = ["the quick brown fox jumps over the lazy dog " * 5] * 4  # 200 tokens per request
    per_thread = int(2.2 * quota / 200 / 4)

    def work() -> None:
        for _ in range(per_thread):
            embedder.embed(batch)

    # When four threads embed at once
    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then the service never throttled: no window took more than its quota
    assert server.throttled == 0
    windows = server.tokens_by_window()
    assert len(windows) >= 2
    assert max(windows) <= quota
