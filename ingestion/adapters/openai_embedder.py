"""The ``Embedder`` on Azure OpenAI, or on any OpenAI-compatible endpoint, through the ``openai`` SDK.

``OpenAIEmbedder.embed`` checks a batch against the service's limits before it spends quota (an
input over the token limit, an empty input or an oversized batch fails at once with
``EMBED_REJECTED`` naming the input), waits for its turn on the process's ``RateLimiter``, sends one
request (after a 429, up to ``retries`` more, each after a fresh turn), and checks the answer: one
finite vector of the asked size per input, in input order. A response that is not that is a
transient fault, never silently stored.

What the SDK (openai 3.x) does on its own, and how it is kept in bounds:
- It retries 408/409/429/5xx and connection faults ``max_retries`` times (default 2), sleeping the
  response's ``retry-after-ms`` / ``retry-after`` when that is at most 120 s (``_base_client.py``,
  ``_calculate_retry_timeout`` and ``_should_retry``); ``x-should-retry: false`` on a response stops it.
  ``connect_embedder`` caps the retries and adds a response hook (``ThrottleGuard``) that:
  tells the limiter about every 429 and stops the SDK retrying it; the embedder retries the 429
  itself, after taking a fresh turn on the limiter (an SDK retry would skip the limiter: threads
  refused in one quota window would all retry at its end, together, and be refused again); and
  stops the SDK sleeping any other ``retry-after`` longer than ``max_wait_s`` (a 503 may carry one):
  the call returns at once with ``TransientError(retry_after=...)`` and the long wait happens in
  the orchestrator's durable timer instead of in a worker.
- Each attempt carries ``x-stainless-retry-count``; the SDK's retries are counted from it (on the
  successful response, or on the failed request an error carries) into ``SDK_RETRIES["openai"]``,
  whatever client the embedder was given; the embedder's own 429 retries are counted there too.
- A 404 is the endpoint's or the deployment's (Azure answers ``DeploymentNotFound`` for a few minutes
  after a deployment is created; a base URL missing its "/v1" gets one too), never the document's:
  it is transient (code ``not_found``), like 401/403.
- It asks for ``encoding_format=base64`` unless told otherwise and decodes the vectors to float32
  values (``lib/_parsing/_embeddings.py``). The vectors are re-normalized here in float64: the
  service's vectors have unit length up to float32 rounding, and cosine scores assume exactly 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import httpx2
import numpy as np
import openai
from openai.types import CreateEmbeddingResponse

from ingestion.adapters.azure_errors import classify, retry_after_seconds
from ingestion.adapters.rate_limit import RateLimiter
from ingestion.errors import IngestionError, PermanentError, ReasonCode, TransientError
from ingestion.ports import Embeddings
from ingestion.retry import SDK_RETRIES, THROTTLED
from ingestion.tokens import Tokenizer

AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"
_SERVICE = "openai"
_RETRY_COUNT_HEADER = "x-stainless-retry-count"
# Used when a 429 carries no retry-after (Azure always sends one; other endpoints may not).
_DEFAULT_THROTTLE_S = 1.0
# The limiter paces to this share of the quota. The service counts tokens when a request arrives,
# in windows whose boundaries the client cannot see, and requests arrive a little after they leave;
# pacing at exactly 100% would overflow a window by one request about every other minute.
_QUOTA_SHARE = 0.95
# One request stays a small share of a minute's tokens, so pacing is smooth and no single request
# can overflow the service's window on its own (see rate_limit.py).
_BATCH_SHARE_OF_MINUTE = 1 / 40
MAX_INPUT_TOKENS = 8191  # the OpenAI embedding models' limit per input
MAX_BATCH_TOKENS = 300_000  # the service's limit per request


class OpenAIEmbedder:
    """Embeddings from ``client`` (``openai.OpenAI`` or ``openai.AzureOpenAI``); ``model`` is the
    deployment name on Azure OpenAI. Build it with ``connect_embedder``, which also bounds the SDK."""

    def __init__(
        self,
        client: openai.OpenAI,
        *,
        model: str,
        dimensions: int,
        tokenizer: Tokenizer,
        limiter: RateLimiter | None,
        max_batch_inputs: int = 2048,
        max_batch_tokens: int = MAX_BATCH_TOKENS,
        max_input_tokens: int = MAX_INPUT_TOKENS,
        throttle_retries: int | None = None,
    ) -> None:
        """``throttle_retries``: ``None`` for a client whose SDK retries 429s itself (any client built
        elsewhere); a number for ``connect_embedder``'s client, whose ``ThrottleGuard`` reports every 429
        to the limiter and hands it back, and which this embedder then retries that many times."""
        if dimensions <= 0:
            raise ValueError("dimensions must be positive")
        self._client = client
        self._model = model
        self._dimensions = dimensions
        self._tokenizer = tokenizer
        self._limiter = limiter
        self._max_batch_inputs = max_batch_inputs
        self._max_batch_tokens = max_batch_tokens
        self._max_input_tokens = max_input_tokens
        self._throttle_retries = throttle_retries
        # text-embedding-ada-002 has a fixed size and refuses the parameter (a deployment name that
        # hides the model cannot be told apart; name such deployments after their model).
        self._send_dimensions = "ada-002" not in model.lower()

    @property
    def model(self) -> str:
        return self._model

    @property
    def dimensions(self) -> int:
        return self._dimensions

    @property
    def max_batch_inputs(self) -> int:
        return self._max_batch_inputs

    @property
    def max_batch_tokens(self) -> int:
        return self._max_batch_tokens

    @property
    def max_input_tokens(self) -> int:
        return self._max_input_tokens

    @property
    def limiter(self) -> RateLimiter | None:
        return self._limiter

    def close(self) -> None:
        """Close the client's connections (the app registers this among its closers)."""
        self._client.close()

    def embed(self, texts: Sequence[str]) -> Embeddings:
        if not texts:
            return Embeddings([], 0)
        tokens = self._checked_token_count(texts)
        retries = self._throttle_retries or 0
        for attempt in range(retries + 1):
            if self._limiter is not None:
                self._limiter.acquire(tokens)  # waits out any 429's pause, in a slot of its own
            try:
                response = self._create(list(texts))
                break
            except TransientError as error:
                if not self._retry_throttled(error, attempt, retries):
                    raise
                SDK_RETRIES.add(_SERVICE)
        vectors = self._vectors(response, len(texts))
        # Some OpenAI-compatible servers leave usage out; our own count is what the quota was paced on.
        usage = getattr(response, "usage", None)
        return Embeddings(vectors, int(getattr(usage, "prompt_tokens", 0) or tokens))

    def _retry_throttled(self, error: TransientError, attempt: int, retries: int) -> bool:
        """Whether to try a 429 again here: retries left, and a wait the limiter may sleep."""
        if error.code != "http_429" or attempt >= retries or self._limiter is None:
            return False
        return (error.retry_after or 0.0) <= self._limiter.max_wait_s

    def _checked_token_count(self, texts: Sequence[str]) -> int:
        """The batch's tokens; ``EMBED_REJECTED`` for what the service would refuse (400)."""
        if len(texts) > self._max_batch_inputs:
            raise PermanentError(
                ReasonCode.EMBED_REJECTED, f"{len(texts)} inputs in one request, the limit is {self._max_batch_inputs}"
            )
        total = 0
        for position, text in enumerate(texts):
            if not text:
                raise PermanentError(ReasonCode.EMBED_REJECTED, f"input {position} is empty")
            count = self._tokenizer.count(text)
            if count > self._max_input_tokens:
                raise PermanentError(
                    ReasonCode.EMBED_REJECTED,
                    f"input {position} has {count} tokens, the limit is {self._max_input_tokens}",
                )
            total += count
        if total > self._max_batch_tokens:
            raise PermanentError(
                ReasonCode.EMBED_REJECTED, f"{total} tokens in one request, the limit is {self._max_batch_tokens}"
            )
        return total

    def _create(self, texts: list[str]) -> CreateEmbeddingResponse:
        what = f"embeddings ({self._model}, {len(texts)} inputs)"
        extra: dict[str, Any] = {"dimensions": self._dimensions} if self._send_dimensions else {}
        try:
            raw = self._client.embeddings.with_raw_response.create(input=texts, model=self._model, **extra)
        except Exception as error:  # every SDK error is classified below, none swallowed
            _count_retries(getattr(error, "request", None))
            failure = _classified(error, what)
            if isinstance(failure, TransientError) and getattr(error, "status_code", None) == 429:
                wait = failure.retry_after if failure.retry_after is not None else _DEFAULT_THROTTLE_S
                if self._limiter is not None and self._throttle_retries is None:  # else ThrottleGuard did
                    self._limiter.penalize(wait)
                failure.retry_after = wait
            raise failure from error
        if raw.retries_taken:
            SDK_RETRIES.add(_SERVICE, raw.retries_taken)
        try:
            return raw.parse()
        except Exception as error:  # a body that is not an embeddings response: the service misbehaved
            raise TransientError(
                f"{what}: unreadable response ({type(error).__name__})", code="bad_response"
            ) from error

    def _vectors(self, response: CreateEmbeddingResponse, count: int) -> list[tuple[float, ...]]:
        """One unit vector per input, in input order; ``TransientError`` for anything else."""
        items = sorted(response.data, key=lambda item: item.index)
        if [item.index for item in items] != list(range(count)):
            raise TransientError(
                f"embeddings: {len(items)} vectors with indexes that do not match {count} inputs", code="bad_response"
            )
        vectors = []
        for item in items:
            try:
                vector = np.asarray(item.embedding, dtype=np.float64)
            except (TypeError, ValueError):  # not numbers at all (say, base64 the SDK left undecoded)
                vector = np.empty(0)
            norm = float(np.linalg.norm(vector)) if vector.shape == (self._dimensions,) else math.nan
            if not math.isfinite(norm) or norm == 0.0:
                raise TransientError(
                    f"embeddings: vector {item.index} is not {self._dimensions} finite numbers", code="bad_response"
                )
            vectors.append(tuple((vector / norm).tolist()))
        return vectors


