"""A span for every external call: the ports of ``Services`` wrapped so that each operation is one
client span (``blob.read``, ``jobs.replace``, ``index.upsert``, ``embedder.embed``...) carrying
the run's correlation fields, for every profile's adapters alike.

The wrapper also records what only the call sees: index batch sizes, embedding tokens and
requests. Operations that return an iterator (a blob's body, a listing) keep their span open
until the iterator is finished or closed, so the span measures the transfer, not its set-up.
Hand-written (rather than an instrumentation library) because the ports are ours: the Azure SDK
instrumentation adds the HTTP calls beneath these spans when the distro is on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sized
from typing import Any, TypeVar, cast

from opentelemetry import trace

from ingestion.errors import ConcurrencyError
from ingestion.ports import Embeddings
from ingestion.telemetry import names
from ingestion.telemetry.runtime import current

T = TypeVar("T")

OPERATIONS: dict[str, frozenset[str]] = {
    "blobs": frozenset({"properties", "read", "page", "list"}),
    "artifacts": frozenset({"put", "put_stream", "get", "exists", "delete_prefix", "list", "open"}),
    "jobs": frozenset({"get", "get_many", "create", "replace", "list", "count_by_status"}),
    "index": frozenset({"upsert", "delete", "ids_for_doc", "count_for_doc", "chunks", "search"}),
    "embedder": frozenset({"embed"}),
    "dead_letters": frozenset({"list", "remove"}),
}
_PORT_NAMES = {"blobs": "blob", "dead_letters": "dead_letter"}


class Traced:
    """``target`` with a span around each of ``operations``; every other attribute passes through."""

    def __init__(self, target: Any, port: str, operations: frozenset[str]) -> None:
        self.__target = target
        self.__port = port
        self.__operations = operations

    @property
    def traced(self) -> Any:
        """The adapter underneath."""
        return self.__target

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.__target, name)
        if name not in self.__operations:
            return value
        port = self.__port

        def call(*args: Any, **kwargs: Any) -> Any:
            telemetry = current()
            span = telemetry.start_call(port, name, **_request_attributes(args))
            with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                try:
                    result = value(*args, **kwargs)
                except BaseException as error:
                    _failed(span, error)
                    span.end()
                    raise
            if isinstance(result, Iterator):
                return _Ending(result, span)
            _record(telemetry, span, f"{port}.{name}", args, result)
            span.end()
            return result

        self.__dict__[name] = call  # found directly from now on: __getattr__ runs once per operation
        return call


def _request_attributes(args: tuple[Any, ...]) -> dict[str, Any]:
    first = args[0] if args else None
    if isinstance(first, Sized) and not isinstance(first, str | bytes):
        return {names.ITEMS: len(first)}
    return {}


def _record(telemetry: Any, span: trace.Span, call: str, args: tuple[Any, ...], result: Any) -> None:
    """What only the call sees: embedding tokens and requests, index batch sizes."""
    if call == "embedder.embed" and isinstance(result, Embeddings):
        span.set_attribute(names.TOKENS, result.prompt_tokens)
        telemetry.embedding_requests.add(1)
        telemetry.embedding_tokens.add(result.prompt_tokens)
    elif call in ("index.upsert", "index.delete") and args and isinstance(args[0], Sized):
        telemetry.index_batch.record(len(args[0]), {names.OPERATION: call.partition(".")[2]})


def _failed(span: trace.Span, error: BaseException) -> None:
    """A call that raised. A lost ETag race is the optimistic write working as designed (the caller
    re-reads and tries again), so it is an outcome on the span, not a failed dependency."""
    if isinstance(error, ConcurrencyError):
        span.set_attribute(names.OUTCOME, "conflict")
        return
    span.record_exception(error)
    span.set_status(trace.StatusCode.ERROR, type(error).__name__)


class _Ending(Iterator[T]):
    """``items``, ending ``span`` once: when they are exhausted, fail, are closed (even before the
    first item, which a generator's ``finally`` would miss) or are dropped."""

    def __init__(self, items: Iterator[T], span: trace.Span) -> None:
        self._items = items
        self._span: trace.Span | None = span

    def __iter__(self) -> _Ending[T]:
        return self

    def __next__(self) -> T:
        try:
            return next(self._items)
        except StopIteration:
            self._end()
            raise
        except BaseException as error:
            if self._span is not None:
                _failed(self._span, error)
            self._end()
            raise

    def close(self) -> None:
        try:
            close = getattr(self._items, "close", None)
            if close is not None:
                close()
        finally:
            self._end()

    def __del__(self) -> None:
        self._end()

    def _end(self) -> None:
        span, self._span = self._span, None
        if span is not None:
            span.end()


def instrument(services: T) -> T:
    """``services`` with each port wrapped in ``Traced`` (once: wrapping twice is a no-op)."""
    changes: dict[str, Any] = {}
    for field, operations in OPERATIONS.items():
        port = getattr(services, field, None)
        if port is not None and not isinstance(port, Traced):
            changes[field] = Traced(port, _PORT_NAMES.get(field, field), operations)
    return cast(T, dataclasses.replace(cast(Any, services), **changes))


def untraced(port: T) -> T:
    """The adapter beneath a traced port (tests that look at their fakes)."""
    return cast(T, port.traced) if isinstance(port, Traced) else port
