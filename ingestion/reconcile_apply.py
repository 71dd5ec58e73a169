"""Carrying out the reconciler's actions, and what it asks of the Durable runtime.

Every action is claimed first against the job document as it was seen (an ETag-guarded write that
puts the rule on the trail without changing the instance id); a re-drive is then written against
the claim, so a concurrent reconciler or the pipeline moving the job makes this one stand down. A
stuck instance is terminated and waited for (terminate is asynchronous) before the job is queued
again. ``apply`` never raises: a fault or a bug fails that action only, with the outcome saying why.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from ingestion.errors import ConcurrencyError, IngestionError, TransientError
from ingestion.jobs import current_blob
from ingestion.model import ErrorInfo, Job, JobStatus
from ingestion.reconcile import ACTIVE, ENDED, Action, Orchestration, Rule, Timing, noted
from ingestion.services import Services
from ingestion.stages.common import rewrite_job
from ingestion.stages.persist import purge_document
from ingestion.triggers import StartPlan, plan_ingestion, remove_blob, start_once

log = logging.getLogger(__name__)

_FIRST_POLL_S = 0.05  # terminate usually takes effect at once: poll soon, then back off
_POLL_S = 0.5
T = TypeVar("T")


class Orchestrations(Protocol):
    """What the reconciler asks of the Durable runtime."""

    async def state(self, instance_id: str) -> Orchestration: ...

    async def start(self, plan: StartPlan) -> bool: ...

    async def terminate(self, instance_id: str, reason: str) -> None: ...

    async def purge_ended(self, before: datetime) -> int: ...


class DurableOrchestrations:
    """``Orchestrations`` over an ``azure-functions-durable`` client (in Azure and on the local host).

    The client raises a bare ``Exception`` for every refusal and unexpected HTTP status (a host
    restarting, a 404 on terminate): each becomes a ``TransientError``, so one action fails and the
    next pass sees the document again, instead of the pass stopping before it saves its cursors.
    """

    def __init__(self, client: Any) -> None:
        self._client = client

    async def state(self, instance_id: str) -> Orchestration:
        status = await _durable(f"status of {instance_id}", self._client.get_status(instance_id))
        runtime = getattr(getattr(status, "runtime_status", None), "value", None)
        return Orchestration(instance_id, runtime, getattr(status, "last_updated_time", None))

    async def start(self, plan: StartPlan) -> bool:
        return await _durable(f"start of {plan.instance_id}", start_once(self._client, plan, trigger="reconciler"))

    async def terminate(self, instance_id: str, reason: str) -> None:
        await _durable(f"terminate {instance_id}", self._client.terminate(instance_id, reason))

    async def purge_ended(self, before: datetime) -> int:
        import azure.durable_functions as df  # noqa: PLC0415 -- only the Durable path needs it

        ended = [
            df.OrchestrationRuntimeStatus.Completed,
            df.OrchestrationRuntimeStatus.Failed,
            df.OrchestrationRuntimeStatus.Terminated,
        ]
        result = await _durable(
            "history purge",
            self._client.purge_instance_history_by(
                created_time_from=datetime(2000, 1, 1, tzinfo=before.tzinfo),
                created_time_to=before,
                runtime_status=ended,
            ),
        )
        return int(getattr(result, "instances_deleted", 0) or 0)


async def _durable(what: str, call: Awaitable[T]) -> T:
    try:
        return await call
    except Exception as error:  # the Durable client's only exception type
        raise TransientError(f"durable client: {what}: {error}") from error


def needs_client(action: Action) -> bool:
    return action.rule in (Rule.MISSED_TRIGGER, Rule.RETRY_DUE, Rule.ORCHESTRATION_LOST, Rule.INDEX_MISMATCH)


async def apply(services: Services, orchestrations: Orchestrations | None, action: Action, timing: Timing) -> str:
    """Carry out ``action``; a short outcome for the log and the report. Never raises for a fault."""
    return await outcome_of(action, _carry_out(services, orchestrations, action, timing))


async def outcome_of(action: Action, work: Awaitable[str]) -> str:
    """``work``'s outcome; a fault or a bug fails this action only, and the outcome says why."""
    try:
        return await work
    except IngestionError as error:  # a service fault: the next pass sees the same view again
        log.warning("reconcile %s failed: %s", action.describe(), error.message)
        return f"failed: {error.kind}: {error.message}"
    except Exception as error:
        # A bug in one action must not stop the pass: its cursors are saved only at the end, so
        # every later pass would stop at the same document and nothing after it would be repaired.
        log.exception("reconcile %s failed unexpectedly", action.describe())
        return f"failed: unexpected {type(error).__name__}: {error}"


