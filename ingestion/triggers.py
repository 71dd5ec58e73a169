"""What the blob triggers do: start one orchestration per blob version, and handle deletions.

Events arrive at least once and out of order, and the Event Grid blob trigger runs against
whatever blob exists when its message is handled. So the starter reads the blob's *current*
properties (never its body), registers that version on the job document, and starts
``ingest_document`` under an instance id derived from the job document: doc id, version and the
time that version was queued. A duplicate event finds the same registration and asks for the same
id; ``start_new`` refuses an id that is Pending or Running, which is treated as "already started".
A version queued again (a re-drive, a re-upload after a delete) gets a new id, so a run of the same
version that is just stopping cannot swallow the new start; stages are idempotent, so two runs of
one version can overlap safely.

A BlobDeleted event is only believed once the blob is really gone: an old delete event for a blob
that has since been re-uploaded is ignored. The job is marked ``deleted`` before the chunks are
purged, so a run still in flight finds itself superseded and stops writing; if the blob reappears
meanwhile, its new version is ingested.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ingestion import telemetry
from ingestion.errors import PermanentError, ReasonCode
from ingestion.jobs import current_blob, register_version
from ingestion.model import DocumentRef, DocumentVersion, Job, JobStatus, stable_hash, to_iso
from ingestion.services import Services
from ingestion.stages import StageRequest, record_failure
from ingestion.stages.common import rewrite_job
from ingestion.stages.persist import purge_document, repair_index
from ingestion.telemetry import names
from ingestion.workflow import ORCHESTRATOR, orchestration_input

log = logging.getLogger(__name__)

BLOB_CREATED = "Microsoft.Storage.BlobCreated"
BLOB_DELETED = "Microsoft.Storage.BlobDeleted"
_ACTIVE = frozenset({"Pending", "Running"})


@dataclass(frozen=True)
class StartPlan:
    instance_id: str
    input: dict[str, Any]


def instance_id_for(job: Job) -> str:
    """The orchestration instance id of the job's current registration: the same for every event about it."""
    queued = job.stage_times.get(JobStatus.QUEUED.value, to_iso(job.created_at))
    return f"{job.doc_id}-{stable_hash('run', job.version.etag, queued, length=16)}"


def blob_from_subject(subject: str) -> tuple[str, str]:
    """``/blobServices/default/containers/<c>/blobs/<path>`` -> ``(c, path)``; ValueError otherwise."""
    head, separator, path = subject.partition("/blobs/")
    container = head.rpartition("/containers/")[2]
    if not separator or not path or not container or "/" in container:
        raise ValueError(f"not a blob event subject: {subject!r}")
    return container, path


def plan_ingestion(services: Services, container: str, path: str) -> StartPlan | None:
    """Register the blob's current version; the orchestration to start, or ``None`` if none is needed."""
    if container != services.blobs.container:
        log.warning("ignoring %s/%s: this app ingests container %s", container, path, services.blobs.container)
        return None
    ref = DocumentRef(container, path)
    try:
        blob = current_blob(services, path)
    except PermanentError as error:
        _record_unreadable(services, ref, error)
        return None
    if blob is None:
        log.info("%s/%s is already gone; the deletion event handles it", container, path)
        return None
    registration = register_version(services, ref, blob.version)
    if registration.gave_up:  # needs review now: its chunks leave the index, as finalize does
        purge_document(services, registration.job.doc_id)
    if not registration.start:
        log.info("%s: no run needed (%s)", registration.job.doc_id, registration.reason)
        return None
    job = registration.job
    instance_id = instance_id_for(job)
    _remember_instance(services, job, instance_id)
    request = StageRequest(job.doc_id, job.version.etag).to_payload()
    return StartPlan(instance_id, orchestration_input(request, services.settings.retry))


async def start_once(client: Any, plan: StartPlan, trigger: str = "event") -> bool:
    """Start the plan's orchestration; ``False`` when it is already pending or running.
    ``trigger`` (event, reconciler) labels the documents-started metric and the start span."""
    began = datetime.now(UTC)
    request = plan.input["request"]
    run = {names.DOC_ID: request["doc_id"], names.VERSION: request["etag"]}
    with telemetry.in_run(plan.instance_id, run):
        started = await _start(client, plan)
    attributes = run | {names.TRIGGER: trigger}
    if started:
        telemetry.current().started.add(1, {names.TRIGGER: trigger})
    telemetry.current().run_span(
        names.SPAN_START, plan.instance_id, began, attributes | {names.OUTCOME: "started" if started else "running"}
    )
    return started


