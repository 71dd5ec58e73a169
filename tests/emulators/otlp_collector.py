"""A local OpenTelemetry collector: OTLP over HTTP/protobuf, decoded into plain records for tests.

Receives what the OTLP/HTTP exporters send (``POST /v1/traces``, ``/v1/metrics``, ``/v1/logs``,
``application/x-protobuf``, uncompressed by default, ``gzip`` or ``deflate`` when
``OTEL_EXPORTER_OTLP_COMPRESSION`` asks), answers 200 with an empty export response and keeps
each span, metric point and log record as a frozen dataclass with hex ids and attribute dicts.
``wait_for(predicate)`` polls until what arrived satisfies a test. OTLP/JSON is not implemented
(415): the Python exporters speak protobuf only.

Standalone, it prints one line per record, which shows a developer what the pipeline exports
without Grafana: ``python -m tests.emulators.otlp_collector --port 4318``, then run the local host
with ``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest, ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from tests.emulators.local_http import LocalHttpServer, QuietHandler
from tests.emulators.process import HOST

PROTOBUF = "application/x-protobuf"
Attributes = dict[str, Any]


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    kind: str  # SERVER, CLIENT, INTERNAL, PRODUCER, CONSUMER
    attributes: Attributes
    status: str  # UNSET, OK, ERROR
    status_message: str
    start_ns: int
    end_ns: int
    scope: str  # the instrumentation scope: the tracer's name
    resource: Attributes


@dataclass(frozen=True)
class MetricPoint:
    """One data point: ``value`` for sums and gauges, ``sum`` and ``count`` for histograms."""

    name: str
    kind: str  # sum, gauge, histogram
    attributes: Attributes
    value: float | None
    sum: float | None
    count: int | None
    resource: Attributes


@dataclass(frozen=True)
class LogRecord:
    body: Any
    severity: str  # INFO, WARNING, ... as the handler wrote it
    severity_number: int
    attributes: Attributes
    trace_id: str  # "" outside a span
    span_id: str
    time_ns: int
    scope: str  # the logger's name
    resource: Attributes


class OtlpCollector:
    """An OTLP/HTTP receiver on ``127.0.0.1:port`` (0: a free one); ``start()``/``stop()`` (or ``with``)."""

    def __init__(self, port: int = 0, *, echo: Callable[[object], None] | None = None) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._spans: list[Span] = []
        self._points: list[MetricPoint] = []
        self._logs: list[LogRecord] = []
        self._echo = echo
        self._port = port
        self._http: LocalHttpServer | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        assert self._http is not None, "not started"
        return self._http.port

    @property
    def url(self) -> str:
        """The value for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporters append ``/v1/<signal>``)."""
        return f"http://{HOST}:{self.port}"

    def start(self) -> OtlpCollector:
        self._http = LocalHttpServer(_Handler, self._port, owner=self)
        return self

    def stop(self) -> None:
        http, self._http = self._http, None
        if http is not None:
            http.close()

    def __enter__(self) -> OtlpCollector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ what arrived

    @property
    def spans(self) -> list[Span]:
        with self._lock:
            return list(self._spans)

    @property
    def points(self) -> list[MetricPoint]:
        with self._lock:
            return list(self._points)

    @property
    def logs(self) -> list[LogRecord]:
        with self._lock:
            return list(self._logs)

    def wait_for(self, predicate: Callable[[OtlpCollector], bool], timeout: float = 30.0) -> bool:
        """Whether ``predicate(self)`` held within ``timeout`` seconds (checked on every export)."""
        deadline = time.monotonic() + timeout
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._changed:  # an export arriving between the check and here is seen within 0.2 s
                self._changed.wait(min(remaining, 0.2))
        return True

    # ------------------------------------------------------------------ receiving

    def receive(self, path: str, content_type: str, encoding: str, body: bytes) -> tuple[int, bytes]:
        """Decode one export request; the status and the body to answer."""
        route = _ROUTES.get(path)
        if route is None:
            return 404, b""
        if content_type.split(";", maxsplit=1)[0].strip().lower() != PROTOBUF:
            return 415, b""
        request_type, response_type, decode = route
        try:
            message = request_type.FromString(_decompress(body, encoding))
        except (DecodeError, OSError, zlib.error):
            return 400, b""
        records = list(decode(message))
        with self._changed:
            for record in records:
                if isinstance(record, Span):
                    self._spans.append(record)
                elif isinstance(record, MetricPoint):
                    self._points.append(record)
                else:
                    self._logs.append(record)
            self._changed.notify_all()
        if self._echo is not None:
            for record in records:
                self._echo(record)
        return 200, response_type().SerializeToString()


class _Handler(QuietHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the exporters' connection pool expects

    def do_POST(self) -> None:  # the name http.server dispatches to
        collector: OtlpCollector = self.server.owner  # type: ignore[attr-defined]
        try:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self.path.split("?")[0]
            status, payload = collector.receive(
                path, self.headers.get("Content-Type", ""), self.headers.get("Content-Encoding", ""), body
            )
            self.send_response(status)
            self.send_header("Content-Type", PROTOBUF)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True  # the exporter went away (it timed out): nothing to answer


def _decompress(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


# ------------------------------------------------------------------ protobuf -> records


def _hex(raw: bytes) -> str:
    return raw.hex()


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(pairs: Iterable[KeyValue]) -> Attributes:
    return {pair.key: _value(pair.value) for pair in pairs}


def _spans(request: ExportTraceServiceRequest) -> Iterable[Span]:
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope in resource_spans.scope_spans:
            for span in scope.spans:
                yield Span(
                    name=span.name,
                    trace_id=_hex(span.trace_id),
                    span_id=_hex(span.span_id),
                    parent_span_id=_hex(span.parent_span_id),
                    kind=SpanMessage.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                    attributes=_attributes(span.attributes),
                    status=Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                    status_message=span.status.message,
                    start_ns=span.start_time_unix_nano,
                    end_ns=span.end_time_unix_nano,
                    scope=scope.scope.name,
                    resource=resource,
                )


def _points(request: ExportMetricsServiceRequest) -> Iterable[MetricPoint]:
    for resource_metrics in request.resource_metrics:
        resource = _attributes(resource_metrics.resource.attributes)
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                kind = metric.WhichOneof("data")
                if kind in ("sum", "gauge"):
                    for number in getattr(metric, kind).data_points:
                        value = number.as_double if number.WhichOneof("value") == "as_double" else number.as_int
                        yield MetricPoint(
                            metric.name, kind, _attributes(number.attributes), value, None, None, resource
                        )
                elif kind == "histogram":
                    for point in metric.histogram.data_points:
                        yield MetricPoint(
                            metric.name, kind, _attributes(point.attributes), None, point.sum, point.count, resource
                        )


def _logs(request: ExportLogsServiceRequest) -> Iterable[LogRecord]:
    for resource_logs in request.resource_logs:
        resource = _attributes(resource_logs.resource.attributes)
        for scope in resource_logs.scope_logs:
            for record in scope.log_records:
                yield LogRecord(
                    body=_value(record.body),
                    severity=record.severity_text,
                    severity_number=record.severity_number,
                    attributes=_attributes(record.attributes),
                    trace_id=_hex(record.trace_id),
                    span_id=_hex(record.span_id),
                    time_ns=record.time_unix_nano,
                    scope=scope.scope.name,
                    resource=resource,
                )


_ROUTES: dict[str, tuple[type[Message], type[Message], Callable[[Any], Iterable[object]]]] = {
    "/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse, _spans),
    "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse, _points),
    "/v1/logs": (ExportLogsServiceRequest, ExportLogsServiceResponse, _logs),
}


# ------------------------------------------------------------------ standalone


def describe(record: object) -> str:
    """One line for a person: what a developer watching the pipeline wants to see."""
    if isinstance(record, Span):
        parent = record.parent_span_id or "-" * 16
        took_ms = (record.end_ns - record.start_ns) / 1e6
        return (
            f"span   {record.trace_id} {parent}>{record.span_id} {record.kind:<8} {record.name} "
            f"{took_ms:.1f} ms {record.status} {record.attributes}"
        )
    if isinstance(record, MetricPoint):
        figure = f"value={record.value}" if record.kind != "histogram" else f"sum={record.sum} count={record.count}"
        return f"metric {record.name} {figure} {record.attributes}"
    if isinstance(record, LogRecord):
        trace = record.trace_id or "-"
        return f"log    {record.severity:<7} {record.scope}: {record.body!r} {record.attributes} trace={trace}"
    return repr(record)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A local OTLP/HTTP collector printing what it receives.")
    parser.add_argument("--port", type=int, default=4318)
    args = parser.parse_args(argv)
    collector = OtlpCollector(args.port, echo=lambda record: print(describe(record), flush=True))
    with collector, contextlib.suppress(KeyboardInterrupt):
        print(f"OTLP/HTTP collector on {collector.url}: set OTEL_EXPORTER_OTLP_ENDPOINT={collector.url}", flush=True)
        threading.Event().wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