async def _carry_out(services: Services, orchestrations: Orchestrations | None, action: Action, timing: Timing) -> str:
    claimed: Job | None = None
    if action.job_etag is not None:
        claimed = await asyncio.to_thread(_claim, services, action)
        if claimed is None:
            return "skipped: the job changed since it was seen"
    if action.rule is Rule.BLOB_DELETED:
        return await asyncio.to_thread(remove_blob, services, services.blobs.container, action.path)
    purge_only = action.rule is Rule.INDEX_MISMATCH and claimed is not None and claimed.status is not JobStatus.INDEXED
    if action.rule is Rule.ORPHAN_CHUNKS or purge_only:
        purge = _purge_orphan if action.rule is Rule.ORPHAN_CHUNKS else _purge_not_indexed
        return f"purged {await asyncio.to_thread(purge, services, action)} chunks"
    assert orchestrations is not None  # needs_client: runs without one stop at "planned"
    return await _redrive(services, orchestrations, action, claimed)


async def _redrive(services: Services, orchestrations: Orchestrations, action: Action, claimed: Job | None) -> str:
    """Start the document's orchestration again (terminating a stuck one first)."""
    if action.terminate:
        await orchestrations.terminate(action.terminate, f"reconciler: {action.reason}")
        if not await _ended(orchestrations, action.terminate, services.settings.reconcile.terminate_wait_s):
            return f"terminating {action.terminate}; re-driven by a later pass"
    if claimed is not None and action.rule in (Rule.ORCHESTRATION_LOST, Rule.INDEX_MISMATCH):
        requeued = await asyncio.to_thread(_requeue, services, action, claimed)
        if requeued is None:
            return "skipped: the job changed since it was claimed"
        if requeued.status is JobStatus.NEEDS_REVIEW:
            await asyncio.to_thread(purge_document, services, action.doc_id)
            return "needs_review: re-driven too often"
    plan = await asyncio.to_thread(plan_ingestion, services, services.blobs.container, action.path)
    if plan is None:
        return await asyncio.to_thread(_not_started, services, action)
    if claimed is None:  # no job was there to claim: the one just registered carries the rule
        await asyncio.to_thread(note_on_trail, services, action.doc_id, action.note)
    return await start_run(orchestrations, plan)


async def start_run(orchestrations: Orchestrations, plan: StartPlan) -> str:
    """Start the plan's orchestration; the outcome for the report."""
    started = await orchestrations.start(plan)
    return f"started {plan.instance_id}" if started else f"{plan.instance_id} already running"


def _not_started(services: Services, action: Action) -> str:
    """Why registering started nothing (a re-drive that gave up: registering purged its chunks)."""
    job = services.jobs.get(action.doc_id)
    if action.rule is Rule.RETRY_DUE and job is not None and job.status is JobStatus.NEEDS_REVIEW:
        return "needs_review: re-driven too often"
    return "nothing to start"


def note_on_trail(services: Services, doc_id: str, note: str) -> None:
    """Put ``note`` on the job's trail (when there is a job), so an operator sees why it moved. A note,
    not a transition: a transition to the same status would move its stage time, and with it the
    instance id a duplicate event derives, which would then start a second run of the same version."""
    rewrite_job(services, doc_id, lambda job: None if job is None else noted(job, services.clock(), note))


