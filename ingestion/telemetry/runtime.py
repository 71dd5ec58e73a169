"""The instruments and spans the pipeline records through, bound to one set of providers.

``current()`` is what instrumented code uses; until ``setup.configure`` (or a test's ``use``) installs
SDK providers it is bound to OpenTelemetry's no-op providers, so an unconfigured process pays almost
nothing. Counts the adapters already keep (SDK retries, 429s, reconciler actions) are observed
from their ``RetryCounts``; jobs by status are read from the job store when metrics are collected.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation

from ingestion.model import JobStatus
from ingestion.retry import SDK_RETRIES, THROTTLED, RetryCounts
from ingestion.telemetry import names
from ingestion.telemetry.runs import RunIdGenerator, force_ids, link_context, reset_ids, run_context

log = logging.getLogger(__name__)

_NONE: Mapping[str, str] = MappingProxyType({})
_CORRELATION: ContextVar[Mapping[str, str]] = ContextVar("ingestion_correlation", default=_NONE)
_BACKLOG_STALE = timedelta(minutes=30)  # six default reconciler intervals
_JOBS_TTL_S = 10.0  # how long one job-store count serves metric collections and health probes

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
_LATENCY = (1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400)
_BATCH = (1, 10, 50, 100, 250, 500, 1000)


def correlation() -> Mapping[str, str]:
    """The correlation fields of the run this code works for (empty outside one)."""
    return _CORRELATION.get()


@contextmanager
def correlated(fields: Mapping[str, str]) -> Iterator[None]:
    token = _CORRELATION.set(MappingProxyType({key: value for key, value in fields.items() if value}))
    try:
        yield
    finally:
        _CORRELATION.reset(token)


@contextmanager
def in_run(instance_id: str, fields: Mapping[str, str]) -> Iterator[None]:
    """Work for a run outside its activities (the starter): its log records and spans carry the
    run's correlation fields and belong to its trace."""
    token = otel_context.attach(run_context(instance_id) or otel_context.get_current())
    try:
        with correlated({**fields, names.INSTANCE_ID: instance_id}):
            yield
    finally:
        otel_context.detach(token)


@dataclass
class StageScope:
    """What an activity span learns while the stage runs: how it ended, and why."""

    outcome: str = "ok"
    reason: str | None = None

    def ended(self, kind: str, reason: str | None = None) -> None:
        self.outcome, self.reason = kind, reason


