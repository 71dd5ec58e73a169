"""Found by an adversarial review of the telemetry (issue 6): each test pins one behaviour, most of
them a bug that was fixed (a malformed connection string, an env sampler splitting runs, a run's end
counted twice, gauge readings traced and uncached, iterator spans never ended, lost ETag races shown
as failures); the others document behaviour verified good."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import StatusCode

from ingestion import activities, telemetry
from ingestion.api import health
from ingestion.bootstrap import using_services
from ingestion.errors import ConcurrencyError, TransientError
from ingestion.model import JobStatus
from ingestion.services import Services
from ingestion.telemetry import names
from ingestion.telemetry.runs import run_ids
from ingestion.telemetry.traced import Traced
from ingestion.workflow import STAGE_ACTIVITIES
from tests.emulators.process import environment_without
from tests.fakes import InMemoryJobStore
from tests.unit.pipeline_helpers import upload
from tests.unit.telemetry_helpers import Recorded, recording

REPO = Path(__file__).resolve().parents[2]
TEXT = b"Employees get twenty five days of paid leave per year. Requests go to the manager. " * 30


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    """Spans and metrics recorded in memory, through providers like the ones ``configure`` installs."""
    with recording() as found:
        yield found


def _run_to_persist(services: Services, instance_id: str) -> dict[str, Any]:
    """Every stage activity of one run of a new upload; the ``indexed`` outcome record_outcome gets."""
    request = upload(services, "handbook.txt", TEXT).to_payload() | {"instance_id": instance_id}
    result: Any = None
    for stage in STAGE_ACTIVITIES:
        envelope = activities.run_stage(services, stage, request)
        assert envelope["ok"], envelope
        result = envelope["result"]
    return {"request": request, "stage": STAGE_ACTIVITIES[-1], "outcome": "indexed", "result": result, "error": None}


# ------------------------------------------------------------------ bugs (fail on the current code)


def test_a_redelivered_record_outcome_counts_the_document_once(services: Services, recorded: Recorded) -> None:
    """Durable runs an activity at least once (a worker lost after the activity, the crash net): the
    second record_outcome finds the job already indexed and must not count a second finished
    document, a second e2e latency, nor emit a second root span with the run's very span id."""
    outcome = _run_to_persist(services, "run-1")
    first = activities.record_outcome(services, outcome)
    again = activities.record_outcome(services, outcome)
    assert first == again  # the same answer both times: the job was written once
    roots = recorded.named(names.SPAN_ORCHESTRATION)
    assert [span.context.span_id for span in roots] == [run_ids("run-1")[1]]  # one root, not two with one id
    assert recorded.value(names.DOCUMENTS_FINISHED) == 1
    assert recorded.value(names.E2E_LATENCY) == 1


def test_collecting_the_jobs_gauge_makes_no_spans(services: Services, recorded: Recorded) -> None:
    """Every metric collection (each minute, on each instance) reads jobs by status; through the
    traced port each reading is a root ``jobs.count_by_status`` span, one trace of its own: a
    dependency a minute per instance in Application Insights, tied to no run."""
    with using_services(telemetry.instrument(services)):
        assert recorded.value(names.JOBS) == 0  # collected (no job yet)
    assert recorded.named("jobs.count_by_status") == []


class _CountingJobs(InMemoryJobStore):
    def __init__(self) -> None:
        super().__init__()
        self.counted = 0

    def count_by_status(self) -> dict[JobStatus, int]:
        self.counted += 1
        return super().count_by_status()


def test_health_probes_share_the_cached_job_counts(services: Services) -> None:
    """runtime._JOBS_TTL_S says one job-store count serves metric collections *and health probes*;
    health() runs count_by_status (a cross-partition aggregate on Cosmos DB) on every call of an
    anonymous endpoint that load balancers and uptime checks poll."""
    jobs = _CountingJobs()
    with using_services(dataclasses.replace(services, jobs=jobs)) as shared:
        health(shared)
        health(shared)
    assert jobs.counted == 1


class _Listing:
    """A port whose ``list`` returns a generator (as the adapters' listings and reads do)."""

    def list(self, prefix: str = "") -> Iterator[str]:
        yield from ("a", "b")


def test_a_traced_iterator_closed_before_its_first_item_ends_its_span(recorded: Recorded) -> None:
    """``_ending`` is a generator: closing one that never started runs no ``finally``, so the span of
    a read or listing given up before its first item (``put_stream`` failing before it pulls from
    fetch's ``_Digest``, an early ``break`` elsewhere) is never ended nor exported."""
    port: Any = Traced(_Listing(), "artifacts", frozenset({"list"}))
    items = port.list("x/")
    items.close()
    assert [span.name for span in recorded.named("artifacts.list")] == ["artifacts.list"]


class _Racing:
    def replace(self, job: object) -> object:
        raise ConcurrencyError("412: the document changed")


def test_a_lost_etag_race_is_an_outcome_not_a_failed_dependency(recorded: Recorded) -> None:
    """An optimistic write losing its race is the design at work (the caller re-reads and retries):
    the span says ``conflict`` and is not marked failed, or every race would read as an outage."""
    port: Any = Traced(_Racing(), "jobs", frozenset({"replace"}))
    with pytest.raises(ConcurrencyError):
        port.replace(object())
    (span,) = recorded.named("jobs.replace")
    assert (span.attributes or {})[names.OUTCOME] == "conflict"
    assert span.status.status_code is StatusCode.UNSET and not span.events


