"""The local host exports traces, metrics and the project's logs to an OTLP collector when one is
configured, and stops promptly when the configured collector is not there.

The host runs as ``python -m ingestion.devhost`` on the embedded profile (a subprocess: OpenTelemetry's
providers are global, one set per process), with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at the
local collector of ``tests/emulators/otlp_collector.py``.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ingestion.model import DocumentRef
from ingestion.telemetry import names
from ingestion.telemetry.runs import run_ids
from tests.conftest import REPO
from tests.emulators.otlp_collector import OtlpCollector, Span
from tests.emulators.process import environment_without, free_port, start_devhost, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

SAMPLES = ("travel-policy.md", "price-list.csv")
# Text of the samples that must never leave the process in telemetry: logs say what was decided, not what was read.
DOCUMENT_TEXT = ("Register every trip in the travel app", "Ridgeline 2 tent")
ACTIVITIES = ("fetch_blob", "parse_document", "chunk_document", "embed_chunks", "persist_chunks", "record_outcome")
CLIENT_SPANS = ("blob.read", "embedder.embed", "index.upsert")
METRICS = (
    names.DOCUMENTS_FINISHED.name,
    names.STAGE_DURATION.name,
    names.EMBEDDING_TOKENS.name,
    names.INDEX_BATCH.name,
    names.E2E_LATENCY.name,
    names.JOBS.name,
)
INGEST_WAIT_S = 90.0
STOP_HANG_GUARD_S = 20.0  # not a timing assertion: a stop that takes this long is a hang


@dataclass
class Devhost:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def health(self) -> dict[str, object] | None:
        try:
            with urllib.request.urlopen(f"{self.url}/api/health", timeout=5) as response:  # noqa: S310 -- 127.0.0.1
                return dict(json.loads(response.read()))
        except (urllib.error.URLError, OSError):
            return None

    def status(self, name: str) -> str | None:
        """The document's status, as GET /api/documents/{doc_id} says (live, unlike health's counts)."""
        doc_id = DocumentRef("uploads", name).doc_id
        try:
            with urllib.request.urlopen(f"{self.url}/api/documents/{doc_id}", timeout=5) as response:  # noqa: S310
                return str(json.loads(response.read())["status"])
        except (urllib.error.URLError, OSError):
            return None

    def wait_indexed(self, files: tuple[str, ...]) -> None:
        wait_until(
            lambda: all(self.status(name) == "indexed" for name in files), f"{files} indexed", INGEST_WAIT_S,
            process=self.process, log=self.log, interval_s=0.2,
        )  # fmt: skip

    def stop(self) -> float:
        """SIGTERM, as Ctrl-C in demo.sh sends it; the seconds until the process exited."""
        asked = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            pytest.fail(f"the host did not stop within {STOP_HANG_GUARD_S} s:\n{self.output()}")
        return time.monotonic() - asked


def host_env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    """The embedded profile in ``tmp_path``, exporting to ``endpoint``, metrics every second."""
    return environment_without("INGEST_", "OTEL_", "APPLICATIONINSIGHTS_", "UploadsStorage") | {
        "INGEST_DATA_DIR": str(tmp_path / "data"),
        "INGEST_INBOX_DIR": str(tmp_path / "inbox"),
        "INGEST_HOST_PORT": str(free_port()),
        "INGEST_WATCH_INTERVAL_S": "0.2",
        "INGEST_METRIC_INTERVAL_S": "1",
        "UploadsStorage": "UseDevelopmentStorage=true",  # the blob trigger's connection setting
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


@contextmanager
def devhost(env: dict[str, str], log: Path) -> Iterator[Devhost]:
    """``python -m ingestion.devhost`` serving once /api/health answers; killed if a test leaves it running."""
    process = start_devhost(env, log, "--app-dir", str(REPO))
    host = Devhost(process, f"http://127.0.0.1:{env['INGEST_HOST_PORT']}", log)
    try:
        wait_until(lambda: host.health() is not None, "/api/health answering", 60, process=process, log=log)
        yield host
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def drop_samples(env: dict[str, str]) -> dict[str, str]:
    """The samples copied into the inbox; their doc ids by file name."""
    inbox = Path(env["INGEST_INBOX_DIR"])
    inbox.mkdir(parents=True, exist_ok=True)
    for name in SAMPLES:
        shutil.copy(REPO / "samples" / name, inbox / name)
    return {name: DocumentRef("uploads", name).doc_id for name in SAMPLES}


def finished_count(collector: OtlpCollector) -> float:
    """Runs finished ``indexed`` as the last export counted them (a cumulative sum)."""
    counts = [
        point.value or 0
        for point in collector.points
        if point.name == names.DOCUMENTS_FINISHED.name and point.attributes.get(names.OUTCOME) == "indexed"
    ]
    return max(counts, default=0)


def one(spans: list[Span], name: str, doc_id: str) -> Span:
    found = [span for span in spans if span.name == name and span.attributes.get(names.DOC_ID) == doc_id]
    assert len(found) == 1, (name, doc_id, [(span.name, span.attributes) for span in found])
    return found[0]


def test_the_host_exports_traces_metrics_and_logs_to_an_otlp_collector(tmp_path: Path) -> None:
    """Each run is one trace (activities and client calls under ingest_document), the pipeline's metrics
    and the project's logs arrive, each log once, correlated, without document text."""
    with OtlpCollector() as collector:
        env = host_env(tmp_path, collector.url)
        # Given the host exporting to the collector, when it ingests two samples and is stopped
        with devhost(env, tmp_path / "host.log") as host:
            doc_ids = drop_samples(env)
            host.wait_indexed(SAMPLES)
            # (metrics are exported every second while the host runs, not only when it stops)
            assert collector.wait_for(lambda received: finished_count(received) == len(SAMPLES)), host.output()
            host.stop()
            assert host.process.returncode == 0, host.output()
        spans, points, logs = collector.spans, collector.points, collector.logs

    # Then each document's run is one trace: ingest_document at the root, every activity under it
    assert {span.resource.get("service.name") for span in spans} == {names.SERVICE_NAME}
    for doc_id in doc_ids.values():
        root = one(spans, names.SPAN_ORCHESTRATION, doc_id)
        assert root.attributes[names.OUTCOME] == "indexed"
        run = [span for span in spans if span.trace_id == root.trace_id]
        assert {span.attributes.get(names.DOC_ID) for span in run} == {doc_id}
        for stage in ACTIVITIES:
            activity = one(spans, stage, doc_id)
            assert activity.trace_id == root.trace_id
            assert activity.parent_span_id == root.span_id
            assert activity.attributes[names.STAGE] == stage
            assert activity.attributes[names.VERSION] == root.attributes[names.VERSION]
            assert activity.attributes[names.INSTANCE_ID] == root.attributes[names.INSTANCE_ID]
        # And each external call is a client span beneath the activity that made it, with the same fields
        activities = {span.span_id: span for span in run if span.name in ACTIVITIES}
        calls = [span for span in run if span.kind == "CLIENT"]
        assert set(CLIENT_SPANS) <= {span.name for span in calls}
        for call in calls:
            parent = activities[call.parent_span_id]
            for key in names.CORRELATION:
                assert call.attributes[key] == parent.attributes[key], (call.name, key)

    # And the pipeline's metrics arrived
    exported = {point.name for point in points}
    assert set(METRICS) <= exported, exported
    durations = {p.attributes.get(names.STAGE) for p in points if p.name == names.STAGE_DURATION.name}
    assert set(ACTIVITIES) - {"record_outcome"} <= durations
    assert any(p.value for p in points if p.name == names.EMBEDDING_TOKENS.name)
    # (jobs by status: read from the job store at most every 30 s, so the counts may be those of an earlier moment)
    assert all(set(p.attributes) == {names.STATUS} for p in points if p.name == names.JOBS.name)

    # And the project's logs arrived, each once, those of a run carrying its correlation fields
    assert logs, "no log record was exported"
    assert {record.scope.split(".")[0] for record in logs} == {names.LOGGER}
    repeated = [key for key, count in Counter((r.body, r.time_ns) for r in logs).items() if count > 1]
    assert not repeated, repeated
    runs = {span.trace_id: span.attributes[names.DOC_ID] for span in spans if span.name == names.SPAN_ORCHESTRATION}
    in_runs = [record for record in logs if record.trace_id in runs]
    assert in_runs, "no log record was written inside a run"
    for record in in_runs:
        assert record.attributes.get(names.DOC_ID) == runs[record.trace_id], record

    # And no document text left the process in a span or a log record
    exported_text = json.dumps(
        [[s.name, s.attributes, s.status_message] for s in spans] + [[r.body, r.attributes] for r in logs],
        default=str,
        ensure_ascii=False,
    )
    for sentence in DOCUMENT_TEXT:
        assert sentence not in exported_text


