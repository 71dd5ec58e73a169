"""One reconciler pass: gather each document's views page by page, decide, and apply the actions.

Three sweeps, each resuming where the previous pass stopped (cursors in the artifact store) and
doing at most ``Settings.reconcile.max_items`` items a pass, so a container with millions of files
is reconciled incrementally with memory bounded by the page size:

- blobs, in name order: a blob without a job, or with a version its job lacks (lost triggers,
  dead-lettered events: whatever happened to the event, the blob is still there);
- jobs, in doc id order: each compared with its blob, the chunks the index holds for it and (when
  it is in progress) its orchestration; old finished versions' artifacts are collected here;
- the index, in chunk id order: chunks whose document has neither a blob nor a live job.

Acting is claimed against the job document as it was seen (an ETag-guarded write that puts the
rule on the job's trail without re-registering the job), and a re-drive is then written against
the claimed ETag, so two reconcilers running at once, or a reconciler racing the pipeline, never
act twice on one observation: the loser finds the document changed and leaves it to the next pass.
A fault (or a bug) in one action fails that action only; a fault in a listing stops that sweep
only, at the last page it finished; either way the pass goes on and saves its cursors.
Finished orchestration histories older than the retention are purged.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from ingestion.errors import ConcurrencyError, IngestionError, PermanentError, TransientError
from ingestion.jobs import current_blob
from ingestion.model import DocumentRef, ErrorInfo, Job, JobStatus
from ingestion.ports import BlobInfo
from ingestion.reconcile import ACTIVE, ENDED, Action, DocView, Orchestration, Rule, Timing, decide, noted
from ingestion.reconcile_letters import redrive_dead_letters
from ingestion.retry import RetryCounts
from ingestion.services import Services
from ingestion.stages.common import rewrite_job
from ingestion.stages.persist import purge_document
from ingestion.triggers import StartPlan, plan_ingestion, remove_blob, start_once

log = logging.getLogger(__name__)

STATE_KEY = "_reconciler/state.json"
ACTIONS = RetryCounts()  # actions taken, by rule (what the metric reports): not planned, not skipped
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
        return await _durable(f"start of {plan.instance_id}", start_once(self._client, plan))

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


@dataclass
class Report:
    """What one pass saw and did."""

    actions: list[tuple[Action, str]] = field(default_factory=list)  # (action, outcome)
    seen: Counter[str] = field(default_factory=Counter)  # items read per sweep
    purged_histories: int = 0
    collected_artifacts: int = 0
    finished_sweeps: list[str] = field(default_factory=list)
    failed_sweeps: list[str] = field(default_factory=list)  # stopped by a fault, at their last finished page

    def by_rule(self) -> dict[str, int]:
        return dict(Counter(action.rule.value for action, _ in self.actions))


async def reconcile(services: Services, orchestrations: Orchestrations | None, *, dry_run: bool = False) -> Report:
    """One pass. ``orchestrations`` ``None`` (no Durable client): plan only from the stores."""
    settings = services.settings.reconcile
    timing = Timing(services.clock(), timedelta(seconds=settings.lease_s), timedelta(seconds=settings.settle_s))
    cursors = _load_cursors(services)
    report = Report()
    done: set[str] = set()  # a document acted on once per pass, whichever sweep saw it first

    async def handle(view: DocView, rules: frozenset[Rule] | None = None) -> None:
        action = decide(view, timing)
        if action is None or action.doc_id in done or (rules is not None and action.rule not in rules):
            return
        done.add(action.doc_id)
        outcome = "planned" if dry_run or (orchestrations is None and _needs_client(action)) else ""
        if not outcome:
            outcome = await _apply(services, orchestrations, action, timing)
        log.info("reconcile %s -> %s", action.describe(), outcome)
        if _counts(outcome):
            ACTIONS.add(action.rule.value)
        report.actions.append((action, outcome))

    for action, outcome in await redrive_dead_letters(
        services, orchestrations, dry_run=dry_run, limit=settings.page_size
    ):
        done.add(action.doc_id)
        if _counts(outcome):
            ACTIONS.add(action.rule.value)
        report.actions.append((action, outcome))
    budget = settings.max_items
    sweeps: dict[str, Callable[[], Awaitable[None]]] = {
        "blobs": lambda: _sweep_blobs(services, cursors, budget, handle, report),
        "jobs": lambda: _sweep_jobs(
            services,
            orchestrations,
            handle,
            report,
            cursors=cursors,
            budget=budget,
            now=timing.now,
            collect=not dry_run,
        ),
        "chunks": lambda: _sweep_index(services, cursors, budget, handle, report),
    }
    for name, sweep in sweeps.items():
        try:
            await sweep()
        except IngestionError as error:
            # A listing fault stops this sweep only, at the last page it finished (its cursor); the
            # other sweeps, the cursors' saving and the history purge still happen, so one failing
            # store cannot stop every pass at the same place.
            log.warning("reconcile: the %s sweep stopped: %s; the next pass resumes there", name, error.message)
            report.failed_sweeps.append(name)
    if not dry_run:
        _save_cursors(services, cursors)
        if orchestrations is not None:
            before = timing.now - timedelta(days=settings.history_retention_days)
            try:
                report.purged_histories = await orchestrations.purge_ended(before)
            except IngestionError as error:
                log.warning("reconcile: history purge failed, the next pass tries again: %s", error.message)
    return report


def _counts(outcome: str) -> bool:
    """Whether ``outcome`` is something done (the metric's count), not merely planned or skipped."""
    return not outcome.startswith(("planned", "skipped"))


Handle = Callable[..., Any]


async def _sweep_blobs(
    services: Services, cursors: dict[str, str | None], budget: int, handle: Handle, report: Report
) -> None:
    """Up to ``budget`` blobs from ``cursors["blobs"]`` on; the cursor moves after every page."""
    container = services.blobs.container
    page_size = services.settings.reconcile.page_size
    cursor = cursors.get("blobs")
    while budget > 0:
        try:
            page = await asyncio.to_thread(services.blobs.page, cursor, min(page_size, budget))
        except (PermanentError, ValueError) as error:
            if cursor is None:
                raise
            log.warning("blob listing token refused (%s); the blob sweep starts over", error)
            cursor = cursors["blobs"] = None
            continue
        # One round trip for the page's jobs, and one thread hop per page, not per blob.
        doc_ids = [DocumentRef(container, blob.path).doc_id for blob in page.blobs]
        jobs = await asyncio.to_thread(services.jobs.get_many, doc_ids)
        for doc_id, blob in zip(doc_ids, page.blobs, strict=True):
            await handle(DocView(doc_id, blob.path, blob, jobs.get(doc_id), ()), frozenset({Rule.MISSED_TRIGGER}))
        report.seen["blobs"] += len(page.blobs)
        budget -= len(page.blobs)
        cursor = cursors["blobs"] = page.continuation
        if cursor is None:
            report.finished_sweeps.append("blobs")
            return


async def _sweep_jobs(
    services: Services,
    orchestrations: Orchestrations | None,
    handle: Handle,
    report: Report,
    *,
    cursors: dict[str, str | None],
    budget: int,
    now: datetime,
    collect: bool,
) -> None:
    """Up to ``budget`` jobs from ``cursors["jobs"]`` on; the cursor moves after every page."""
    page_size = services.settings.reconcile.page_size
    cursor = cursors.get("jobs")
    while budget > 0:
        page = await asyncio.to_thread(services.jobs.list, limit=min(page_size, budget), continuation=cursor)
        # One thread hop per page for the blob and index lookups, not one per job.
        views = await asyncio.to_thread(_job_views, services, page.jobs)
        for job, seen in zip(page.jobs, views, strict=True):
            if seen is None:
                continue
            view = seen
            if orchestrations is not None and job.status.in_progress and job.instance_id:
                view = replace(seen, orchestration=await _lookup(orchestrations, job.instance_id))
            await handle(view)
        if collect:
            report.collected_artifacts += await asyncio.to_thread(_collect_page, services, page.jobs, now)
        report.seen["jobs"] += len(page.jobs)
        budget -= len(page.jobs)
        cursor = cursors["jobs"] = page.continuation
        if cursor is None:
            report.finished_sweeps.append("jobs")
            return


async def _lookup(orchestrations: Orchestrations, instance_id: str) -> Orchestration | None:
    """The instance's state; ``None`` (not looked up: the lease alone decides) when Durable cannot say."""
    try:
        return await orchestrations.state(instance_id)
    except IngestionError as error:
        log.warning("orchestration %s: state unknown: %s", instance_id, error.message)
        return None


def _job_views(services: Services, jobs: list[Job]) -> list[DocView | None]:
    return [_job_view(services, job) for job in jobs]


def _collect_page(services: Services, jobs: list[Job], now: datetime) -> int:
    return sum(collect_artifacts(services, job, now) for job in jobs)


def _job_view(services: Services, job: Job) -> DocView | None:
    try:
        blob: BlobInfo | None = current_blob(services, job.path)
    except PermanentError as error:  # e.g. a name the source cannot look up: the job already says why
        log.debug("%s: blob not comparable: %s", job.doc_id, error.message)
        return None
    held: tuple[tuple[str, str], ...] = ()
    if (not job.status.in_progress and job.status is not JobStatus.RETRY_LATER) or blob is None:
        held = tuple(services.index.ids_for_doc(job.doc_id))
    return DocView(job.doc_id, job.path, blob, job, held)


async def _sweep_index(
    services: Services, cursors: dict[str, str | None], budget: int, handle: Handle, report: Report
) -> None:
    """Up to ``budget`` chunks after ``cursors["chunks"]``; the cursor moves after every page."""
    page_size = services.settings.reconcile.page_size
    cursor = cursors.get("chunks")
    while budget > 0:
        chunks = await asyncio.to_thread(services.index.chunks, cursor, min(page_size, budget))
        if not chunks:
            cursors["chunks"] = None
            report.finished_sweeps.append("index")
            return
        by_doc: dict[str, list[tuple[str, str]]] = {}
        paths: dict[str, str] = {}
        for chunk in chunks:
            by_doc.setdefault(chunk.doc_id, []).append((chunk.id, chunk.version))
            paths[chunk.doc_id] = chunk.path
        for view in await asyncio.to_thread(_orphan_candidates, services, by_doc, paths):
            await handle(view, frozenset({Rule.ORPHAN_CHUNKS}))
        report.seen["chunks"] += len(chunks)
        budget -= len(chunks)
        cursor = cursors["chunks"] = chunks[-1].id


def _orphan_candidates(
    services: Services, by_doc: dict[str, list[tuple[str, str]]], paths: dict[str, str]
) -> list[DocView]:
    """The page's documents without a live job (one query for the page's jobs), with their blobs."""
    jobs = services.jobs.get_many(list(by_doc))
    views = []
    for doc_id, held in by_doc.items():
        job = jobs.get(doc_id)
        if job is not None and job.status is not JobStatus.DELETED:
            continue  # a live job: the job sweep compares its chunks
        try:
            blob = current_blob(services, paths[doc_id])
        except PermanentError:
            continue
        views.append(DocView(doc_id, paths[doc_id], blob, job, tuple(held)))
    return views


def _needs_client(action: Action) -> bool:
    return action.rule in (Rule.MISSED_TRIGGER, Rule.RETRY_DUE, Rule.ORCHESTRATION_LOST, Rule.INDEX_MISMATCH)


async def _apply(services: Services, orchestrations: Orchestrations | None, action: Action, timing: Timing) -> str:
    """Carry out ``action``; a short outcome for the log and the report. Never raises for a fault."""
    try:
        return await _carry_out(services, orchestrations, action, timing)
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
    assert orchestrations is not None  # _needs_client: runs without one stop at "planned"
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
        await asyncio.to_thread(_note_on_trail, services, action)
    started = await orchestrations.start(plan)
    return f"started {plan.instance_id}" if started else f"{plan.instance_id} already running"


def _not_started(services: Services, action: Action) -> str:
    """Why registering started nothing; a re-drive that gave up takes the document's chunks out."""
    job = services.jobs.get(action.doc_id)
    if action.rule is Rule.RETRY_DUE and job is not None and job.status is JobStatus.NEEDS_REVIEW:
        purge_document(services, action.doc_id)  # as finalize does for a version that needs review
        return "needs_review: re-driven too often"
    return "nothing to start"


def _note_on_trail(services: Services, action: Action) -> None:
    note = f"reconcile: {action.rule}: {action.reason}"
    rewrite_job(services, action.doc_id, lambda job: None if job is None else noted(job, services.clock(), note))


def _claim(services: Services, action: Action) -> Job | None:
    """Put the rule on the job's trail, if the job is still as seen (the ETag guard); else ``None``."""
    job = services.jobs.get(action.doc_id)
    if job is None or job.etag != action.job_etag:
        return None
    try:
        note = f"reconcile: {action.rule}: {action.reason}"
        return services.jobs.replace(noted(job, services.clock(), note))
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
    # ``job`` is the listing's copy: this pass's action, a trigger or a run may have moved the job to
    # a new version since, whose checkpoints are being written now. Decide on the stored job, and
    # leave the document to the next pass if it changes while its artifacts are listed.
    current = services.jobs.get(job.doc_id)
    if current is None or current.status.in_progress or current.status is JobStatus.RETRY_LATER:
        return 0
    if current.updated_at > now - retention:
        return 0
    prefix = f"{job.doc_id}/"
    keep = set() if current.status is JobStatus.DELETED else {f"v-{current.version.key}"}
    for content_hash in (current.indexed_hash, current.version.content_hash):
        if content_hash and current.status is not JobStatus.DELETED:
            keep.add(f"c-{content_hash[:32]}")
    folders = {key[len(prefix) :].split("/", 1)[0] for key in services.artifacts.list(prefix)}
    doomed = sorted(folders - keep)
    if not doomed or getattr(services.jobs.get(job.doc_id), "etag", None) != current.etag:
        return 0
    return sum(services.artifacts.delete_prefix(f"{prefix}{folder}/") for folder in doomed)


def _load_cursors(services: Services) -> dict[str, str | None]:
    raw = services.artifacts.get(STATE_KEY)
    if raw is None:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        log.warning("reconciler state unreadable; starting every sweep over")
        return {}
    return {str(k): (str(v) if v is not None else None) for k, v in data.get("cursors", {}).items()}


def _save_cursors(services: Services, cursors: dict[str, str | None]) -> None:
    services.artifacts.put(STATE_KEY, json.dumps({"cursors": cursors}).encode())