def _in_child(code: str, env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess[str]:
    """``code`` in a fresh process (OpenTelemetry's providers are set once a process), with the
    distro kept off the network: no statsbeat, no control plane, no VM metadata probe."""
    keep = environment_without("OTEL_", "APPLICATIONINSIGHTS_")
    keep.pop("INGEST_TELEMETRY", None)
    offline = {
        "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
        "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
        "OTEL_EXPERIMENTAL_RESOURCE_DETECTORS": "azure_app_service",
        "TMPDIR": str(tmp),  # the exporter's offline storage
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=keep | offline | env,
        check=False,
        capture_output=True,
        text=True,
        timeout=120,  # a bound on a hang, not a timing assertion
    )


_START = "from ingestion import telemetry; print('exporter', telemetry.start().exporter); telemetry.shutdown(0.5)"
# A connection string that parses, whose endpoint refuses at once (nothing listens on port 9).
_LOCAL_APPINSIGHTS = "InstrumentationKey=00000000-0000-0000-0000-000000000000;IngestionEndpoint=http://127.0.0.1:9/"


def test_a_malformed_connection_string_does_not_stop_the_app_from_starting(tmp_path: Path) -> None:
    """``start()`` promises a bad setting is logged, never raised; function_app.py calls it at import,
    so the distro's ValueError for a connection string that does not parse takes every function of
    the app down (and the devhost's configure() with it)."""
    child = _in_child(_START, {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=not-a-guid"}, tmp_path)
    assert child.returncode == 0, child.stderr[-2000:]
    assert "telemetry off" in child.stderr


_SAMPLED_RUNS = """
from datetime import UTC, datetime
from opentelemetry import trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from ingestion import telemetry
from ingestion.telemetry import names
telemetry.start()
kept = InMemorySpanExporter()  # receives the sampled spans only
trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(kept))
current = telemetry.current()
for n in range(40):
    with current.activity("fetch_blob", "doc", "v1", f"run-{n}"):
        pass
    current.run_span(names.SPAN_ORCHESTRATION, f"run-{n}", datetime.now(UTC), {}, root=True)
traces = {}
for span in kept.get_finished_spans():
    traces.setdefault(span.context.trace_id, set()).add(span.name)
print("torn", sum(len(found) != 2 for found in traces.values()), "kept", len(traces))
telemetry.shutdown(0.5)
"""


def test_runs_are_sampled_whole_whatever_otel_traces_sampler_says(tmp_path: Path) -> None:
    """The distro prefers ``OTEL_TRACES_SAMPLER`` (a standard variable) to our ``sampling_ratio``: with
    ``parentbased_trace_id_ratio`` the activities, whose remote parent is marked sampled, are all
    kept while the roots are sampled by ratio, so about half the runs are torn (spans, no root)."""
    env = {
        "APPLICATIONINSIGHTS_CONNECTION_STRING": _LOCAL_APPINSIGHTS,
        "INGEST_TRACE_SAMPLING": "0.5",
        "OTEL_TRACES_SAMPLER": "parentbased_trace_id_ratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.5",
    }
    child = _in_child(_SAMPLED_RUNS, env, tmp_path)
    assert child.returncode == 0, child.stderr[-2000:]
    torn, kept = child.stdout.split()[1::2]
    assert torn == "0" and 0 < int(kept) < 40


def test_runs_are_sampled_whole_by_ingest_trace_sampling(tmp_path: Path) -> None:
    """The distro's sampler with INGEST_TRACE_SAMPLING=0.5: some runs kept, each with its root."""
    env = {"APPLICATIONINSIGHTS_CONNECTION_STRING": _LOCAL_APPINSIGHTS, "INGEST_TRACE_SAMPLING": "0.5"}
    child = _in_child(_SAMPLED_RUNS, env, tmp_path)
    assert child.returncode == 0, child.stderr[-2000:]
    torn, kept = child.stdout.split()[1::2]
    assert torn == "0" and 0 < int(kept) < 40


# ------------------------------------------------------------------ verified good


def test_a_malformed_otlp_setting_does_not_stop_the_app_from_starting(tmp_path: Path) -> None:
    """The OTLP exporters shrug off bad OTEL_* values (a timeout that is not a number, an unknown
    compression, a missing certificate): start() returns and the process exits."""
    child = _in_child(
        _START,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "abc",
            "OTEL_EXPORTER_OTLP_COMPRESSION": "zip",
            "OTEL_EXPORTER_OTLP_CERTIFICATE": "/nonexistent.pem",
        },
        tmp_path,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert "exporter otlp" in child.stdout


def test_a_traced_iterator_closed_midway_ends_its_span_without_error(recorded: Recorded) -> None:
    """Closed after its first item (an early ``break``), the span ends, and is not marked failed."""
    port: Any = Traced(_Listing(), "artifacts", frozenset({"list"}))
    items = port.list("x/")
    assert next(items) == "a"
    items.close()
    (span,) = recorded.named("artifacts.list")
    assert span.status.status_code is StatusCode.UNSET


def test_a_transient_record_outcome_then_its_retry_count_the_document_once(
    services: Services, recorded: Recorded
) -> None:
    """The outcome written but its answer lost (a transient error after the write): the retry finds
    the job indexed and counts it; the failed attempt counted nothing."""
    outcome = _run_to_persist(services, "run-2")
    store = services.jobs
    assert isinstance(store, InMemoryJobStore)
    replace = store.replace

    def lost_answer(job: Any) -> Any:
        replace(job)
        raise TransientError("the write's answer was lost", code="timeout")

    store.replace = lost_answer  # type: ignore[method-assign]
    assert not activities.record_outcome(services, outcome)["ok"]
    store.replace = replace  # type: ignore[method-assign]
    retry = outcome | {"attempt": 2}  # the orchestrator's second call (``attempt``: ignored until the fix)
    assert activities.record_outcome(services, retry)["result"]["status"] == "indexed"
    assert recorded.value(names.DOCUMENTS_FINISHED) == 1
    assert len(recorded.named(names.SPAN_ORCHESTRATION)) == 1
