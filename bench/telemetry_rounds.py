"""The machinery of ``bench/telemetry_overhead.py``, in a module of its own: parse children re-run the
entry script (CPython's forkserver prepares each child from the parent's ``__main__`` when that is a
script), so the script must stay light for the children to start in milliseconds, as they do under
``python -m ingestion.devhost``.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from ingestion import activities, telemetry
from ingestion.bootstrap import build_services
from ingestion.config import ParseLimits, Settings, TelemetrySettings
from ingestion.services import Services
from ingestion.telemetry import names
from ingestion.telemetry.logs import CorrelationFilter, ScrubbingLogProcessor
from ingestion.telemetry.runs import RunIdGenerator
from ingestion.triggers import plan_ingestion
from ingestion.workflow import CHUNK_DOCUMENT, FETCH_BLOB, INSTANCE_KEY, PARSE_DOCUMENT
from tests.emulators.local_http import LocalHttpServer, QuietHandler

REPO = Path(__file__).resolve().parents[1]


class Sink(QuietHandler):
    """An OTLP/HTTP endpoint that reads every request and answers 200."""

    received = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).received += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def collector() -> Iterator[str]:
    server = LocalHttpServer(Sink)
    try:
        yield server.url
    finally:
        server.close()


@contextmanager
def telemetry_on(endpoint: str) -> Iterator[None]:
    """The full SDK exporting over OTLP, as ``setup.configure`` builds it for the otlp exporter."""
    tracer_provider = TracerProvider(id_generator=RunIdGenerator())
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")))
    reader = PeriodicExportingMetricReader(  # the production default interval (INGEST_METRIC_INTERVAL_S)
        OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics"),
        export_interval_millis=TelemetrySettings().metric_interval_s * 1000,
    )
    meter_provider = MeterProvider(metric_readers=[reader])
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(ScrubbingLogProcessor())
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(endpoint=f"{endpoint}/v1/logs")))
    handler = LoggingHandler(logger_provider=logger_provider)
    handler.addFilter(CorrelationFilter())
    project = logging.getLogger(names.LOGGER)
    project.addHandler(handler)
    previous = telemetry.use(telemetry.Telemetry(tracer_provider, meter_provider))
    try:
        yield
    finally:
        telemetry.use(previous)
        project.removeHandler(handler)
        for provider in (tracer_provider, meter_provider, logger_provider):
            provider.shutdown()


@contextmanager
def telemetry_off() -> Iterator[None]:
    previous = telemetry.use(telemetry.Telemetry())
    try:
        yield
    finally:
        telemetry.use(previous)


def one_round(files: list[Path], corpus: Path, isolation: str) -> tuple[float, int]:
    """Seconds spent in parse + chunk over ``files`` (fresh stores), and how many files were chunked."""
    with tempfile.TemporaryDirectory(prefix="bench-telemetry-") as scratch:
        settings = dataclasses.replace(
            Settings.from_env({}), data_dir=Path(scratch), inbox_dir=corpus, limits=ParseLimits(isolation=isolation)
        )
        services = build_services(settings)
        try:
            return _timed(services, files)
        finally:
            services.close()


def _timed(services: Services, files: list[Path]) -> tuple[float, int]:
    spent, chunked = 0.0, 0
    for path in files:
        plan = plan_ingestion(services, services.blobs.container, path.name)
        if plan is None:
            continue
        payload = plan.input["request"] | {INSTANCE_KEY: plan.instance_id}
        if not activities.run_stage(services, FETCH_BLOB, payload)["ok"]:
            continue
        started = time.perf_counter()
        if activities.run_stage(services, PARSE_DOCUMENT, payload)["ok"]:
            chunked += activities.run_stage(services, CHUNK_DOCUMENT, payload)["ok"]
        spent += time.perf_counter() - started
    return spent, chunked


def measure(files: list[Path], corpus: Path, isolation: str, rounds: int, endpoint: str) -> dict[str, list[float]]:
    modes: dict[str, Callable[[], object]] = {"off": telemetry_off, "on": lambda: telemetry_on(endpoint)}
    times: dict[str, list[float]] = {"off": [], "on": [], "off cpu": [], "on cpu": []}
    one_round(files[:3], corpus, isolation)  # warm-up: imports, tokenizer files, page cache
    for number in range(rounds):
        order = ("off", "on") if number % 2 == 0 else ("on", "off")
        for mode in order:
            cpu = time.process_time()  # every thread's: the exporters' too, and the final flush
            with modes[mode]():  # type: ignore[attr-defined]
                seconds, chunked = one_round(files, corpus, isolation)
            cpu = time.process_time() - cpu
            times[mode].append(seconds)
            times[f"{mode} cpu"].append(cpu)
            print(f"  round {number + 1} {mode:>3}: {seconds:7.2f} s, cpu {cpu:7.2f} s ({chunked} chunked)", flush=True)
    return times
