"""The one classifier for SDK errors: real azure-core and openai exceptions from real HTTP answers."""

from __future__ import annotations

import email.utils
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlsplit

import httpx2
import openai
import pytest
from azure.core import PipelineClient
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.policies import RetryPolicy
from azure.core.rest import HttpRequest

from ingestion.adapters.azure_errors import (
    RetryCountingPolicy,
    classify,
    retry_after_seconds,
    sdk_retry_kwargs,
    translated,
)
from ingestion.errors import PermanentError, ReasonCode, Superseded, TransientError
from ingestion.retry import THROTTLED, RetryCounts
from tests.emulators.local_http import LocalHttpServer, QuietHandler


class _StatusHandler(QuietHandler):
    """``GET /<status>?header=value...`` answers that status with those headers."""

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        self.send_response(int(url.path.strip("/")))
        for name, value in parse_qsl(url.query):
            self.send_header(name, value)
        body = b'{"error": {"code": "Oops", "message": "the service said no"}}'
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def status_server() -> Iterator[str]:
    server = LocalHttpServer(_StatusHandler)
    yield server.url
    server.close()


def http_error(base_url: str, status: int, query: str = "") -> HttpResponseError:
    """The HttpResponseError azure-core raises for that answer (no retries)."""
    client: PipelineClient[HttpRequest, object] = PipelineClient(base_url, policies=[RetryPolicy.no_retries()])
    with client:
        response = client.send_request(HttpRequest("GET", f"{base_url}/{status}?{query}"))
        with pytest.raises(HttpResponseError) as caught:
            response.raise_for_status()  # type: ignore[attr-defined]
    return caught.value


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 507])
def test_throttling_timeouts_and_server_errors_are_transient(status_server: str, status: int) -> None:
    """408, 429 and every 5xx are transient, coded by status."""
    error = classify(http_error(status_server, status), "read blob")
    assert isinstance(error, TransientError)
    assert error.code == f"http_{status}"
    assert error.message.startswith(f"read blob: {status} ")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("retry-after-ms=1500", 1.5),
        ("x-ms-retry-after-ms=250", 0.25),
        ("retry-after=7", 7.0),
        ("retry-after-ms=100&retry-after=9", 0.1),
        ("", None),
        ("retry-after=soon", None),
    ],
)
def test_retry_after_is_read_from_the_first_header_that_parses(status_server: str, query: str, expected: float) -> None:
    """retry-after-ms, then x-ms-retry-after-ms, then retry-after; unparseable values are ignored."""
    error = classify(http_error(status_server, 429, query), "embed")
    assert isinstance(error, TransientError)
    assert error.retry_after == expected


def test_retry_after_as_an_http_date() -> None:
    """A Retry-After date becomes the seconds until then."""
    now = 1_000_000_000.0
    header = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_seconds({"Retry-After": header}, now=now) == pytest.approx(30.0)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_are_transient_with_their_own_code(status_server: str, status: int) -> None:
    """401/403 are retried (role assignments propagate in minutes; keys rotate), coded "auth"."""
    error = classify(http_error(status_server, status), "upsert")
    assert isinstance(error, TransientError)
    assert error.code == "auth"


@pytest.mark.parametrize("status", [404, 410])
def test_gone_is_permanent_with_the_not_found_reason_the_caller_gives(status_server: str, status: int) -> None:
    """404 and 410 are permanent: NOT_FOUND unless the caller names another reason."""
    assert classify(http_error(status_server, status), "read").reason is ReasonCode.NOT_FOUND  # type: ignore[attr-defined]
    error = classify(http_error(status_server, status), "search", not_found=ReasonCode.INDEX_REJECTED)
    assert isinstance(error, PermanentError)
    assert error.reason is ReasonCode.INDEX_REJECTED


@pytest.mark.parametrize("status", [400, 409, 413, 422])
def test_other_client_errors_are_permanent_with_the_rejected_reason(status_server: str, status: int) -> None:
    """Any other 4xx is permanent, with the caller's reason, and the service's message kept."""
    error = classify(http_error(status_server, status), "embed", rejected=ReasonCode.EMBED_REJECTED)
    assert isinstance(error, PermanentError)
    assert error.reason is ReasonCode.EMBED_REJECTED
    assert "the service said no" in error.message


def test_a_refused_connection_is_transient() -> None:
    """Nobody listening: azure-core's ServiceRequestError becomes a transient "connection" error."""
    client: PipelineClient[HttpRequest, object] = PipelineClient(
        "http://127.0.0.1:9", policies=[RetryPolicy.no_retries()]
    )
    with client, pytest.raises(Exception) as caught:  # noqa: PT011 -- whatever azure-core raises is classified
        client.send_request(HttpRequest("GET", "http://127.0.0.1:9/"))
    error = classify(caught.value, "list")
    assert isinstance(error, TransientError)
    assert error.code == "connection"