def test_the_host_stops_promptly_when_no_collector_listens(tmp_path: Path) -> None:
    """With OTLP configured but nothing listening, the host ingests, and SIGTERM stops it with exit code 0."""
    env = host_env(tmp_path, f"http://127.0.0.1:{free_port()}")  # a free port: nobody listens there
    with devhost(env, tmp_path / "host.log") as host:
        drop_samples(env)
        host.wait_indexed(SAMPLES)
        took_s = host.stop()
        assert host.process.returncode == 0, host.output()
    # (without waiting out the exporters' retries: the figure shows in the message should this fail)
    assert "nothing listens at" in host.output(), f"stopped in {took_s:.2f} s\n{host.output()}"


CONSOLE_SCRIPT = """
from ingestion import telemetry

telemetry.start()
with telemetry.current().activity("fetch_blob", "doc-1", "etag-1", "instance-1"):
    pass
telemetry.shutdown()
"""


def test_console_telemetry_prints_spans_and_metrics_as_json_on_stderr() -> None:
    """INGEST_TELEMETRY=console: the activity's span, under its run's root, and its metrics are JSON on stderr."""
    done = subprocess.run(
        [sys.executable, "-c", CONSOLE_SCRIPT],
        check=False,
        cwd=REPO,
        env=environment_without("INGEST_", "OTEL_") | {"INGEST_TELEMETRY": "console"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    # The console exporters pretty-print: each object starts with "{" at the start of a line.
    decoder = json.JSONDecoder()
    printed = [decoder.raw_decode(done.stderr, at.start())[0] for at in re.finditer(r"^\{", done.stderr, re.M)]
    (span,) = [entry for entry in printed if "context" in entry]
    trace_id, root_id = run_ids("instance-1")
    assert span["name"] == "fetch_blob"
    assert span["context"]["trace_id"] == f"0x{trace_id:032x}"
    assert span["parent_id"] == f"0x{root_id:016x}"
    assert span["attributes"] == {
        "doc_id": "doc-1",
        "version": "etag-1",
        "stage": "fetch_blob",
        "instance_id": "instance-1",
        "outcome": "ok",
    }
    metrics = [
        metric["name"]
        for entry in printed
        for resource in entry.get("resource_metrics", ())
        for scope in resource["scope_metrics"]
        for metric in scope["metrics"]
    ]
    assert names.STAGE_DURATION.name in metrics


def test_the_collector_reads_gzip_compressed_exports() -> None:
    """OTEL_EXPORTER_OTLP_COMPRESSION=gzip: the local collector decodes what the exporter compressed."""
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    with provider.get_tracer("test").start_as_current_span("embedder.embed", attributes={"doc_id": "doc-1"}):
        pass
    with OtlpCollector() as collector:
        exporter = OTLPSpanExporter(endpoint=f"{collector.url}/v1/traces", compression=Compression.Gzip)
        assert exporter.export(spans.get_finished_spans()).name == "SUCCESS"
        exporter.shutdown()
        (span,) = collector.spans
    assert (span.name, span.attributes, span.parent_span_id) == ("embedder.embed", {"doc_id": "doc-1"}, "")


def test_the_collector_runs_standalone_and_prints_what_it_receives() -> None:
    """``python -m tests.emulators.otlp_collector`` (README's way to watch the local host's telemetry)
    says where it listens, prints each span it receives, and stops on Ctrl-C."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.emulators.otlp_collector", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline().decode()
        assert f"OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:{port}" in first, first
        provider = TracerProvider()
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces"))
        )
        provider.get_tracer("test").start_span("standalone-check").end()
        provider.shutdown()
        printed = process.stdout.readline().decode()
        assert "standalone-check" in printed, printed
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=STOP_HANG_GUARD_S) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
