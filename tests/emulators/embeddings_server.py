"""A local embeddings service speaking Azure OpenAI's (and OpenAI's) REST shape, with quota and faults.

Routes: ``POST /openai/deployments/{deployment}/embeddings?api-version=...`` (``api-key`` header or
``Authorization: Bearer``) and ``POST /v1/embeddings`` (``Authorization: Bearer``). The body is
``{input: str | [str] | [int] | [[int]], model, dimensions?, encoding_format? "float"|"base64"}``; the
answer ``{object: "list", data: [{object: "embedding", index, embedding}], model, usage}``.

Vectors come from the project's ``HashingEmbedder`` (deterministic unit vectors of the requested
size), so search quality in end-to-end tests means something; tokens are counted with cl100k_base.
The service's limits answer 400 in Azure's error shape: more than 2,048 inputs, an input over 8,192
tokens, more than 300,000 tokens in a request, an empty input.

Quota is enforced as Azure OpenAI documents it: tokens per minute are a running count of accepted
requests' tokens, reset every minute (a request that would go over is refused, unless the minute is
still empty); requests per minute are evaluated over short periods (``periods`` per minute, 6 by
default: RPM/6 per 10 s). ``window_s`` is the length of that minute, shortened to compress time. A
refusal is a 429 with ``retry-after-ms``, ``retry-after`` and ``x-ratelimit-remaining-*`` headers.

Azure documents a 429 once the running count *has reached* the limit, so one request may cross it;
this server refuses the request that *would* cross it: stricter, so a client that never sees a 429
here stays inside the quota there too.

Faults are injected from Python (``fail_next``, ``delay_next``, ``slow_next``, ``drop_next``); every request is
logged (``records``) for assertions and benchmarks. Tests run it in-process on a thread; it also runs
standalone: ``python -m tests.emulators.embeddings_server --port 8895 --api-key KEY --tpm N --rpm N``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ingestion.adapters.local_embedder import HashingEmbedder
from ingestion.tokens import Tokenizer, encoding
from tests.emulators.process import HOST

MAX_INPUTS = 2048
MAX_INPUT_TOKENS = 8192
MAX_REQUEST_TOKENS = 300_000
NATIVE_DIMENSIONS = {"text-embedding-3-large": 3072}  # others (3-small, ada-002): 1536
_AZURE_PREFIX = "/openai/deployments/"


@dataclass(frozen=True)
class Fault:
    """What to do with one request instead of (or before) serving it."""

    status: int = 0  # answer with this status (429, 503, 400, ...) instead of embeddings
    retry_after_s: float | None = None  # sent as retry-after-ms and retry-after (whole seconds)
    delay_s: float = 0.0  # wait this long first, then carry on (a client timeout)
    slow_s: float = 0.0  # wait this long after the quota counted the request (a slow model), then answer
    drop: bool = False  # close the connection without any answer


@dataclass(frozen=True)
class RequestRecord:
    """One request as the server saw it."""

    at: float  # seconds since the start (or reset) when the quota judged it (else when it arrived)
    route: str  # "azure" or "v1"
    deployment: str  # the deployment (Azure) or the model (/v1)
    auth: str  # "api-key", "bearer" or "none"
    inputs: int
    tokens: int
    status: int  # 0: the connection was dropped
    outcome: str  # ok, tokens (TPM), requests (RPM), fault, invalid, auth, not_found
    retry_count: int  # the client's x-stainless-retry-count (the openai SDK numbers its attempts)
    encoding: str = ""  # the encoding_format asked for ("" when the request did not say)
    retry_after_s: float = 0.0  # the wait a 429 asked for


class Quota:
    """Azure OpenAI's quota arithmetic over a shortened (or real) minute."""

    def __init__(self, tokens_per_minute: int | None, requests_per_minute: int | None, window_s: float, periods: int):
        self.tokens_per_minute = tokens_per_minute
        self.requests_per_minute = requests_per_minute
        self.window_s = window_s
        self.period_s = window_s / periods
        self._periods = periods
        self._window = self._period = -1
        self._tokens = self._requests = self._period_requests = 0

    def admit(self, now: float, tokens: int) -> tuple[str, float]:
        """``("ok", 0)`` and the request is counted, or ``("tokens"|"requests", seconds to wait)``."""
        window, period = int(now // self.window_s), int(now // self.period_s)
        if window != self._window:
            self._window, self._tokens, self._requests = window, 0, 0
        if period != self._period:
            self._period, self._period_requests = period, 0
        rpm, tpm = self.requests_per_minute, self.tokens_per_minute
        if rpm is not None:
            if self._period_requests + 1 > max(1.0, rpm / self._periods):
                return "requests", (period + 1) * self.period_s - now
            if self._requests + 1 > rpm:
                return "requests", (window + 1) * self.window_s - now
        if tpm is not None and self._tokens > 0 and self._tokens + tokens > tpm:
            return "tokens", (window + 1) * self.window_s - now
        self._tokens += tokens
        self._requests += 1
        self._period_requests += 1
        return "ok", 0.0

    def remaining(self) -> dict[str, str]:
        headers = {}
        if self.tokens_per_minute is not None:
            headers["x-ratelimit-remaining-tokens"] = str(max(0, self.tokens_per_minute - self._tokens))
        if self.requests_per_minute is not None:
            headers["x-ratelimit-remaining-requests"] = str(max(0, self.requests_per_minute - self._requests))
        return headers


class _ServiceEmbedder(HashingEmbedder):
    """The hashing embedder with the service's published per-input limit (the spec says 8,192)."""

    @property
    def max_input_tokens(self) -> int:
        return MAX_INPUT_TOKENS


class _Reply(Exception):
    """An error answer, raised from deep inside request handling."""

    def __init__(self, status: int, outcome: str, body: dict[str, Any], retry_after_s: float | None = None) -> None:
        super().__init__(outcome)
        self.status, self.outcome, self.body, self.retry_after_s = status, outcome, body, retry_after_s
        self.headers = _retry_headers(retry_after_s)


class EmbeddingsServer:
    """The service on ``127.0.0.1:port``; ``start()``/``stop()`` (or ``with``)."""

    def __init__(
        self,
        tokenizer: Tokenizer | None = None,
        *,
        port: int = 0,
        api_key: str = "test-key",
        tokens_per_minute: int | None = None,
        requests_per_minute: int | None = None,
        window_s: float = 60.0,
        periods: int = 6,
    ) -> None:
        cache_dir = Path(tempfile.gettempdir()) / "ingestion-tiktoken"
        self._tokenizer = tokenizer or Tokenizer("cl100k_base", cache_dir)
        self._encoding = encoding("cl100k_base", cache_dir)
        self._api_key = api_key
        self._bearer_tokens = {api_key}
        self._lock = threading.Lock()
        self._embedders: dict[int, HashingEmbedder] = {}
        self._stopping = threading.Event()
        self._http = ThreadingHTTPServer((HOST, port), _Handler)
        self._http.daemon_threads = True
        self._http.block_on_close = False
        self._http.app = self  # type: ignore[attr-defined]  # the handler finds the server's state here
        self._thread: threading.Thread | None = None
        self.reset(tokens_per_minute, requests_per_minute, window_s, periods)

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    @property
    def url(self) -> str:
        """The Azure OpenAI endpoint (``azure_endpoint``)."""
        return f"http://{HOST}:{self.port}"

    @property
    def v1_url(self) -> str:
        """The OpenAI-compatible base URL (``base_url``)."""
        return f"{self.url}/v1"

    def start(self) -> EmbeddingsServer:
        self._thread = threading.Thread(target=self._http.serve_forever, name="embeddings-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._http.shutdown()
        self._http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> EmbeddingsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ control from tests

    def reset(
        self,
        tokens_per_minute: int | None = None,
        requests_per_minute: int | None = None,
        window_s: float = 60.0,
        periods: int = 6,
    ) -> None:
        """Forget faults, the log and quota usage; set the quota (``None``: unlimited); restart the clock."""
        with self._lock:
            self._quota = Quota(tokens_per_minute, requests_per_minute, window_s, periods)
            self._faults: list[Fault] = []
            self._records: list[RequestRecord] = []
            self._started = time.monotonic()
            # A request still in flight from before the reset (a delayed one) is not logged after it.
            self._generation = getattr(self, "_generation", 0) + 1

    def accept_bearer(self, token: str) -> None:
        """Also accept ``Authorization: Bearer token`` (a Microsoft Entra ID token, in tests)."""
        with self._lock:
            self._bearer_tokens.add(token)

    def fail_next(self, n: int, status: int, *, retry_after_s: float | None = None) -> None:
        """Answer the next ``n`` requests with ``status`` (and retry-after headers, when given)."""
        self._add_faults(n, Fault(status=status, retry_after_s=retry_after_s))

    def delay_next(self, n: int, seconds: float) -> None:
        """Hold the next ``n`` requests ``seconds`` before answering them."""
        self._add_faults(n, Fault(delay_s=seconds))

    def slow_next(self, n: int, seconds: float) -> None:
        """Answer the next ``n`` requests ``seconds`` after their tokens were counted (a slow model)."""
        self._add_faults(n, Fault(slow_s=seconds))

    def drop_next(self, n: int) -> None:
        """Close the connection of the next ``n`` requests without answering."""
        self._add_faults(n, Fault(drop=True))

    def _add_faults(self, n: int, fault: Fault) -> None:
        with self._lock:
            self._faults.extend([fault] * n)

    # ------------------------------------------------------------------ what happened

    @property
    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    @property
    def requests(self) -> int:
        return len(self.records)

    @property
    def throttled(self) -> int:
        """429 answers, from the quota or injected."""
        return sum(1 for record in self.records if record.status == 429)

    def tokens_by_window(self) -> list[int]:
        """Tokens accepted in each quota window since the start (or reset), in order: each request in
        the window that counted it, however long after that its answer went out."""
        with self._lock:
            window_s, records = self._quota.window_s, list(self._records)
        totals: list[int] = []
        for record in records:
            if record.status == 200:
                index = int(record.at // window_s)
                totals.extend([0] * (index + 1 - len(totals)))
                totals[index] += record.tokens
        return totals

    # ------------------------------------------------------------------ serving

    def handle(self, handler: BaseHTTPRequestHandler) -> None:
        """Serve one request on ``handler`` (called on the server's request thread)."""
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        retry_count = _int(handler.headers.get("x-stainless-retry-count"))
        with self._lock:
            generation, started = self._generation, self._started
        at = time.monotonic() - started  # until the quota judges the request, when it arrived
        route, deployment, auth, inputs, tokens, fmt = "?", "", "none", 0, 0, ""

        def record(status: int, outcome: str, retry_after_s: float | None = None) -> None:
            entry = RequestRecord(
                at, route, deployment, auth, inputs, tokens, status, outcome, retry_count, fmt, retry_after_s or 0.0
            )
            self._record(generation, entry)

        try:
            route, deployment = self._route(handler.path)
            auth = self._authenticate(handler, route)
            fault = self._next_fault()
            if fault is not None:
                if fault.delay_s:
                    self._stopping.wait(fault.delay_s)
                if fault.drop:
                    record(0, "fault")
                    handler.close_connection = True
                    return
                if fault.status:
                    body = _error(route, fault.status, "injected fault")
                    raise _Reply(fault.status, "fault", body, fault.retry_after_s)
            request = _json_body(route, raw)
            fmt = str(request.get("encoding_format") or "")
            model = deployment if route == "azure" else str(request.get("model") or "")
            if route == "v1":
                deployment = model
            texts, counts = self._inputs(route, request.get("input"))
            inputs, tokens = len(texts), sum(counts)
            dimensions = self._dimensions(route, model, request.get("dimensions"))
            # The quota's moment, not the answer's: a request counted just before a window ends belongs
            # to that window however late its answer (tokens_by_window must match what admit saw).
            at = time.monotonic() - started
            self._admit(route, tokens, at)
            if fault is not None and fault.slow_s:
                self._stopping.wait(fault.slow_s)
            body = self._embeddings(texts, tokens, dimensions, model, request.get("encoding_format"))
            record(200, "ok")
            _send(handler, 200, body, self._remaining())
        except _Reply as reply:
            record(reply.status, reply.outcome, reply.retry_after_s)
            _send(handler, reply.status, reply.body, {**self._remaining(), **reply.headers})

    def _route(self, path: str) -> tuple[str, str]:
        parts = urlsplit(path)
        if parts.path == "/v1/embeddings":
            return "v1", ""
        if parts.path.startswith(_AZURE_PREFIX) and parts.path.endswith("/embeddings"):
            deployment = parts.path[len(_AZURE_PREFIX) : -len("/embeddings")]
            if deployment and "/" not in deployment:
                if not parse_qs(parts.query).get("api-version"):
                    raise _Reply(400, "invalid", _error("azure", 400, "Missing API version parameter."))
                return "azure", deployment
        raise _Reply(404, "not_found", _error("azure", 404, "Resource not found"))

    def _authenticate(self, handler: BaseHTTPRequestHandler, route: str) -> str:
        key = handler.headers.get("api-key")
        bearer = handler.headers.get("Authorization", "")
        with self._lock:
            if route == "azure" and key is not None and key == self._api_key:
                return "api-key"
            if bearer.startswith("Bearer ") and bearer[len("Bearer ") :] in self._bearer_tokens:
                return "bearer"
        message = "Access denied due to invalid subscription key or wrong API endpoint."
        raise _Reply(401, "auth", _error(route, 401, message))

    def _next_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def _inputs(self, route: str, value: Any) -> tuple[list[str], list[int]]:
        """The texts to embed and their token counts; 400 for what the service refuses."""
        if isinstance(value, str):
            items: list[Any] = [value]
        elif isinstance(value, list) and value and all(isinstance(item, int) for item in value):
            items = [value]  # one input given as a token array
        elif isinstance(value, list):
            items = value
        else:
            raise _Reply(400, "invalid", _error(route, 400, "'$.input' is invalid."))
        if not items:
            raise _Reply(400, "invalid", _error(route, 400, "'$.input' is invalid: no input."))
        if len(items) > MAX_INPUTS:
            raise _Reply(400, "invalid", _error(route, 400, f"Too many inputs. The max number is {MAX_INPUTS}."))
        texts, counts = [], []
        for position, item in enumerate(items):
            text, count = self._one_input(route, position, item)
            if count > MAX_INPUT_TOKENS:
                message = (
                    f"This model's maximum context length is {MAX_INPUT_TOKENS} tokens; input {position} has {count}"
                )
                raise _Reply(400, "invalid", _error(route, 400, message))
            texts.append(text)
            counts.append(count)
        if sum(counts) > MAX_REQUEST_TOKENS:
            message = f"Requested {sum(counts)} tokens, max {MAX_REQUEST_TOKENS} tokens per request"
            raise _Reply(400, "invalid", _error(route, 400, message))
        return texts, counts

    def _one_input(self, route: str, position: int, item: Any) -> tuple[str, int]:
        if isinstance(item, str) and item:
            return item, len(self._encoding.encode_ordinary(item))
        if isinstance(item, list) and item and all(isinstance(token, int) for token in item):
            try:
                return self._encoding.decode(item), len(item)
            except (KeyError, ValueError) as error:
                raise _Reply(400, "invalid", _error(route, 400, f"input {position}: invalid tokens")) from error
        raise _Reply(400, "invalid", _error(route, 400, f"'$.input' is invalid: input {position} is empty."))

    def _dimensions(self, route: str, model: str, value: Any) -> int:
        native = NATIVE_DIMENSIONS.get(model, 1536)
        if value is None:
            return native
        if "ada-002" in model:
            raise _Reply(400, "invalid", _error(route, 400, "This model does not support specifying dimensions."))
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= native:
            raise _Reply(400, "invalid", _error(route, 400, f"dimensions must be between 1 and {native}"))
        return value

    def _admit(self, route: str, tokens: int, now: float) -> None:
        with self._lock:
            outcome, wait = self._quota.admit(now, tokens)
        if outcome != "ok":
            kind = "token" if outcome == "tokens" else "call"
            message = (
                f"Requests to the Embeddings_Create Operation have exceeded {kind} rate limit of your current "
                f"pricing tier. Please retry after {math.ceil(wait)} seconds."
            )
            raise _Reply(429, outcome, _error(route, 429, message), wait)

    def _embeddings(self, texts: list[str], tokens: int, dimensions: int, model: str, fmt: Any) -> dict[str, Any]:
        vectors = self._embedder(dimensions).embed(texts).vectors
        data = []
        for index, vector in enumerate(vectors):
            embedding: Any = list(vector)
            if fmt == "base64":
                embedding = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return {"object": "list", "data": data, "model": model, "usage": usage}

    def _embedder(self, dimensions: int) -> HashingEmbedder:
        with self._lock:
            if dimensions not in self._embedders:
                self._embedders[dimensions] = _ServiceEmbedder(dimensions, self._tokenizer)
            return self._embedders[dimensions]

    def _remaining(self) -> dict[str, str]:
        with self._lock:
            return self._quota.remaining()

    def _record(self, generation: int, record: RequestRecord) -> None:
        with self._lock:
            if generation == self._generation:
                self._records.append(record)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects

    def do_POST(self) -> None:  # the name http.server dispatches to
        try:
            self.server.app.handle(self)  # type: ignore[attr-defined]
        except OSError:
            self.close_connection = True  # the client went away (it timed out): nothing to answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is ``records``."""


def _error(route: str, status: int, message: str) -> dict[str, Any]:
    """An error body: Azure OpenAI's ``{error: {code, message}}``, or OpenAI's with type and param."""
    if route == "v1":
        code = {429: "rate_limit_exceeded", 401: "invalid_api_key"}.get(status, "invalid_request_error")
        return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    return {"error": {"code": str(status), "message": message}}


def _retry_headers(wait: float | None) -> dict[str, str]:
    if wait is None:
        return {}
    return {"retry-after-ms": str(max(1, math.ceil(wait * 1000))), "retry-after": str(max(1, math.ceil(wait)))}


def _send(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(payload)


def _json_body(route: str, raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError as error:
        raise _Reply(400, "invalid", _error(route, 400, "The request body is not valid JSON.")) from error
    if not isinstance(body, dict):
        raise _Reply(400, "invalid", _error(route, 400, "The request body must be a JSON object."))
    return body


def _int(value: str | None) -> int:
    return int(value) if value is not None and value.isdigit() else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local Azure OpenAI / OpenAI embeddings service.")
    parser.add_argument("--port", type=int, default=8895)
    parser.add_argument("--api-key", default="test-key")
    parser.add_argument("--tpm", type=int, default=None, help="tokens per minute (default: unlimited)")
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute (default: unlimited)")
    parser.add_argument("--window-s", type=float, default=60.0, help="the length of the quota's minute")
    args = parser.parse_args(argv)
    server = EmbeddingsServer(
        port=args.port,
        api_key=args.api_key,
        tokens_per_minute=args.tpm,
        requests_per_minute=args.rpm,
        window_s=args.window_s,
    )
    print(f"embeddings server on {server.url} (Azure) and {server.v1_url} (OpenAI-compatible)", flush=True)
    with server, contextlib.suppress(KeyboardInterrupt):
        threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