def _claim(services: Services, action: Action) -> Job | None:
    """Put the rule on the job's trail, if the job is still as seen (the ETag guard); else ``None``."""
    job = services.jobs.get(action.doc_id)
    if job is None or job.etag != action.job_etag:
        return None
    try:
        return services.jobs.replace(noted(job, services.clock(), action.note))
    except ConcurrencyError:
        return None


def _requeue(services: Services, action: Action, job: Job) -> Job | None:
    """Queue the claimed ``job`` again (a fresh instance id), or give it to a person after too many
    re-drives; ``None`` when it changed since the claim (another reconciler, or its own run, moved it)."""
    now = services.clock()
    try:
        if action.rule is Rule.ORCHESTRATION_LOST and job.redrives >= services.settings.max_redrives:
            error = ErrorInfo(str(job.status), "permanent", "orchestration_lost", action.reason, now)
            note = f"orchestration lost {job.redrives + 1} times: {action.reason}"
            return services.jobs.replace(job.transition(JobStatus.NEEDS_REVIEW, now, note, last_error=error))
        redrives = job.redrives + 1 if action.rule is Rule.ORCHESTRATION_LOST else job.redrives
        note = f"reconcile: re-drive ({action.rule})"
        return services.jobs.replace(job.transition(JobStatus.QUEUED, now, note, redrives=redrives))
    except ConcurrencyError:
        return None


def _purge_not_indexed(services: Services, action: Action) -> int:
    job = services.jobs.get(action.doc_id)
    if job is None or job.status in (JobStatus.SKIPPED, JobStatus.NEEDS_REVIEW):
        return purge_document(services, action.doc_id)
    return 0  # it moved on (re-queued, indexed): its own run syncs the index


def _purge_orphan(services: Services, action: Action) -> int:
    job = services.jobs.get(action.doc_id)
    if job is not None and job.status is not JobStatus.DELETED:
        return 0  # a job appeared meanwhile: its run syncs the index
    if current_blob(services, action.path) is not None:
        return 0  # the blob is back: the next pass ingests it
    return purge_document(services, action.doc_id)


async def _ended(orchestrations: Orchestrations, instance_id: str, wait_s: float) -> bool:
    """Terminate is asynchronous: wait (bounded) until the instance really has ended."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    delay = _FIRST_POLL_S
    while True:
        state = await orchestrations.state(instance_id)
        if state.status is None or state.status in ENDED:
            return True
        if state.status not in ACTIVE or loop.time() >= deadline:
            return False
        await asyncio.sleep(min(delay, max(deadline - loop.time(), 0.0)))
        delay = min(delay * 2, _POLL_S)


def collect_artifacts(services: Services, job: Job, now: datetime) -> int:
    """Delete the artifacts of versions the job no longer needs, once it has been finished for the
    retention period: all of them for a deleted document; for others, everything but the current
    version's and the indexed content's (re-persisting and vector reuse read those)."""
    retention = timedelta(days=services.settings.reconcile.artifact_retention_days)
    if job.status.in_backlog or job.updated_at > now - retention:
        return 0
    prefix = f"{job.doc_id}/"
    keep = set() if job.status is JobStatus.DELETED else {f"v-{job.version.key}"}
    for content_hash in (job.indexed_hash, job.version.content_hash):
        if content_hash and job.status is not JobStatus.DELETED:
            keep.add(f"c-{content_hash[:32]}")
    folders = {key[len(prefix) :].split("/", 1)[0] for key in services.artifacts.list(prefix)}
    doomed = sorted(folders - keep)
    # ``job`` is the listing's copy: this pass's action, a trigger or a run may have moved the job to
    # a new version since, whose checkpoints are being written now. Any such write changes its ETag
    # (and makes it recent), so delete only while the stored job is still the copy decided on.
    if not doomed or getattr(services.jobs.get(job.doc_id), "etag", None) != job.etag:
        return 0
    return sum(services.artifacts.delete_prefix(f"{prefix}{folder}/") for folder in doomed)