class Telemetry:
    """Tracer and instruments over one tracer provider and one meter provider."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        self.tracer_provider = tracer_provider or trace.NoOpTracerProvider()
        self.tracer = self.tracer_provider.get_tracer(names.SERVICE_NAME)
        self.forces_run_ids = isinstance(getattr(self.tracer_provider, "id_generator", None), RunIdGenerator)
        meter = (meter_provider or metrics.NoOpMeterProvider()).get_meter(names.SERVICE_NAME)

        def counter(metric: names.Metric) -> metrics.Counter:
            return meter.create_counter(metric.name, unit=metric.unit, description=metric.description)

        def histogram(metric: names.Metric, bounds: tuple[float, ...]) -> metrics.Histogram:
            return meter.create_histogram(
                metric.name,
                unit=metric.unit,
                description=metric.description,
                explicit_bucket_boundaries_advisory=bounds,
            )

        self.started = counter(names.DOCUMENTS_STARTED)
        self.finished = counter(names.DOCUMENTS_FINISHED)
        self.retries = counter(names.RETRIES)
        self.embedding_tokens = counter(names.EMBEDDING_TOKENS)
        self.embedding_requests = counter(names.EMBEDDING_REQUESTS)
        self.stage_duration = histogram(names.STAGE_DURATION, _SECONDS)
        self.index_batch = histogram(names.INDEX_BATCH, _BATCH)
        self.e2e_latency = histogram(names.E2E_LATENCY, _LATENCY)
        for metric, callback in (
            (names.SDK_RETRIES, _observing(lambda: SDK_RETRIES, names.SERVICE)),
            (names.THROTTLED, _observing(lambda: THROTTLED, names.SERVICE)),
            (names.RECONCILER_ACTIONS, _observing(_reconciler_actions, names.RULE)),
        ):
            meter.create_observable_counter(
                metric.name, callbacks=[callback], unit=metric.unit, description=metric.description
            )
        for metric, callback in ((names.JOBS, JOB_COUNTS.observe), (names.BACKLOG_AGE, BACKLOG.observe)):
            meter.create_observable_gauge(
                metric.name, callbacks=[callback], unit=metric.unit, description=metric.description
            )

    # -------------------------------------------------------------- spans

    @contextmanager
    def activity(
        self,
        stage: str,
        doc_id: str,
        version: str,
        instance_id: str | None = None,
        *,
        traceparent: str | None = None,
        attempt: int | None = None,
    ) -> Iterator[StageScope]:
        """One activity: a span under the run's root, the stage duration, and the run's correlation
        fields for every span and log record inside. A ``traceparent`` (the Functions host's
        invocation) is linked, so the host's own telemetry and this trace find each other."""
        fields = {
            names.DOC_ID: doc_id,
            names.VERSION: version,
            names.STAGE: stage,
            names.INSTANCE_ID: instance_id or "",
        }
        linked = link_context(traceparent)
        scope = StageScope()
        started = time.perf_counter()
        with (
            correlated(fields),
            self.tracer.start_as_current_span(
                stage,
                context=run_context(instance_id),
                # a copy: samplers may add to it (Application Insights' does)
                attributes={**correlation(), **({names.ATTEMPT: attempt} if attempt else {})},
                links=[trace.Link(linked)] if linked else None,
            ) as span,
        ):
            try:
                yield scope
            except BaseException:
                scope.ended("crashed")
                raise
            finally:
                span.set_attribute(names.OUTCOME, scope.outcome)
                if scope.reason:
                    span.set_attribute(names.REASON, scope.reason)
                if scope.outcome not in ("ok", "superseded"):
                    span.set_status(trace.StatusCode.ERROR, f"{scope.outcome}: {scope.reason or ''}")
                if scope.outcome in ("transient", "crashed"):
                    self.retries.add(1, {names.STAGE: stage, names.KIND: scope.reason or scope.outcome})
                self.stage_duration.record(
                    time.perf_counter() - started, {names.STAGE: stage, names.OUTCOME: scope.outcome}
                )

    def start_call(self, port: str, operation: str, **attributes: Any) -> trace.Span:
        """A started client span for one external call (a port's operation), carrying the run's
        correlation fields; the caller ends it (an iterator's transfer outlives the call)."""
        return self.tracer.start_span(
            f"{port}.{operation}",
            kind=trace.SpanKind.CLIENT,
            attributes={**correlation(), names.PORT: port, names.OPERATION: operation, **attributes},
        )

    def run_span(
        self, name: str, instance_id: str, started: datetime, attributes: Mapping[str, Any], *, root: bool = False
    ) -> None:
        """A finished span of the run ``instance_id`` from ``started`` to now: its root (``root``: the
        ``ingest_document`` span, created with the run's derived ids) or one more of its children."""
        attributes = {key: value for key, value in attributes.items() if value is not None}
        start_ns = int(started.timestamp() * 1e9)
        if root and self.forces_run_ids:
            token = force_ids(instance_id)
            try:
                span = self.tracer.start_span(
                    name, context=trace.set_span_in_context(trace.INVALID_SPAN), kind=trace.SpanKind.CONSUMER,
                    attributes=attributes, start_time=start_ns,
                )  # fmt: skip
            finally:
                reset_ids(token)
        else:
            span = self.tracer.start_span(
                name, context=run_context(instance_id), attributes=attributes, start_time=start_ns
            )
        if attributes.get(names.OUTCOME) in ("needs_review", "retry_later"):
            span.set_status(trace.StatusCode.ERROR, f"{attributes[names.OUTCOME]}: {attributes.get(names.REASON, '')}")
        span.end()