def test_openai_errors_are_classified_like_azure_ones() -> None:
    """openai's RateLimitError (429 + retry-after-ms), APITimeoutError and BadRequestError map alike."""
    request = httpx2.Request("POST", "http://127.0.0.1/v1/embeddings")
    throttled = openai.RateLimitError(
        "slow down", response=httpx2.Response(429, headers={"retry-after-ms": "2000"}, request=request), body=None
    )
    error = classify(throttled, "embed")
    assert isinstance(error, TransientError)
    assert error.retry_after == 2.0
    assert isinstance(classify(openai.APITimeoutError(request=request), "embed"), TransientError)
    bad = openai.BadRequestError("too long", response=httpx2.Response(400, request=request), body=None)
    rejected = classify(bad, "embed", rejected=ReasonCode.EMBED_REJECTED)
    assert isinstance(rejected, PermanentError)
    assert rejected.reason is ReasonCode.EMBED_REJECTED


def test_plain_timeouts_and_connection_errors_are_transient_and_other_errors_permanent() -> None:
    """Python's TimeoutError/ConnectionError are transient; an unknown error is permanent with the reason."""
    assert isinstance(classify(TimeoutError("read timed out"), "x"), TransientError)
    assert isinstance(classify(ConnectionResetError("reset"), "x"), TransientError)
    unknown = classify(ValueError("cannot decode"), "x", rejected=ReasonCode.INDEX_REJECTED)
    assert isinstance(unknown, PermanentError)
    assert unknown.reason is ReasonCode.INDEX_REJECTED
    assert unknown.message == "x: ValueError: cannot decode"


def test_translated_reraises_sdk_errors_as_ours_and_lets_ours_through() -> None:
    """Inside ``translated`` a foreign error is classified (and chained); the project's errors pass."""
    with pytest.raises(TransientError) as caught, translated("write job"):
        raise ConnectionAbortedError("aborted")
    assert isinstance(caught.value.__cause__, ConnectionAbortedError)
    with pytest.raises(Superseded), translated("read blob"):
        raise Superseded("newer version")


def test_long_messages_are_cut() -> None:
    """A huge service message is truncated, so job documents stay small."""
    error = classify(ValueError("x" * 5000), "parse")
    assert len(error.message) < 600


def test_the_retry_cap_holds_and_every_sdk_retry_is_counted(status_server: str) -> None:
    """With sdk_retry_kwargs(2, ...), azure-core sends a 503 request 3 times and 2 retries are counted."""
    counts = RetryCounts()
    kwargs = sdk_retry_kwargs(2, 5.0)
    retry = RetryPolicy(**{k: v for k, v in kwargs.items() if k.startswith("retry_")})
    retry.backoff_factor = 0.0  # no sleeping between attempts in a unit test
    client: PipelineClient[HttpRequest, object] = PipelineClient(
        status_server, policies=[retry, RetryCountingPolicy("test", counts)]
    )
    with client:
        response = client.send_request(HttpRequest("GET", f"{status_server}/503"))
    assert response.status_code == 503  # type: ignore[attr-defined]
    assert counts.snapshot() == {"test": 2}


def test_a_status_less_error_wrapping_a_cut_body_is_transient() -> None:
    """An HttpResponseError without a status around an IncompleteReadError (the blob downloader's) is transient."""
    from azure.core.exceptions import IncompleteReadError  # noqa: PLC0415 -- only this test needs it

    try:
        try:
            raise IncompleteReadError(message="peer closed connection")
        except IncompleteReadError as cut:
            raise HttpResponseError(message="download failed", error=cut) from cut
    except HttpResponseError as wrapped:
        error = classify(wrapped, "read blob")
    assert isinstance(error, TransientError)
    assert error.code == "connection"


def test_a_credential_that_cannot_get_a_token_is_transient_auth() -> None:
    """azure-identity's CredentialUnavailableError (no managed identity yet) is coded "auth", never permanent."""
    from azure.identity import CredentialUnavailableError  # noqa: PLC0415 -- only this test needs it

    error = classify(CredentialUnavailableError("no identity endpoint"), "embed")
    assert isinstance(error, TransientError)
    assert error.code == "auth"


def test_429_responses_are_counted_per_service_and_other_statuses_are_not(status_server: str) -> None:
    """RetryCountingPolicy counts each 429 an SDK pipeline received in THROTTLED, under its service."""
    client: PipelineClient[HttpRequest, object] = PipelineClient(
        status_server, policies=[RetryCountingPolicy("test-throttled", RetryCounts())]
    )
    before = THROTTLED.snapshot().get("test-throttled", 0)
    with client:
        for status in (429, 503, 200, 429):
            client.send_request(HttpRequest("GET", f"{status_server}/{status}"))
    assert THROTTLED.snapshot()["test-throttled"] == before + 2
