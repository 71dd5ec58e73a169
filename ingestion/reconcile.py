"""The reconciler's rules: a pure diff of what the blobs, the job documents and the index say.

For one document, ``decide`` looks at its blob (``None`` when gone), its job document, the chunks
the index holds for it and the state of its orchestration, and returns the one ``Action`` that
brings them back in line (or ``None``). It does no I/O, reads no clock, and is tested rule by rule
and with random histories; ``reconcile_run`` gathers the views page by page and applies the actions.

    rule                   when                                              action
    missed_trigger         a blob with no job, or a version its job lacks   ingest it
    retry_due              ``retry_later`` and its time has come             re-drive (or needs_review
                                                                              after too many)
    orchestration_lost     in progress, but its orchestration ended, or     terminate what is left,
                           is missing or made no progress for a lease        re-drive from checkpoints
                           (a Suspended one is a person's hold: left alone)
    index_mismatch         ``indexed`` but the index holds other chunks;    re-run (checkpoints make it
                           or chunks of a version that is not indexed        a re-persist), or purge
    blob_deleted           the blob is gone, the job does not say so         job ``deleted``, chunks out
    orphan_chunks          chunks with no blob and no live job               purge them
    dead_letter            an event dead-lettered or poisoned                handle it as its event
                                                                              (reconcile_letters.py)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum

from ingestion.model import TRAIL_LIMIT, Job, JobStatus, TrailEntry, chunk_ids_digest
from ingestion.ports import BlobInfo

# The runtime statuses of an orchestration that will not move the job any further.
ENDED = frozenset({"Completed", "Failed", "Terminated", "Canceled"})
ACTIVE = frozenset({"Pending", "Running", "ContinuedAsNew"})
# Held by a person (``suspend``): not stuck, and not the reconciler's to terminate.
HELD = frozenset({"Suspended"})


class Rule(StrEnum):
    MISSED_TRIGGER = "missed_trigger"
    RETRY_DUE = "retry_due"
    ORCHESTRATION_LOST = "orchestration_lost"
    INDEX_MISMATCH = "index_mismatch"
    BLOB_DELETED = "blob_deleted"
    ORPHAN_CHUNKS = "orphan_chunks"
    DEAD_LETTER = "dead_letter"  # an undeliverable event (reconcile_letters.py)


@dataclass(frozen=True)
class Orchestration:
    """What the Durable runtime says about one instance (``status`` ``None``: no such instance)."""

    instance_id: str
    status: str | None
    last_updated: datetime | None = None


@dataclass(frozen=True)
class DocView:
    """One document as the three listings (and the orchestration, when asked) show it."""

    doc_id: str
    path: str
    blob: BlobInfo | None
    job: Job | None
    held: tuple[tuple[str, str], ...]  # (chunk id, version) the index holds for the document
    orchestration: Orchestration | None = None  # None: not looked up (no durable client, or not needed)


@dataclass(frozen=True)
class Action:
    rule: Rule
    doc_id: str
    path: str
    reason: str  # what the rule saw, for the log, the metric's reader and the job's trail
    job_etag: str | None = None  # the job document as seen: acting is claimed against it
    terminate: str | None = None  # an instance to terminate first (stuck, still running)

    def describe(self) -> str:
        return f"{self.rule}: {self.path}: {self.reason}"

    @property
    def note(self) -> str:
        """What acting on it puts on the job's trail."""
        return f"reconcile: {self.rule}: {self.reason}"


@dataclass(frozen=True)
class Timing:
    """The clock-dependent thresholds of the rules."""

    now: datetime
    lease: timedelta  # no progress for this long: the orchestration is stuck
    settle: timedelta  # a job this fresh may simply not have its orchestration yet