# ------------------------------------------------------------------ observed values


def _observe_counts(counts: Mapping[str, int], key: str) -> Iterable[Observation]:
    return [Observation(value, {key: name}) for name, value in sorted(counts.items())]


def _reconciler_actions() -> RetryCounts:
    from ingestion.reconcile_run import ACTIONS  # noqa: PLC0415 -- the reconciler imports telemetry

    return ACTIONS


def _observing(counts: Callable[[], RetryCounts], key: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
    """A callback reporting ``counts()`` (cumulative since the process started) by ``key``."""
    return lambda options: _observe_counts(counts().snapshot(), key)


class JobCounts:
    """Jobs by status, read from a job store at most every ``_JOBS_TTL_S``: what the jobs gauge
    reports (for the store ``watch`` names) and what ``GET /api/health`` shows, so neither metric
    collections nor health probes query the store (a cross-partition count on Cosmos DB) each time.
    A reading is kept for the store it came from (services replaced: their store is read afresh).
    Read the adapter itself, not its traced wrapper: a reading belongs to no run."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._source: Callable[[], Any] | None = None
        self._cached: tuple[float, Any, Mapping[str, int]] | None = None  # (when, store, counts)
        self._clock = clock

    def watch(self, source: Callable[[], Any] | None) -> None:
        """``source`` returns the job store the gauge reports (``None``: nothing to report yet)."""
        with self._lock:
            self._source = source

    def read(self, store: Any) -> Mapping[str, int]:
        """``store``'s jobs by status (those with any), at most ``_JOBS_TTL_S`` old."""
        with self._lock:
            cached = self._cached
        if cached is not None and cached[1] is store and self._clock() - cached[0] <= _JOBS_TTL_S:
            return cached[2]
        counts = {status.value: count for status, count in store.count_by_status().items() if count}
        with self._lock:
            self._cached = (self._clock(), store, counts)
        return counts

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            source = self._source
        store = source() if source is not None else None
        if store is None:
            return []
        try:
            counts = self.read(store)
        except Exception as error:  # noqa: BLE001 -- a failing store must not break metric export
            log.warning("jobs by status not reported: %s", error)
            return []
        # Every status, zeros included: a gauge that stops reporting a status keeps showing its last count.
        return _observe_counts({status.value: counts.get(status.value, 0) for status in JobStatus}, names.STATUS)


class BacklogAge:
    """The age of the oldest unfinished job (queued, in progress or ``retry_later``) as this process's
    reconciler last found it in a full job sweep (``found``). The age keeps growing between sweeps
    while that job waits; 0 when nothing waited. A finding older than ``stale_after`` is no longer
    reported: with several instances, another one's newer sweep may have seen the backlog empty."""

    def __init__(
        self, clock: Callable[[], datetime] = lambda: datetime.now(UTC), stale_after: timedelta = _BACKLOG_STALE
    ) -> None:
        self._lock = threading.Lock()
        self._found: tuple[datetime | None, datetime] | None = None  # (oldest queued time, when swept)
        self._clock = clock
        self._stale_after = stale_after

    def found(self, oldest_queued: datetime | None) -> None:
        with self._lock:
            self._found = (oldest_queued, self._clock())

    def forget(self) -> None:
        with self._lock:
            self._found = None

    def age_s(self) -> float | None:
        with self._lock:
            found = self._found
        now = self._clock()
        if found is None or now - found[1] > self._stale_after:
            return None
        oldest = found[0]
        return 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        age = self.age_s()
        return [] if age is None else [Observation(age)]


JOB_COUNTS = JobCounts()
BACKLOG = BacklogAge()
_current = Telemetry()
_current_lock = threading.Lock()


def current() -> Telemetry:
    return _current


def use(telemetry: Telemetry) -> Telemetry:
    """Record through ``telemetry`` from now on (``setup.configure``, tests); the one it replaces."""
    global _current
    with _current_lock:
        previous, _current = _current, telemetry
    return previous