async def _start(client: Any, plan: StartPlan) -> bool:
    try:
        await client.start_new(ORCHESTRATOR, plan.instance_id, plan.input)
    except Exception:
        # The SDK raises a bare Exception for every refusal: ask what the instance is doing.
        status = await client.get_status(plan.instance_id)
        runtime = getattr(getattr(status, "runtime_status", None), "value", None)
        if runtime in _ACTIVE:
            log.info("%s is already %s", plan.instance_id, runtime)
            return False
        raise
    log.info("started %s", plan.instance_id)
    return True


async def ingest_blob(services: Services, client: Any, container: str, path: str) -> bool:
    """The starter: register and start; whether an orchestration was started."""
    plan = await asyncio.to_thread(plan_ingestion, services, container, path)
    return plan is not None and await start_once(client, plan)


async def handle_blob_event(services: Services, client: Any, event_type: str, subject: str) -> str:
    """The Event Grid handler: deletions remove the document; other event types are not ours."""
    if event_type != BLOB_DELETED:
        return "ignored"
    container, path = blob_from_subject(subject)
    outcome = await asyncio.to_thread(remove_blob, services, container, path)
    if outcome == "deleted" and await asyncio.to_thread(_exists, services, path):
        await ingest_blob(services, client, container, path)  # re-uploaded while we deleted
        return "deleted, then re-uploaded"
    return outcome


def remove_blob(services: Services, container: str, path: str) -> str:
    """Mark the job ``deleted`` and purge its chunks, if the blob is really gone (one span)."""
    doc_id = DocumentRef(container, path).doc_id
    with telemetry.current().tracer.start_as_current_span(names.SPAN_DELETE, attributes={names.DOC_ID: doc_id}) as span:
        outcome = _remove_blob(services, container, path)
        span.set_attribute(names.OUTCOME, outcome)
        return outcome


def _remove_blob(services: Services, container: str, path: str) -> str:
    if container != services.blobs.container:
        return "other container"
    if _exists(services, path):
        return "blob exists"  # a stale or duplicate event: the blob was uploaded again
    doc_id = DocumentRef(container, path).doc_id
    rewrite_job(
        services,
        doc_id,
        lambda job: None if job is None or job.status is JobStatus.DELETED else _deleted(services, job),
    )
    removed = purge_document(services, doc_id)
    current = services.jobs.get(doc_id)
    if current is not None and current.status is not JobStatus.DELETED:
        repair_index(services, doc_id)  # re-uploaded and indexed while we purged: put its chunks back
    log.info("%s: blob deleted, %d chunks removed", doc_id, removed)
    return "deleted"


def _deleted(services: Services, job: Job) -> Job:
    return job.transition(
        JobStatus.DELETED,
        services.clock(),
        "blob deleted",
        retry_at=None,
        indexed_hash=None,
        chunk_count=0,
        chunk_ids_digest=None,
    )


def _exists(services: Services, path: str) -> bool:
    try:
        return current_blob(services, path) is not None
    except PermanentError as error:
        if error.reason is ReasonCode.INVALID_NAME:  # no properties for such a name: is it listed?
            return any(blob.path == path for blob in services.blobs.list(path))
        raise


def _record_unreadable(services: Services, ref: DocumentRef, error: PermanentError) -> None:
    """A blob whose very properties cannot be read (e.g. a local name that is not UTF-8): its job
    ends ``needs_review`` with the reason, under a version that stands for "unreadable"."""
    log.warning("%s: cannot be ingested: %s", ref.path, error.message)
    etag = f"unreadable-{stable_hash(error.reason.value, error.message, length=16)}"
    version = DocumentVersion(etag=etag, size=0, last_modified=services.clock())
    registration = register_version(services, ref, version)
    if registration.start:
        record_failure(services, StageRequest(ref.doc_id, etag), "start_ingestion", error)


def _remember_instance(services: Services, job: Job, instance_id: str) -> None:
    def change(current: Job | None) -> Job | None:
        if current is None or current.version.etag != job.version.etag or current.instance_id == instance_id:
            return None  # gone, or moved on to another version, or already recorded
        return replace(current, instance_id=instance_id)

    rewrite_job(services, job.doc_id, change)
