"""What one run leaves in telemetry, through function_app.py on the devhost engine: the spans, their
attributes and trace, the metric points and the log records of a full ingestion, a transient retry
and a permanent failure (OpenTelemetry's in-memory exporters; the services' ports are traced as in
production)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from opentelemetry.trace import SpanKind, StatusCode

import function_app
from ingestion import telemetry
from ingestion.bootstrap import using_services
from ingestion.devhost.host import Host
from ingestion.errors import TransientError
from ingestion.model import JobStatus
from ingestion.reconcile_run import ACTIONS, reconcile
from ingestion.retry import SDK_RETRIES, THROTTLED
from ingestion.telemetry import BACKLOG, names
from ingestion.telemetry.runs import run_ids
from ingestion.tokens import Tokenizer
from ingestion.workflow import RECORD_OUTCOME, STAGE_ACTIVITIES
from tests.fakes import InMemoryBlobSource, InMemoryJobStore
from tests.functions.conftest import GatedEmbedder, GatedIndex, Running, make_services
from tests.unit.parsers.conftest import minimal_pdf
from tests.unit.telemetry_helpers import Recorded, recording

pytestmark = pytest.mark.timeout(120)

MARKER = "Quokkas-on-the-veranda-7731"  # in the document only: must never reach a log or a span
TEXT = (f"Employees get twenty five days of paid leave per year. {MARKER}. Requests go to the manager. " * 40).encode()
ACTIVITIES = (*STAGE_ACTIVITIES, RECORD_OUTCOME)


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    """Telemetry recorded in memory for the test, the project's logs exported through OpenTelemetry."""
    with recording() as found:
        yield found


@pytest.fixture
def traced(tokenizer: Tokenizer, tmp_path: Path, recorded: Recorded) -> Iterator[Running]:
    """function_app.py on the devhost over fakes whose ports are traced, as ``build_services`` does."""
    services = telemetry.instrument(make_services(tokenizer, tmp_path, max_file_bytes=1_000_000))
    blobs, jobs = telemetry.untraced(services.blobs), telemetry.untraced(services.jobs)
    index, embedder = telemetry.untraced(services.index), telemetry.untraced(services.embedder)
    assert isinstance(blobs, InMemoryBlobSource) and isinstance(jobs, InMemoryJobStore)
    assert isinstance(index, GatedIndex) and isinstance(embedder, GatedEmbedder)
    with using_services(services):
        host = Host(
            function_app.app, data_dir=tmp_path / "host", blob_source=blobs, port=0, activity_workers=2,
            watch_interval_s=0.02,
        )  # fmt: skip
        with host:
            yield Running(host, services, blobs, jobs, index.inner, embedder.inner, embedder, index)


