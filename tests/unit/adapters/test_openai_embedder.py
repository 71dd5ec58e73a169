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


def test_short_429s_are_retried_through_the_limiter_up_to_the_cap(build: Build, server: EmbeddingsServer) -> None:
    """With retries=2 a throttled call makes exactly 3 requests, each 429 pauses the limiter, and the two
    retries are counted. The SDK is told not to retry a 429 itself (each attempt is a fresh SDK call that
    first takes its turn on the limiter), so every attempt says retry count 0."""
    embedder = build(retries=2)
    server.fail_next(5, 429, retry_after_s=0.05)
    before = openai_retries()
    with pytest.raises(TransientError) as caught:
        embedder.embed(["still throttled"])
    assert caught.value.retry_after == pytest.approx(0.05)
    assert server.requests == 3
    assert [record.retry_count for record in server.records] == [0, 0, 0]
    assert openai_retries() - before == 2
    assert embedder.limiter is not None and embedder.limiter.penalties >= 3


def test_a_short_429_then_success_returns_vectors(build: Build, server: EmbeddingsServer) -> None:
    """A 429 asking for a short wait is waited out in the limiter and the call then succeeds."""
    server.fail_next(1, 429, retry_after_s=0.05)
    before = openai_retries()
    assert len(build(retries=2).embed(["wait a little"]).vectors) == 1
    assert [record.status for record in server.records] == [429, 200]
    assert openai_retries() - before == 1


def test_a_5xx_with_a_long_retry_after_is_not_slept_in_the_sdk(build: Build, server: EmbeddingsServer) -> None:
    """A 503 asking for more than max_wait_s comes back at once with its retry_after; the SDK would
    otherwise sleep it (up to 120 s) inside the activity, once per retry."""
    server.fail_next(3, 503, retry_after_s=3.0)
    with pytest.raises(TransientError) as caught:
        build(retries=2, max_wait_s=1.0).embed(["unavailable for a while"])
    assert caught.value.code == "http_503"
    assert caught.value.retry_after == pytest.approx(3.0)
    assert server.requests == 1


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


def test_a_missing_deployment_is_transient_not_the_documents_fault(build: Build, server: EmbeddingsServer) -> None:
    """404 (Azure's DeploymentNotFound for a deployment made minutes ago, or a base URL without its /v1)
    does not depend on the document: TransientError, so it is retried and then parked, never a failed file."""
    with pytest.raises(TransientError) as caught:
        build(kind="openai", endpoint=server.url, retries=0).embed(["where is the service"])
    assert caught.value.code == "not_found"
    assert [record.status for record in server.records] == [404]


def test_a_base_url_with_a_trailing_slash_works(build: Build, server: EmbeddingsServer) -> None:
    """A base URL ending "./v1/" reaches the same route as one ending "./v1"."""
    assert len(build(kind="openai", endpoint=server.v1_url + "/").embed(["slash"]).vectors) == 1
    assert server.records[0].route == "v1"


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


def test_low_quotas_are_paced_at_their_share_not_rounded_down(build: Build) -> None:
    """2 requests per minute is paced at 1.9 (95%), not truncated to 1 (50%)."""
    limiter = build(tokens_per_minute=1_000, requests_per_minute=2).limiter
    assert limiter is not None
    assert limiter.requests_per_minute == pytest.approx(1.9)
    assert limiter.tokens_per_minute == pytest.approx(950.0)


def test_throttled_threads_retry_one_at_a_time_not_in_a_burst(build: Build, server: EmbeddingsServer) -> None:
    """Threads refused in one quota window all get "retry at the window's end"; their retries still take
    distinct limiter slots, so they do not land together and trip the service's per-period request limit."""
    # Given a service allowing 300 tokens per 2-second minute and one request per 0.1-second period,
    # and a client that believes in far more tokens (another process shares the deployment)
    server.reset(tokens_per_minute=300, requests_per_minute=20, window_s=2.0, periods=20)
    embedder = build(tokens_per_minute=100_000, requests_per_minute=10, minute_s=2.0, retries=2, max_wait_s=5.0)
    text = "the quick brown fox jumps over the lazy dog " * 11  # about 100 tokens
    failures: list[Exception] = []

    def work() -> None:
        try:
            embedder.embed([text])
        except TransientError as error:
            failures.append(error)

    # When six threads embed at once: three fit the first window, three are told to wait for the next
    threads = [threading.Thread(target=work) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then only the token quota refused anything; no retry collided with another in a request period
    outcomes = [record.outcome for record in server.records]
    assert outcomes.count("tokens") >= 1
    assert outcomes.count("requests") == 0
    assert failures == []


def test_tokens_count_in_the_window_that_admitted_them(build: Build, server: EmbeddingsServer) -> None:
    """The server's per-window figures (the bench's "% of quota") put a request in the window whose quota
    counted it, not in the one its slow answer left in."""
    server.reset(tokens_per_minute=1_000_000, window_s=1.0)
    server.slow_next(1, 1.2)
    result = build().embed(["counted at once, answered a window later"])
    assert server.tokens_by_window() == [result.prompt_tokens]


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