class ThrottleGuard:
    """An httpx2 response hook: every 429 pauses the limiter and is handed back rather than retried by
    the SDK (``x-should-retry: false``, which the SDK obeys), so the embedder retries it through the
    limiter; any other ``retry-after`` over ``max_wait_s`` is handed back too, not slept in the call."""

    def __init__(self, limiter: RateLimiter | None, max_wait_s: float) -> None:
        self._limiter = limiter
        self._max_wait_s = max_wait_s

    def __call__(self, response: httpx2.Response) -> None:
        if response.status_code < 400:
            return
        wait = retry_after_seconds(response.headers)
        if response.status_code == 429:
            THROTTLED.add(_SERVICE)
            if self._limiter is not None:
                self._limiter.penalize(wait if wait is not None else _DEFAULT_THROTTLE_S)
            response.headers["x-should-retry"] = "false"
        elif wait is not None and wait > self._max_wait_s:
            response.headers["x-should-retry"] = "false"


def connect_embedder(
    *,
    kind: str,
    endpoint: str,
    model: str,
    dimensions: int,
    tokenizer: Tokenizer,
    api_key: str | None = None,
    credential: object | None = None,
    api_version: str = "2024-10-21",
    tokens_per_minute: int,
    requests_per_minute: int,
    retries: int = 2,
    timeout_s: float = 30.0,
    max_wait_s: float = 10.0,
    minute_s: float = 60.0,
) -> OpenAIEmbedder:
    """An ``OpenAIEmbedder`` for ``kind`` "azure_openai" (``endpoint`` = https://<resource>.openai.azure.com,
    ``model`` = the deployment) or "openai" (``endpoint`` = any OpenAI-compatible base URL, ".../v1").

    Authenticates with ``api_key`` when given, else with ``credential`` (Microsoft Entra ID). The SDK
    makes at most ``retries`` quick retries of ``timeout_s`` each; one call waits at most about
    ``max_wait_s`` for quota, in the limiter or on a 429; longer waits come back as ``TransientError``.
    The limiter paces to the deployment's quota (``minute_s`` shortens the minute for tests).
    """
    # Not rounded: at a small quota int() would pace far below the share (2 RPM at 1, not 1.9).
    limiter = RateLimiter(
        tokens_per_minute * _QUOTA_SHARE,
        requests_per_minute * _QUOTA_SHARE,
        max_wait_s=max_wait_s,
        minute_s=minute_s,
    )
    http_client = openai.DefaultHttpxClient(event_hooks={"response": [ThrottleGuard(limiter, max_wait_s)]})
    common: dict[str, Any] = {"max_retries": retries, "timeout": timeout_s, "http_client": http_client}
    client: openai.OpenAI
    if kind == "azure_openai":
        if api_key:
            client = openai.AzureOpenAI(azure_endpoint=endpoint, api_version=api_version, api_key=api_key, **common)
        else:
            client = openai.AzureOpenAI(
                azure_endpoint=endpoint,
                api_version=api_version,
                azure_ad_token_provider=_token_provider(credential),
                **common,
            )
    elif kind == "openai":
        # The SDK takes a callable as the key: Azure's OpenAI-compatible /openai/v1 endpoint accepts
        # an Entra ID token as the bearer, so the same identity works there too.
        client = openai.OpenAI(base_url=endpoint, api_key=api_key or _token_provider(credential), **common)
    else:
        raise ValueError(f"unknown embedder kind {kind!r} (azure_openai or openai)")
    return OpenAIEmbedder(
        client,
        model=model,
        dimensions=dimensions,
        tokenizer=tokenizer,
        limiter=limiter,
        max_batch_tokens=min(MAX_BATCH_TOKENS, max(MAX_INPUT_TOKENS, int(tokens_per_minute * _BATCH_SHARE_OF_MINUTE))),
        throttle_retries=retries,
    )


