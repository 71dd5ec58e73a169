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
from typing import Any

from ingestion.errors import IngestionError, PermanentError
from ingestion.jobs import current_blob
from ingestion.model import DocumentRef, Job, JobStatus, from_iso, to_iso
from ingestion.ports import BlobInfo
from ingestion.reconcile import Action, DocView, Orchestration, Rule, Timing, decide
from ingestion.reconcile_apply import (  # noqa: F401 -- Orchestrations, DurableOrchestrations: the API
    DurableOrchestrations,
    Orchestrations,
    apply,
    collect_artifacts,
    needs_client,
)
from ingestion.reconcile_letters import redrive_dead_letters
from ingestion.retry import RetryCounts
from ingestion.services import Services
from ingestion.telemetry import BACKLOG, current, names

log = logging.getLogger(__name__)

STATE_KEY = "_reconciler/state.json"
_BACKLOG_KEY = "backlog_oldest"  # with the cursors: the oldest unfinished job the job sweep has seen so far
ACTIONS = RetryCounts()  # actions taken, by rule (what the metric reports): not planned, not skipped


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
    """One pass. ``orchestrations`` ``None`` (no Durable client): plan only from the stores.
    The pass is one span (its sweeps' store calls beneath it); its actions are counted by rule."""
    with current().tracer.start_as_current_span(names.SPAN_RECONCILE, attributes={names.DRY_RUN: dry_run}) as span:
        report = await _reconcile(services, orchestrations, dry_run=dry_run)
        span.set_attributes({names.ACTIONS: len(report.actions), names.FAILED_SWEEPS: report.failed_sweeps})
        span.set_attributes({names.SEEN + sweep: count for sweep, count in report.seen.items()})
        return report


async def _reconcile(services: Services, orchestrations: Orchestrations | None, *, dry_run: bool) -> Report:
    settings = services.settings.reconcile
    timing = Timing(services.clock(), timedelta(seconds=settings.lease_s), timedelta(seconds=settings.settle_s))
    cursors = _load_cursors(services)
    report = Report()
    done: set[str] = set()  # a document acted on once per pass, whichever sweep saw it first

    def record(action: Action, outcome: str) -> None:
        done.add(action.doc_id)
        if _counts(outcome):
            ACTIONS.add(action.rule.value)
        report.actions.append((action, outcome))

    async def handle(view: DocView, rules: frozenset[Rule] | None = None) -> None:
        action = decide(view, timing)
        if action is None or action.doc_id in done or (rules is not None and action.rule not in rules):
            return
        if dry_run or (orchestrations is None and needs_client(action)):
            outcome = "planned"
        else:
            outcome = await apply(services, orchestrations, action, timing)
        log.info("reconcile %s -> %s", action.describe(), outcome)
        record(action, outcome)

    for action, outcome in await redrive_dead_letters(
        services, orchestrations, dry_run=dry_run, limit=settings.page_size
    ):
        record(action, outcome)
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
        "index": lambda: _sweep_index(services, cursors, budget, handle, report),
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
        _note_backlog(cursors, page.jobs, finished=cursor is None)
        if cursor is None:
            report.finished_sweeps.append("jobs")
            return


def _note_backlog(cursors: dict[str, str | None], jobs: list[Job], *, finished: bool) -> None:
    """Carry the oldest unfinished job's queue time through a job sweep (which may span passes, so
    it is kept with the cursors); when the sweep ends, it is what the backlog-age gauge reports."""
    oldest = cursors.get(_BACKLOG_KEY)
    for job in jobs:
        if job.status.in_backlog and (oldest is None or job.queued_at < from_iso(oldest)):
            oldest = to_iso(job.queued_at)
    cursors[_BACKLOG_KEY] = oldest
    if finished:
        BACKLOG.found(from_iso(oldest) if oldest else None)
        cursors[_BACKLOG_KEY] = None


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
    if not job.status.in_backlog or blob is None:
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
