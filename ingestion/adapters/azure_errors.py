"""One classifier for every Azure SDK's errors, and the count of retries the SDKs made on their own.

``classify`` turns an exception from azure-core (Blob, Cosmos, AI Search) or openai into the
project's ``TransientError`` / ``PermanentError``:

    transient   408, 429, 5xx, timeouts, refused or dropped connections, a body cut short;
                401/403 too (code ``auth``): a role assignment takes minutes to propagate after a
                deploy and keys get rotated; the file is not at fault, and ``retry_later`` plus
                the reconciler's re-drive limit still puts a persistent one in front of a person
    permanent   any other 4xx, with the reason code the caller gives (404 -> ``not_found``)

``retry_after`` comes from ``retry-after-ms``, ``x-ms-retry-after-ms`` or ``retry-after`` (seconds or
an HTTP date), whichever the response carries first.

The SDKs retry by themselves before an error reaches us; the clients are built with those retries
capped (``sdk_retry_kwargs``), and ``SDK_RETRIES`` (``ingestion.retry``) counts them per service so
retry metrics tell the truth: ``RetryCountingPolicy`` does it for the pipelines that take
``per_retry_policies`` (Blob, AI Search: a per-retry policy sees every attempt of one request, all
but the first are retries); Cosmos ignores those and re-runs its whole pipeline per retry, so
``cosmos_jobs`` counts through a request hook; the OpenAI embedder counts its own.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy

from ingestion.errors import IngestionError, PermanentError, ReasonCode, TransientError
from ingestion.retry import SDK_RETRIES, THROTTLED, RetryCounts

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
AUTH_STATUS = frozenset({401, 403})
_RETRY_AFTER_HEADERS = (("retry-after-ms", 1000.0), ("x-ms-retry-after-ms", 1000.0), ("retry-after", 1.0))
_MAX_MESSAGE = 500


def retry_after_seconds(headers: Mapping[str, str] | None, *, now: float | None = None) -> float | None:
    """How long the service asked us to wait, from the first retry-after header that parses."""
    if not headers:
        return None
    lowered = {str(key).lower(): str(value) for key, value in headers.items()}
    for name, divisor in _RETRY_AFTER_HEADERS:
        raw = lowered.get(name)
        if raw is None:
            continue
        try:
            seconds = float(raw) / divisor
        except ValueError:
            if name != "retry-after" or (moment := _http_date(raw)) is None:
                continue
            seconds = moment - (time.time() if now is None else now)
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return None


def _http_date(raw: str) -> float | None:
    """A Retry-After HTTP date as a POSIX time; ``None`` when it is not one."""
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return parsed.timestamp() if parsed.tzinfo is not None else None


def classify(
    error: BaseException,
    what: str,
    *,
    rejected: ReasonCode = ReasonCode.PARSE_FAILED,
    not_found: ReasonCode = ReasonCode.NOT_FOUND,
) -> IngestionError:
    """The project's error for an SDK ``error`` raised while doing ``what`` (which goes in the message).

    ``rejected`` is the reason a permanent 4xx gets (say ``INDEX_REJECTED``); ``not_found`` the one
    for 404 and 410. An error that is already ours passes through unchanged.
    """
    if isinstance(error, IngestionError):
        return error
    status, headers = _status_and_headers(error)
    message = f"{what}: {_describe(error, status)}"
    if status is None and _is_credential_fault(error):
        return TransientError(message, code="auth")
    if status is None:
        transient = _is_connection_fault(error)
        return TransientError(message, code="connection") if transient else PermanentError(rejected, message)
    if status in TRANSIENT_STATUS or status >= 500 or status in AUTH_STATUS:
        code = "auth" if status in AUTH_STATUS else f"http_{status}"
        return TransientError(message, retry_after=retry_after_seconds(headers), code=code)
    return PermanentError(not_found if status in (404, 410) else rejected, message)


@contextmanager
def translated(
    what: str,
    *,
    rejected: ReasonCode = ReasonCode.PARSE_FAILED,
    not_found: ReasonCode = ReasonCode.NOT_FOUND,
    classifier: Callable[..., IngestionError] = classify,
) -> Iterator[None]:
    """Re-raise any SDK or network exception inside the block as ``classifier`` says.

    ``classifier`` takes ``classify``'s arguments; an adapter passes its own (``storage_error``...)
    to add what only its service says, and falls back on ``classify`` for the rest.
    """
    try:
        yield
    except IngestionError:
        raise
    except Exception as error:  # every foreign error is translated, none swallowed
        raise classifier(error, what, rejected=rejected, not_found=not_found) from error


def sdk_retry_kwargs(retries: int, timeout_s: float) -> dict[str, Any]:
    """azure-core client options: at most ``retries`` quick retries and short timeouts per call.

    The defaults (10 retries, backoff up to 120 s, read timeouts of minutes) would hold one activity
    for many minutes; long waits belong in the orchestrator's durable timers instead.
    """
    return {
        "retry_total": retries,
        "retry_connect": retries,
        "retry_read": retries,
        "retry_status": retries,
        "retry_backoff_factor": 0.5,
        "retry_backoff_max": 4,
        "connection_timeout": min(timeout_s, 10.0),
        "read_timeout": timeout_s,
    }


class RetryCountingPolicy(SansIOHTTPPolicy[Any, Any]):
    """An azure-core per-retry policy counting every attempt of a request after its first.

    Pass it as ``per_retry_policies=[RetryCountingPolicy("blob")]`` when building a client.
    """

    _MARK = "ingestion.attempted"

    def __init__(self, service: str, counts: RetryCounts = SDK_RETRIES) -> None:
        self._service = service
        self._counts = counts

    def on_request(self, request: PipelineRequest[Any]) -> None:
        context = request.context
        if context.get(self._MARK):
            self._counts.add(self._service)
        else:
            context[self._MARK] = True

    def on_response(self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]) -> None:
        count_throttled(self._service, response)


class ThrottleCountingHook:
    """A client-level ``raw_response_hook`` counting 429s where no retry policy of ours sees them: azure-cosmos
    (its own pipeline) and azure-storage-blob (its retry policy never retries a 429)."""

    def __init__(self, service: str) -> None:
        self._service = service

    def __call__(self, response: PipelineResponse[Any, Any]) -> None:
        count_throttled(self._service, response)


def count_throttled(service: str, response: PipelineResponse[Any, Any] | None) -> None:
    """Count ``response`` in ``THROTTLED[service]`` if it is a 429 (the throttling metric)."""
    status = getattr(getattr(response, "http_response", None), "status_code", None)
    if status == 429:
        THROTTLED.add(service)


def _status_and_headers(error: BaseException) -> tuple[int | None, Mapping[str, str] | None]:
    status = getattr(error, "status_code", None)
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None) if response is not None else None
    if status is None and response is not None:
        status = getattr(response, "status_code", None) or getattr(response, "status", None)
    return (int(status) if isinstance(status, int) else None), headers


def _is_connection_fault(error: BaseException) -> bool:
    """Timeouts, refused/reset connections, truncated bodies, from any of the SDKs' stacks.

    The error or anything it wraps: azure-storage-blob's downloader, for one, raises a status-less
    ``HttpResponseError`` around the ``IncompleteReadError`` of a body cut short.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_connection_error_type(current):
            return True
        inner = getattr(current, "inner_exception", None)
        current = inner if isinstance(inner, BaseException) else current.__cause__ or current.__context__
    return False


def _is_credential_fault(error: BaseException) -> bool:
    """A credential that could not get a token (no managed identity yet, an expired login): not the file's fault."""
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(names & {"ClientAuthenticationError", "CredentialUnavailableError"})


def _is_connection_error_type(error: BaseException) -> bool:
    if isinstance(error, TimeoutError | ConnectionError):
        return True
    names = {cls.__name__ for cls in type(error).__mro__}
    return bool(
        names
        & {
            "ServiceRequestError",  # azure-core: could not send (refused, DNS, TLS, timeout)
            "ServiceResponseError",  # azure-core: the response broke off (reset, read timeout)
            "IncompleteReadError",
            "CosmosClientTimeoutError",
            "APIConnectionError",  # openai (APITimeoutError is a subclass)
            "TransportError",  # httpx and its successors
        }
    )


def _describe(error: BaseException, status: int | None) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    text = " ".join(str(text).split())
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 1] + "…"
    return f"{status} {text}" if status is not None else f"{type(error).__name__}: {text}"