def _token_provider(credential: object | None) -> Callable[[], str]:
    if credential is None:
        raise ValueError("the embedder needs an API key or a credential (Microsoft Entra ID)")
    from azure.identity import get_bearer_token_provider  # noqa: PLC0415 -- only without a key

    return get_bearer_token_provider(credential, AZURE_SCOPE)  # type: ignore[arg-type]  # any TokenProvider


def _classified(error: Exception, what: str) -> IngestionError:
    """``classify``, except for faults that are the configuration's, not the file's: a credential that
    cannot get a token, and a 404 (no such deployment yet, or a wrong endpoint)."""
    if any(cls.__name__ == "ClientAuthenticationError" for cls in type(error).__mro__):
        return TransientError(f"{what}: could not get a token ({type(error).__name__})", code="auth")
    if getattr(error, "status_code", None) == 404:
        detail = classify(error, what).message
        return TransientError(f"{detail} (check the endpoint and the deployment)", code="not_found")
    return classify(error, what, rejected=ReasonCode.EMBED_REJECTED, not_found=ReasonCode.EMBED_REJECTED)


def _count_retries(request: object) -> None:
    """Add the retries the SDK made before ``request`` (its last attempt) to ``SDK_RETRIES``."""
    headers = getattr(request, "headers", None)
    raw = headers.get(_RETRY_COUNT_HEADER) if headers is not None else None
    if raw is not None and str(raw).isdigit() and int(raw) > 0:
        SDK_RETRIES.add(_SERVICE, int(raw))