def decide(view: DocView, timing: Timing) -> Action | None:  # noqa: PLR0911 -- one return per row of the table
    """The action that makes ``view`` consistent, or ``None`` when it already is."""
    if view.blob is None:
        return _without_blob(view)
    job = view.job
    if job is None:
        return _action(view, Rule.MISSED_TRIGGER, "a blob without a job")
    if job.version.etag != view.blob.version.etag:
        if job.status.in_progress and job.updated_at > timing.now - timing.settle:
            return None  # a new version is probably being registered right now
        reason = f"the blob has version {view.blob.version.etag}, the job {job.version.etag}"
        return _action(view, Rule.MISSED_TRIGGER, reason)
    if job.status is JobStatus.DELETED:
        return _action(view, Rule.MISSED_TRIGGER, "the blob exists again")
    if job.status is JobStatus.RETRY_LATER:
        due = job.retry_at is None or job.retry_at <= timing.now
        return _action(view, Rule.RETRY_DUE, f"retry_later since {job.updated_at.isoformat()}, due") if due else None
    if job.status.in_progress:
        return _lost(view, job, timing)
    if job.status is JobStatus.INDEXED:
        # Azure AI Search is near real time: a listing just after persist may lag its writes.
        fresh = job.updated_at > timing.now - timing.settle
        problem = "" if fresh else _index_problem(job, view.held)
        return _action(view, Rule.INDEX_MISMATCH, problem) if problem else None
    if view.held:  # skipped or needs_review: the file no longer says what those chunks say
        return _action(view, Rule.INDEX_MISMATCH, f"{len(view.held)} chunks of a document that is {job.status}")
    return None


def _without_blob(view: DocView) -> Action | None:
    job = view.job
    if job is not None and job.status is not JobStatus.DELETED:
        return _action(view, Rule.BLOB_DELETED, f"the blob is gone; the job is {job.status}")
    if view.held:
        owner = "job deleted" if job else "no job"
        return _action(view, Rule.ORPHAN_CHUNKS, f"{len(view.held)} chunks, no blob, {owner}")
    return None


def _action(view: DocView, rule: Rule, reason: str, terminate: str | None = None) -> Action:
    return Action(rule, view.doc_id, view.path, reason, view.job.etag if view.job else None, terminate)


def _lost(view: DocView, job: Job, timing: Timing) -> Action | None:
    """An in-progress job: is anything still driving it?"""
    quiet_since = job.updated_at
    orchestration = view.orchestration
    if orchestration is None:  # not looked up: only the job's own age can tell
        if quiet_since <= timing.now - timing.lease:
            return _action(
                view, Rule.ORCHESTRATION_LOST, f"{job.status} with no progress since {quiet_since.isoformat()}"
            )
        return None
    if _excused(orchestration, quiet_since, timing):
        return None
    if orchestration.status is None or orchestration.status in ENDED:
        state = orchestration.status or "missing"
        reason = f"{job.status}, orchestration {orchestration.instance_id} is {state}"
        return _action(view, Rule.ORCHESTRATION_LOST, reason)
    last = max(quiet_since, orchestration.last_updated or quiet_since)
    if last <= timing.now - timing.lease:
        reason = f"{job.status}, orchestration {orchestration.instance_id} {orchestration.status} but idle"
        return _action(view, Rule.ORCHESTRATION_LOST, f"{reason} since {last.isoformat()}", orchestration.instance_id)
    return None


def _excused(orchestration: Orchestration, quiet_since: datetime, timing: Timing) -> bool:
    """Whether the job may well be fine, whatever the instance's state says."""
    if quiet_since > timing.now - timing.settle:
        return True  # just registered or just moved: its orchestration may be starting
    if orchestration.status in HELD:
        return True  # suspended by a person, whatever its age
    # Durable's status API answers 404 both for "no such instance" and for one still Pending (a
    # start queued behind a backlog): only a lease of silence says the start was lost.
    return orchestration.status is None and quiet_since > timing.now - timing.lease


def _index_problem(job: Job, held: Sequence[tuple[str, str]]) -> str:
    """What is wrong with an indexed job's chunks in the index ("" when nothing)."""
    other = sum(1 for _, version in held if version != job.indexed_hash)
    if other:
        return f"{other} of {len(held)} chunks belong to another version"
    if len(held) != job.chunk_count:
        return f"the index holds {len(held)} chunks, the job recorded {job.chunk_count}"
    if job.chunk_ids_digest and chunk_ids_digest(chunk_id for chunk_id, _ in held) != job.chunk_ids_digest:
        return "the index holds other chunk ids than the job recorded"
    return ""


def noted(job: Job, at: datetime, note: str) -> Job:
    """``job`` with ``note`` on its trail. Not a transition: its stage times, which its instance id
    derives from (``triggers.instance_id_for``), stay as they are, so a duplicate event still names
    the run already started; ``updated_at`` moves, which makes a pass that lists the job let it settle."""
    return replace(job, updated_at=at, trail=(*job.trail, TrailEntry(at, job.status, note))[-TRAIL_LIMIT:])
