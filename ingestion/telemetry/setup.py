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
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import metrics, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

from ingestion.config import TelemetrySettings
from ingestion.telemetry import names
from ingestion.telemetry.logs import CorrelationFilter, JsonFormatter, ScrubbingLogProcessor
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
        try:
            if settings.exporter == "azure_monitor":
                _azure_monitor(settings, resource)
            else:
                _sdk(settings, resource)
        except Exception as error:  # noqa: BLE001 -- a bad exporter setting must not keep the app from starting
            log.error("telemetry off: %s", error)
            _configured = TelemetrySettings(exporter="none")
            return False
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
    """Flush and stop the exporters within ``deadline_s``; whether they finished in time.

    Every provider's shutdown starts at once, each in a daemon thread: one left waiting its turn
    at the deadline would run later from the SDK's ``atexit`` hook, unbounded (an OTLP exporter
    retries a refused connection for up to its 10 s timeout). OTLP alone, with nobody accepting
    connections at the endpoint, nothing can be delivered: leave at once instead of waiting."""

    with _lock:
        steps, _shutdowns[:] = list(_shutdowns), []
        settings = _configured
    if not steps:
        return True

    def run(step: Callable[[], Any]) -> None:
        try:
            step()
        except Exception as error:  # noqa: BLE001 -- one exporter's failure must not keep the others open
            log.warning("telemetry shutdown: %s", error)

    workers = [threading.Thread(target=run, args=(step,), name="telemetry-shutdown", daemon=True) for step in steps]
    for worker in workers:
        worker.start()
    if settings is not None and settings.exporter == "otlp" and not _accepts_connections(settings.otlp_endpoint):
        log.warning("telemetry: nothing listens at %s; leaving without flushing", settings.otlp_endpoint)
        return False
    ends = time.monotonic() + deadline_s
    for worker in workers:
        worker.join(max(0.0, ends - time.monotonic()))
    if any(worker.is_alive() for worker in workers):
        log.warning(
            "telemetry: the exporters did not finish within %.0f s (collector unreachable?); leaving", deadline_s
        )
        return False
    return True


def _accepts_connections(endpoint: str, timeout_s: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``endpoint``'s host and port (a malformed
    endpoint counts as listening: the exporters' own errors say what is wrong with it)."""

    try:
        parts = urlsplit(endpoint)
        address = (parts.hostname or "localhost", parts.port or (443 if parts.scheme == "https" else 80))
    except ValueError:
        return True
    try:
        with socket.create_connection(address, timeout=timeout_s):
            return True
    except OSError:
        return False


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
    """The distro, scoped to the project's logger. What it contacts: the connection string's
    ingestion endpoint (``/v2.1/track``), plus what its own variables control: statsbeat
    (``APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL``), the SDK's remote configuration
    (``APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED``) and, outside Functions, App Service and AKS,
    the VM metadata service once (0.2 s timeout). Failed batches wait on disk
    (``$TMPDIR/Microsoft-AzureMonitor-*``, at most 50 MiB and 48 h) and go out after the next
    successful export: on an instance that outlives an ingestion outage, no telemetry is lost."""
    from azure.monitor.opentelemetry import configure_azure_monitor  # noqa: PLC0415 -- only when configured
    from opentelemetry.resource.detector.azure import AzureFunctionsResourceDetector  # noqa: PLC0415 -- with the distro

    # Processors given here run before the distro's exporting one: records leave masked.
    for name in ("OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG"):
        # The distro prefers these to the ratio it is given, and a parent-based sampler would keep a
        # run's activities (whose remote parent is marked sampled) while dropping its root.
        if os.environ.pop(name, None) is not None:
            log.warning("telemetry: %s ignored: INGEST_TRACE_SAMPLING chooses the runs traced, whole", name)
    extra: dict[str, Any] = {"log_record_processors": [ScrubbingLogProcessor()]}
    if settings.otlp:
        spans, reader, records = _otlp_pipeline(settings)
        extra = {
            "span_processors": [spans],
            "metric_readers": [reader],
            "log_record_processors": [ScrubbingLogProcessor(), records],
        }
    configure_azure_monitor(
        connection_string=settings.connection_string,
        logger_name=names.LOGGER,
        # The distro adds the App Service and VM detectors; in a Function App the Functions one adds
        # cloud.platform, region and faas.* (its service.name, the site's, gives way to ours).
        resource=AzureFunctionsResourceDetector().detect().merge(resource),
        sampling_ratio=settings.sampling_ratio,
        enable_live_metrics=False,
        # Windows-named process counters every minute, whose "requests/sec" would count our
        # ingest_document spans: the Function App's platform metrics already tell CPU and memory.
        enable_performance_counters=False,
        # Opt-out list: every library the distro supports and we do not name would be instrumented
        # (httpx2 under the embedder's spans, requests under the Azure SDK's own ones).
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
                "httpx2",
            )
        },
        **extra,
    )
    azure = logging.getLogger("azure")
    if azure.level == logging.NOTSET:
        # The SDKs log every HTTP call at INFO, the exporter's own among them: inside the worker,
        # each export would come back to Application Insights as three traces.
        azure.setLevel(logging.WARNING)
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
        # By trace id alone, not parent-based: a run's root and its activities (whose remote parent is
        # marked sampled) are kept or dropped together, as the Application Insights sampler does.
        sampler=TraceIdRatioBased(settings.sampling_ratio),
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
    from opentelemetry.instrumentation.logging.handler import LoggingHandler  # noqa: PLC0415
    from opentelemetry.sdk._logs import LoggerProvider  # noqa: PLC0415

    provider = LoggerProvider(resource=resource)
    provider.add_log_record_processor(ScrubbingLogProcessor())  # first: the exporter sends masked records
    provider.add_log_record_processor(processor)
    set_logger_provider(provider)
    handler = LoggingHandler(logger_provider=provider)
    handler.addFilter(CorrelationFilter())
    project = logging.getLogger(names.LOGGER)
    if project.level == logging.NOTSET:
        project.setLevel(logging.INFO)
    project.addHandler(handler)

    def stop() -> None:
        project.removeHandler(handler)  # a record logged while stopping would be refused, with a log line of its own
        provider.shutdown()

    _shutdowns.append(stop)


def _shutdown_logs() -> None:
    from opentelemetry._logs import get_logger_provider  # noqa: PLC0415

    provider = get_logger_provider()
    if hasattr(provider, "shutdown"):
        _shutdowns.append(provider.shutdown)