def _hex(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def test_a_full_ingestion_is_one_trace_with_a_span_per_activity_and_call(traced: Running, recorded: Recorded) -> None:
    """Every activity and external call of a run is a span of one trace whose root is ingest_document."""
    traced.blobs.put("handbook.txt", TEXT)
    traced.settle()
    job = traced.job("handbook.txt")
    assert job.status is JobStatus.INDEXED and job.instance_id is not None
    trace_id, root_id = run_ids(job.instance_id)

    (root,) = recorded.named(names.SPAN_ORCHESTRATION)
    assert (root.context.trace_id, root.context.span_id, root.parent) == (trace_id, root_id, None)
    assert root.kind is SpanKind.CONSUMER
    assert root.attributes is not None
    assert root.attributes[names.OUTCOME] == "indexed"
    assert root.attributes[names.DOC_ID] == job.doc_id
    assert root.start_time is not None and root.end_time is not None
    assert root.start_time <= min(span.start_time or 0 for span in recorded.named("fetch_blob"))

    activity_ids = set()
    for name in ACTIVITIES:
        (span,) = recorded.named(name)
        activity_ids.add(span.context.span_id)
        assert span.context.trace_id == trace_id
        assert span.parent is not None and span.parent.span_id == root_id  # under the run's root
        assert (
            dict(span.attributes or {}).items()
            >= {
                names.DOC_ID: job.doc_id,
                names.VERSION: job.version.etag,
                names.STAGE: name,
                names.INSTANCE_ID: job.instance_id,
                names.OUTCOME: "ok",
            }.items()
        )
    (start,) = recorded.named(names.SPAN_START)
    assert start.context.trace_id == trace_id
    assert (start.attributes or {})[names.TRIGGER] == "event"

    calls = [span for span in recorded.finished() if span.kind is SpanKind.CLIENT and span.context.trace_id == trace_id]
    made = Counter(span.name for span in calls)
    for call in ("blob.read", "embedder.embed", "index.upsert", "jobs.replace", "artifacts.put"):
        assert made[call] >= 1, call
    for span in calls:
        attributes = span.attributes or {}
        assert attributes[names.DOC_ID] == job.doc_id and attributes[names.INSTANCE_ID] == job.instance_id
        assert span.parent is not None and span.parent.span_id in activity_ids
        assert attributes[names.STAGE] == next(
            a.name for a in recorded.finished() if a.context.span_id == span.parent.span_id
        )
    embedded = sum(int((span.attributes or {})[names.TOKENS]) for span in calls if span.name == "embedder.embed")
    assert embedded > 0
    everything = " ".join(str(value) for span in recorded.finished() for value in (span.attributes or {}).values())
    assert MARKER not in everything


def test_a_full_ingestion_records_its_metric_points(traced: Running, recorded: Recorded) -> None:
    """Started and finished by outcome, stage durations, tokens, batch sizes, latency and jobs by status."""
    traced.blobs.put("handbook.txt", TEXT)
    traced.settle()
    job = traced.job("handbook.txt")
    assert recorded.value(names.DOCUMENTS_STARTED, trigger="event") == 1
    assert recorded.value(names.DOCUMENTS_FINISHED, outcome="indexed", reason="none") == 1
    for stage in ACTIVITIES:
        assert recorded.value(names.STAGE_DURATION, stage=stage, outcome="ok") == 1, stage
    assert recorded.value(names.EMBEDDING_REQUESTS) >= 1
    tokens = sum(int((s.attributes or {})[names.TOKENS]) for s in recorded.named("embedder.embed"))
    assert recorded.value(names.EMBEDDING_TOKENS) == tokens > 0
    (batch,) = [point for point in recorded.points(names.INDEX_BATCH) if point.attributes["operation"] == "upsert"]
    assert batch.sum == job.chunk_count
    (latency,) = recorded.points(names.E2E_LATENCY)
    assert latency.count == 1 and latency.sum >= 0
    assert recorded.value(names.JOBS, status="indexed") == 1
    assert recorded.value(names.RETRIES) == 0


def test_a_transient_retry_shows_as_failed_attempts_and_a_retry_count(traced: Running, recorded: Recorded) -> None:
    """Two 503s at embedding: three embed_chunks spans (two in error), two retries counted, then indexed."""
    traced.jobs.fail_on_status(JobStatus.EMBEDDING, 2, TransientError("job store 503", code="http_503"))
    traced.blobs.put("handbook.txt", TEXT)
    traced.settle()
    assert traced.job("handbook.txt").status is JobStatus.INDEXED
    attempts = recorded.named("embed_chunks")
    assert [(s.attributes or {})[names.OUTCOME] for s in attempts] == ["transient", "transient", "ok"]
    assert [s.status.status_code for s in attempts] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert all((s.attributes or {}).get(names.REASON) == "http_503" for s in attempts[:2])
    assert len({s.context.trace_id for s in attempts}) == 1  # the retries stay in the run's trace
    assert recorded.value(names.RETRIES, stage="embed_chunks", kind="http_503") == 2
    assert recorded.value(names.RETRIES) == 2
    assert recorded.value(names.STAGE_DURATION, stage="embed_chunks", outcome="transient") == 2
    assert recorded.value(names.DOCUMENTS_FINISHED, outcome="indexed") == 1


def test_a_permanent_failure_ends_the_trace_in_error_with_its_reason(traced: Running, recorded: Recorded) -> None:
    """A corrupt PDF: parse_document fails once, permanently; the run ends needs_review (corrupt)."""
    traced.blobs.put("broken.pdf", minimal_pdf("one page")[:200])
    traced.settle()
    job = traced.job("broken.pdf")
    assert job.status is JobStatus.NEEDS_REVIEW and job.instance_id is not None
    (parse,) = recorded.named("parse_document")
    assert (parse.attributes or {})[names.OUTCOME] == "permanent"
    assert (parse.attributes or {})[names.REASON] == "corrupt"
    assert parse.status.status_code is StatusCode.ERROR
    assert recorded.named("embed_chunks") == []
    (root,) = recorded.named(names.SPAN_ORCHESTRATION)
    assert (root.attributes or {})[names.OUTCOME] == "needs_review"
    assert (root.attributes or {})[names.REASON] == "corrupt"
    assert root.status.status_code is StatusCode.ERROR
    assert root.context.trace_id == parse.context.trace_id == run_ids(job.instance_id)[0]
    assert recorded.value(names.DOCUMENTS_FINISHED, outcome="needs_review", reason="corrupt") == 1
    assert recorded.value(names.STAGE_DURATION, stage="parse_document", outcome="permanent") == 1
    assert recorded.value(names.RETRIES) == 0
    assert recorded.value(names.E2E_LATENCY) == 0  # latency is for searchable versions only


def test_each_log_record_is_exported_once_with_its_run_and_without_content(traced: Running, recorded: Recorded) -> None:
    """Every record of the project's loggers reaches the exporter exactly once; a run's records carry
    its correlation fields and trace; none holds the document's text."""
    traced.jobs.fail_on_status(JobStatus.EMBEDDING, 1, TransientError("job store 503", code="http_503"))
    traced.blobs.put("handbook.txt", TEXT)
    traced.settle()
    job = traced.job("handbook.txt")
    assert job.instance_id is not None
    exported = [data.log_record for data in recorded.logs.get_finished_logs()]
    emitted = [record for record in recorded.emitted if record.name.startswith(names.LOGGER)]
    assert emitted, "the run logged nothing"
    assert Counter(str(r.body) for r in exported) == Counter(r.getMessage() for r in emitted)  # once each
    in_run = [r for r in exported if (r.attributes or {}).get(names.INSTANCE_ID) == job.instance_id]
    assert any("transient" in str(r.body) for r in in_run)  # the retry's warning, with its run
    assert any(str(r.body).startswith("started ") for r in in_run)  # the starter's too, outside any activity
    for record in in_run:
        attributes = record.attributes or {}
        assert attributes[names.DOC_ID] == job.doc_id and attributes.get(names.STAGE) in (*ACTIVITIES, None)
        assert record.trace_id == run_ids(job.instance_id)[0]
    text = " ".join(f"{r.body} {dict(r.attributes or {})}" for r in exported)
    assert MARKER not in text and "twenty five days" not in text


def test_a_deletion_and_a_reconciler_pass_are_spans_of_their_own(traced: Running, recorded: Recorded) -> None:
    """A BlobDeleted handling and a reconciler pass each leave one span saying what they did."""
    traced.blobs.put("handbook.txt", TEXT)
    traced.settle()
    doc_id = traced.job("handbook.txt").doc_id
    traced.blobs.delete("handbook.txt")
    traced.settle()
    (deletion,) = recorded.named(names.SPAN_DELETE)
    assert dict(deletion.attributes or {}) == {names.DOC_ID: doc_id, names.OUTCOME: "deleted"}
    asyncio.run(reconcile(traced.services, None, dry_run=True))
    (sweep,) = recorded.named(names.SPAN_RECONCILE)
    attributes = sweep.attributes or {}
    assert (attributes[names.DRY_RUN], attributes[names.ACTIONS], attributes[names.SEEN + "jobs"]) == (True, 0, 1)
    assert any(span.parent and span.parent.span_id == sweep.context.span_id for span in recorded.named("jobs.list"))


def test_counts_kept_elsewhere_are_observed_as_metrics(recorded: Recorded) -> None:
    """SDK retries, 429s and reconciler actions (kept by the adapters and the reconciler) and the
    backlog's age are read when metrics are collected."""
    SDK_RETRIES.add("test-observed", 3)
    THROTTLED.add("test-observed", 2)
    ACTIONS.add("test-rule")
    BACKLOG.found(datetime.now(UTC) - timedelta(minutes=10))
    try:
        assert recorded.value(names.SDK_RETRIES, service="test-observed") >= 3
        assert recorded.value(names.THROTTLED, service="test-observed") >= 2
        assert recorded.value(names.RECONCILER_ACTIONS, rule="test-rule") >= 1
        assert 600 <= recorded.value(names.BACKLOG_AGE) < 3600
    finally:
        BACKLOG.forget()
