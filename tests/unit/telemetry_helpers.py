"""Telemetry recorded in memory for a test: OpenTelemetry's in-memory span, metric and log exporters
behind providers like the ones ``setup.configure`` installs, made current with ``telemetry.use``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ingestion import telemetry
from ingestion.telemetry import names
from ingestion.telemetry.logs import CorrelationFilter
from ingestion.telemetry.runs import RunIdGenerator


@dataclass
class Recorded:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    logs: InMemoryLogRecordExporter
    emitted: list[logging.LogRecord]  # every record the project's loggers emitted, as a handler saw it

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.finished() if span.name == name]

    def points(self, metric: names.Metric) -> list[Any]:
        data = self.metrics.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for item in scope.metrics:
                    if item.name == metric.name:
                        found.extend(item.data.data_points)
        return found

    def value(self, metric: names.Metric, **attributes: str) -> float:
        """The sum (counters), count (histograms) or value (gauges) of the points with ``attributes``."""
        total = 0.0
        for point in self.points(metric):
            if all(point.attributes.get(key) == value for key, value in attributes.items()):
                total += getattr(point, "count", None) or getattr(point, "value", 0)
        return total


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextmanager
def recording() -> Iterator[Recorded]:
    """Record spans, metrics and the project's log records in memory until the block ends."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(id_generator=RunIdGenerator())
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    logs = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs))
    handler = LoggingHandler(logger_provider=logger_provider)
    handler.addFilter(CorrelationFilter())
    capture = _Capture()
    project = logging.getLogger(names.LOGGER)
    level = project.level
    project.setLevel(logging.INFO)
    project.addHandler(handler)
    project.addHandler(capture)
    previous = telemetry.use(telemetry.Telemetry(tracer_provider, meter_provider))
    try:
        yield Recorded(spans, reader, logs, capture.records)
    finally:
        telemetry.use(previous)
        project.removeHandler(handler)
        project.removeHandler(capture)
        project.setLevel(level)
        for provider in (tracer_provider, meter_provider, logger_provider):
            provider.shutdown()
