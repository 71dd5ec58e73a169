"""Every span, metric and attribute name the pipeline emits: the one place they are spelled.

Dashboards, alert rules (``infra/monitoring``) and tests refer to these names; a test checks that
every name the infra queries use is defined here. Attribute keys are short and unprefixed
(``doc_id``, not ``ingestion.doc_id``) so that an Application Insights query reads
``customDimensions.doc_id`` and a Grafana/Tempo query ``{ span.doc_id = "..." }``.
"""

from __future__ import annotations

from dataclasses import dataclass

SERVICE_NAME = "ingestion"  # the OpenTelemetry service.name (cloud_RoleName in Application Insights)
LOGGER = "ingestion"  # the project's logger: the only one whose records the pipeline exports itself

# ------------------------------------------------------------------ spans
# One span per activity, named after the activity (``fetch_blob`` ... ``record_outcome``), one per
# external call named ``<port>.<operation>`` (``embedder.embed``, ``index.upsert``), and these:
SPAN_ORCHESTRATION = "ingest_document"  # a document version's run, queued -> outcome (the trace's root)
SPAN_START = "start_ingestion"  # a trigger or the reconciler registering a version and starting it
SPAN_DELETE = "remove_deleted_blob"
SPAN_RECONCILE = "reconcile"

# ------------------------------------------------------------------ attributes
DOC_ID = "doc_id"
VERSION = "version"  # the blob's ETag the run works on
STAGE = "stage"
INSTANCE_ID = "instance_id"
OUTCOME = "outcome"  # stage: ok|transient|permanent|superseded|crashed; document: the job's final status
REASON = "reason"  # the reason code of an error or of a document's outcome
KIND = "kind"  # a retry's error code (throttled, timeout, http_503, ...)
ATTEMPT = "attempt"  # which try of an activity (1 first; a retry after a transient failure is 2...)
TRIGGER = "trigger"  # what started a run: event|reconciler
STATUS = "status"  # a job status
RULE = "rule"  # a reconciler rule
SERVICE = "service"  # an SDK's service: blob, cosmos, search, openai
PORT = "port"  # blob, artifacts, jobs, index, embedder
OPERATION = "operation"
ITEMS = "items"  # inputs, records or ids in one external call
TOKENS = "tokens"
PATH = "path"  # the blob's name (a run's root span: what a person searches for)
CHUNKS = "chunks"  # chunks a run left in the index
DRY_RUN = "dry_run"  # a reconciler pass that only planned
ACTIONS = "actions"  # actions a reconciler pass took or planned
FAILED_SWEEPS = "failed_sweeps"
SEEN = "seen."  # + sweep (blobs, jobs, chunks): items a reconciler pass read
CORRELATION = (DOC_ID, VERSION, STAGE, INSTANCE_ID)  # on every span and log record of a run


# ------------------------------------------------------------------ metrics
@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    description: str


DOCUMENTS_STARTED = Metric("ingestion.documents.started", "{document}", "Runs started, by trigger")
DOCUMENTS_FINISHED = Metric(
    "ingestion.documents.finished", "{document}", "Runs finished, by outcome (the job's status) and reason code"
)
STAGE_DURATION = Metric("ingestion.stage.duration", "s", "One activity's duration, by stage and outcome")
RETRIES = Metric("ingestion.retries", "{retry}", "Transient failures of a stage (each is retried), by stage and kind")
SDK_RETRIES = Metric("ingestion.sdk.retries", "{retry}", "Retries the Azure SDKs made inside one call, by service")
THROTTLED = Metric("ingestion.throttled", "{response}", "429 responses seen, by service")
EMBEDDING_TOKENS = Metric("ingestion.embedding.tokens", "{token}", "Tokens sent to the embedding model")
EMBEDDING_REQUESTS = Metric("ingestion.embedding.requests", "{request}", "Embedding calls")
INDEX_BATCH = Metric("ingestion.index.batch_size", "{document}", "Records per index upsert or delete, by operation")
E2E_LATENCY = Metric("ingestion.e2e.latency", "s", "Blob last-modified to searchable, per indexed version")
JOBS = Metric("ingestion.jobs", "{job}", "Job documents by status")
BACKLOG_AGE = Metric("ingestion.backlog.age", "s", "Age of the oldest job not finished (queued or retry_later)")
RECONCILER_ACTIONS = Metric("ingestion.reconciler.actions", "{action}", "Reconciler actions taken, by rule")

METRICS = (
    DOCUMENTS_STARTED,
    DOCUMENTS_FINISHED,
    STAGE_DURATION,
    RETRIES,
    SDK_RETRIES,
    THROTTLED,
    EMBEDDING_TOKENS,
    EMBEDDING_REQUESTS,
    INDEX_BATCH,
    E2E_LATENCY,
    JOBS,
    BACKLOG_AGE,
    RECONCILER_ACTIONS,
)
