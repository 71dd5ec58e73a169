"""Turning telemetry on: exporters chosen by ``TelemetrySettings``, and a shutdown that never hangs.

- ``azure_monitor``: the Azure Monitor OpenTelemetry distro. Inside the Functions Python worker,
  every record reaching the root logger is already forwarded to the host's Application Insights,
  so the distro is scoped to the project's logger (``logger_name``) and that logger stops
  propagating to the root: each record is sent once, by the distro, with its correlation fields
  as custom dimensions. Only the Azure SDK instrumentation is on (their HTTP calls become
  dependencies under our spans); the web-framework and HTTP-client ones would double them.
- ``otlp``: OTLP over HTTP/protobuf to ``OTEL_EXPORTER_OTLP_ENDPOINT`` (Grafana LGTM, Jaeger,
  an OpenTelemetry Collector), for traces, metrics and the project's logs. With a connection
  string as well, both receive everything.
- ``console``: spans and metrics printed as JSON on stderr; ``none``: nothing leaves the process.

Exporting happens in background threads. ``shutdown`` flushes what is left with a deadline, so
a process stops promptly even when no collector listens.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from ingestion.config import TelemetrySettings
from ingestion.telemetry import names
from ingestion.telemetry.logs import CorrelationFilter, JsonFormatter
from ingestion.telemetry.runs import RunIdGenerator
from ingestion.telemetry.runtime import Telemetry, use

log = logging.getLogger(__name__)
_WORKER_MODULES = ("azure_functions_worker", "proxy_worker")  # the Functions Python worker (3.11-3.12, 3.13+)
_SHUTDOWN_DEADLINE_S = 5.0
_lock = threading.Lock()
_configured: TelemetrySettings | None = None
_shutdowns: list[Callable[[], Any]] = []


def in_functions_worker() -> bool:
    """Whether this process is the Azure Functions Python worker (it forwards root-logger records)."""
    return any(name in sys.modules for name in _WORKER_MODULES)


def configure(settings: TelemetrySettings) -> bool:
    """Install exporters for ``settings`` once per process; whether anything is exported."""
    global _configured  # noqa: PLW0603 -- the process's providers are global by OpenTelemetry's design
    with _lock:
        if _configured is not None:
            return _configured.exporter != "none"
        _configured = settings
        if settings.exporter == "none":
            return False
        resource = Resource.create({"service.name": names.SERVICE_NAME})
        if settings.exporter == "azure_monitor":
            _azure_monitor(settings, resource)
        else:
            _sdk(settings, resource)
        provider = trace.get_tracer_provider()
        if hasattr(provider, "id_generator"):  # the run's root span is created with ids derived from it
            provider.id_generator = RunIdGenerator()
        use(Telemetry(provider, metrics.get_meter_provider()))
    log.info(
        "telemetry: exporting to %s",
        settings.exporter + (" and otlp" if settings.exporter != "otlp" and settings.otlp else ""),
    )
    return True


def shutdown(deadline_s: float = _SHUTDOWN_DEADLINE_S) -> bool:
    """Flush and stop the exporters within ``deadline_s``; whether they finished in time."""
    with _lock:
        steps, _shutdowns[:] = list(_shutdowns), []
    if not steps:
        return True

    def run() -> None:
        for step in steps:
            try:
                step()
            except Exception as error:  # noqa: BLE001 -- one exporter's failure must not keep the others open
                log.warning("telemetry shutdown: %s", error)

    worker = threading.Thread(target=run, name="telemetry-shutdown", daemon=True)
    worker.start()
    worker.join(deadline_s)
    if worker.is_alive():
        log.warning(
            "telemetry: the exporters did not finish within %.0f s (collector unreachable?); leaving", deadline_s
        )
        return False
    return True


def configure_logging(settings: TelemetrySettings, level: int = logging.INFO) -> None:
    """Console logging for the local host and the CLI: JSON lines (or text) on stderr, with the run's
    correlation fields. Not used inside the Functions worker, which owns the root logger there."""
    handler = logging.StreamHandler()
    handler.addFilter(CorrelationFilter())
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("azure").setLevel(logging.WARNING)  # the SDKs log every HTTP call at INFO


# ------------------------------------------------------------------ exporters


def _azure_monitor(settings: TelemetrySettings, resource: Resource) -> None:
    from azure.monitor.opentelemetry import configure_azure_monitor  # noqa: PLC0415 -- only when configured

    extra: dict[str, Any] = {}
    if settings.otlp:
        spans, reader, records = _otlp_pipeline(settings)
        extra = {"span_processors": [spans], "metric_readers": [reader], "log_record_processors": [records]}
    configure_azure_monitor(
        connection_string=settings.connection_string,
        logger_name=names.LOGGER,
        resource=resource,
        sampling_ratio=settings.sampling_ratio,
        enable_live_metrics=False,
        instrumentation_options={
            name: {"enabled": name == "azure_sdk"}
            for name in (
                "azure_sdk",
                "django",
                "fastapi",
                "flask",
                "psycopg2",
                "requests",
                "urllib",
                "urllib3",
                "httpx",
            )
        },
        **extra,
    )
    project = logging.getLogger(names.LOGGER)
    project.setLevel(logging.INFO)
    for handler in project.handlers:
        handler.addFilter(CorrelationFilter())
    if in_functions_worker():
        project.propagate = False  # the worker would forward each record to the same Application Insights
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        if hasattr(provider, "shutdown"):
            _shutdowns.append(provider.shutdown)
    _shutdown_logs()


def _sdk(settings: TelemetrySettings, resource: Resource) -> None:
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter  # noqa: PLC0415

    tracer_provider = TracerProvider(
        resource=resource,
        sampler=ParentBased(TraceIdRatioBased(settings.sampling_ratio)),
        id_generator=RunIdGenerator(),
    )
    if settings.exporter == "otlp":
        spans, reader, records = _otlp_pipeline(settings)
        tracer_provider.add_span_processor(spans)
        _project_log_handler(resource, records)
    else:  # console
        tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        reader = PeriodicExportingMetricReader(
            ConsoleMetricExporter(out=sys.stderr), export_interval_millis=settings.metric_interval_s * 1000
        )
    meter_provider = MeterProvider(metric_readers=[reader], resource=resource)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    _shutdowns.extend((tracer_provider.shutdown, meter_provider.shutdown))


def _otlp_pipeline(settings: TelemetrySettings) -> tuple[Any, Any, Any]:
    """A span processor, a metric reader and a log processor exporting over OTLP/HTTP; the
    exporters read the ``OTEL_EXPORTER_OTLP_*`` variables (endpoint, headers, timeout) themselves."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter  # noqa: PLC0415
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter  # noqa: PLC0415
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(), export_interval_millis=settings.metric_interval_s * 1000
    )
    return BatchSpanProcessor(OTLPSpanExporter()), reader, BatchLogRecordProcessor(OTLPLogExporter())


def _project_log_handler(resource: Resource, processor: Any) -> None:
    """Export the project's log records (``ingestion.*``) through ``processor``, once each."""
    from opentelemetry._logs import set_logger_provider  # noqa: PLC0415
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler  # noqa: PLC0415

    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(processor)
    set_logger_provider(provider)
    handler = LoggingHandler(logger_provider=provider)
    handler.addFilter(CorrelationFilter())
    project = logging.getLogger(names.LOGGER)
    if project.level == logging.NOTSET:
        project.setLevel(logging.INFO)
    project.addHandler(handler)
    _shutdowns.append(provider.shutdown)


def _shutdown_logs() -> None:
    from opentelemetry._logs import get_logger_provider  # noqa: PLC0415

    provider = get_logger_provider()
    if hasattr(provider, "shutdown"):
        _shutdowns.append(provider.shutdown)
