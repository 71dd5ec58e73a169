"""A small simulated world for the reconciler's property tests: users, triggers, Durable, faults.

Everything runs in-process over the in-memory fakes (``tests/fakes.py``) and a fake clock, through
the production entry points, so a history replays exactly:

- users create, overwrite and delete blobs (``Write``/``Delete``); the Event Grid events those
  produce are delivered at once, twice (a late replay queued too), late (queued) or never (lost).
  Created events go through ``triggers.ingest_blob`` (the blob trigger), deleted ones through
  ``triggers.handle_blob_event`` (the BlobDeleted handler); a trigger that hits a service fault
  loses its event, as a poisoned or dead-lettered message would;
- a fake Durable client (``FakeDurableClient``) gives ``start_new`` its real semantics (an id that
  is Pending or Running is refused, a finished one is overwritten) and runs what was started
  afterwards, either with ``pipeline.run_document`` or by driving the real orchestrator generator
  ``workflow.ingest_document`` over ``activities.run_stage``/``record_outcome``, durable timers
  advancing the clock. A run may crash: a Durable run stops before its k-th activity and its
  instance stays Running (resumable later, as a recovered host would, or stuck for good) or ends
  Failed; a ``run_document`` run dies on an exception the pipeline does not catch (a
  ``BaseException``, like a killed process) raised by the job store when the run tries to move the
  job to its k-th stage, leaving the job in the stage before;
- transient faults are armed on the fakes' hooks (job store writes, writes to one status, index
  requests, index keys, embedder, blob reads) and stay armed until consumed or ``heal``; the index
  may also lose a chunk or gain a stray one (``Damage``), which only the reconciler's index rules see;
- the reconciler runs over ``reconcile_apply.DurableOrchestrations`` on the same fake client, during
  the history (faults and all) and at the end (``converge``), after the faults stop. While a pass
  ``races`` the host, queued runs run whenever the pass asks about an instance, and a terminated
  instance's in-flight activity still lands (``terminate`` does not stop running activities).

``problems`` states the convergence invariant; each check compares the world with what a clean run of
the same bytes produces (``CleanRuns``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ingestion import activities
from ingestion.adapters.local_embedder import HashingEmbedder
from ingestion.api import all_jobs
from ingestion.config import ParseLimits, Settings
from ingestion.errors import IngestionError, TransientError
from ingestion.model import Chunk, DocumentRef, IndexRecord, Job, JobStatus, chunk_ids_digest
from ingestion.pipeline import run_document
from ingestion.reconcile_run import DurableOrchestrations, Report, reconcile
from ingestion.retry import RetryPolicy
from ingestion.services import Services
from ingestion.stages import StageRequest
from ingestion.tokens import Tokenizer
from ingestion.triggers import BLOB_DELETED, handle_blob_event, ingest_blob
from ingestion.workflow import RECORD_OUTCOME, ingest_document
from tests.fakes import (
    CountingEmbedder,
    InMemoryArtifactStore,
    InMemoryBlobSource,
    InMemoryJobStore,
    InMemorySearchIndex,
)
from tests.unit.conftest import FakeClock
from tests.unit.pipeline_helpers import long_text

# --------------------------------------------------------------------------- what users upload

# Small texts (a few repeat on purpose: the same bytes written again is a metadata-only change),
# one long enough for several chunks, and files that must not reach the index.
CONTENTS: tuple[bytes, ...] = (
    b"Harbour lantern meadow. Copper violin glacier.\n",
    b"Orchard thunder saffron.\n\nPebble harbour lantern, meadow copper.\n",
    b"Glacier orchard.\n",
    "\n\n".join(long_text(40, seed=7)).encode(),
    b"",  # empty: skipped
    b" \n\t \n",  # only whitespace: no text to index
    b"\x89PNG\r\n\x1a\n" + bytes(range(64)),  # an image: not a supported format, needs review
)

THROTTLE_S = 600.0  # a Retry-After longer than a worker may sleep: straight to retry_later


class Crash(BaseException):
    """The worker process dies: no ``except Exception`` in the pipeline catches this."""


# --------------------------------------------------------------------------- the history's vocabulary


class Delivery(StrEnum):
    NOW = "now"
    TWICE = "twice"  # now, and a replay queued for later
    LATE = "late"  # queued: delivered by a later ``Deliver`` or never
    LOST = "lost"


class Mode(StrEnum):
    DURABLE = "durable"  # the orchestrator generator over the activities
    PIPELINE = "pipeline"  # pipeline.run_document


@dataclass(frozen=True)
class Run:
    """How the orchestrations started by one operation run."""

    mode: Mode = Mode.DURABLE
    crash: int | None = None  # die before activity/stage ``crash`` (0 = fetch .. 5 = recording); None: finish
    failed: bool = False  # a crashed Durable instance ends Failed (else it stays Running)


@dataclass(frozen=True)
class Write:
    """A user creates or overwrites ``path`` with ``CONTENTS[content]``."""

    path: int
    content: int
    delivery: Delivery = Delivery.NOW
    run: Run = Run()
    backdated: bool = False  # a copy that keeps an old modification time (cp -p, rsync -t)


@dataclass(frozen=True)
class Delete:
    """A user deletes ``path`` (no event when it does not exist)."""

    path: int
    delivery: Delivery = Delivery.NOW


class Target(StrEnum):
    JOBS = "jobs"  # every job store write
    JOB_STATUS = "job_status"  # writes that move a job to one status (a fault aimed at one stage)
    INDEX = "index"  # whole index requests
    INDEX_KEYS = "index_keys"  # per-key 503s inside a 207 answer
    EMBED = "embed"
    THROTTLE = "throttle"  # the embedder asks to wait longer than a worker sleeps
    BLOB_READ = "blob_read"


FAULT_STATUSES = (
    JobStatus.FETCHING,
    JobStatus.PARSING,
    JobStatus.CHUNKING,
    JobStatus.EMBEDDING,
    JobStatus.INDEXING,
    JobStatus.INDEXED,
)


@dataclass(frozen=True)
class Fault:
    """Arm ``count`` transient faults on ``target`` (``status`` picks the status for JOB_STATUS)."""

    target: Target
    count: int = 1
    status: int = 0


@dataclass(frozen=True)
class Tick:
    seconds: int


@dataclass(frozen=True)
class Deliver:
    """Deliver the ``index``-th queued (late) event, modulo the queue's length."""

    index: int = 0
    run: Run = Run()


@dataclass(frozen=True)
class Resume:
    """A recovered host resumes the ``index``-th paused Durable instance (modulo their number)."""

    index: int = 0
    run: Run = Run()


@dataclass(frozen=True)
class Damage:
    """The index loses one of the document's chunks, or gains a stray one of another version (a
    restore from backup, a stray write): what only the reconciler's index rules can notice."""

    path: int
    lose: bool = True


@dataclass(frozen=True)
class Reconcile:
    """A reconciler pass in the middle of the history, faults and all. ``race``: the host works
    while the pass runs: started orchestrations run as soon as the pass asks about any instance,
    and a terminated instance's activity still finishes (``terminate`` does not stop it)."""

    run: Run = Run()
    race: bool = False


Op = Write | Delete | Fault | Tick | Deliver | Resume | Damage | Reconcile


@dataclass(frozen=True)
class History:
    paths: int
    ops: tuple[Op, ...]
    long_wait: bool = False  # before converging, wait past the artifact retention too
    race_at_end: bool = False  # the host still works during the first converging pass


def path_name(index: int) -> str:
    return f"docs/p{index}.txt"


# --------------------------------------------------------------------------- fakes that can be healed


class HealableJobStore(InMemoryJobStore):
    # tests/fakes.py has no way to withdraw armed faults; "the faults stop" needs one.
    def heal(self) -> None:
        with self._lock:
            self._failures.clear()
            self._status_failures.clear()

    def disarm_crashes(self) -> None:
        with self._lock:
            for armed in self._status_failures.values():
                armed[:] = [error for error in armed if not isinstance(error, Crash)]


class HealableSearchIndex(InMemorySearchIndex):
    def heal(self) -> None:
        with self._lock:
            self._request_failures.clear()
            self._key_failures.clear()


class HealableEmbedder(CountingEmbedder):
    def heal(self) -> None:
        with self._lock:
            self._failures.clear()


class HealableBlobSource(InMemoryBlobSource):
    def heal(self) -> None:
        with self._lock:
            self._failures.clear()


@dataclass(frozen=True)
class Fakes:
    """Typed handles on the fakes behind ``Services`` (whose fields are typed by their ports)."""

    blobs: HealableBlobSource
    jobs: HealableJobStore
    index: HealableSearchIndex
    embedder: HealableEmbedder

    @classmethod
    def of(cls, services: Services) -> Fakes:
        found = cls(services.blobs, services.jobs, services.index, services.embedder)  # type: ignore[arg-type]
        assert isinstance(found.blobs, HealableBlobSource) and isinstance(found.jobs, HealableJobStore)
        assert isinstance(found.index, HealableSearchIndex) and isinstance(found.embedder, HealableEmbedder)
        return found

    def heal(self) -> None:
        for fake in (self.blobs, self.jobs, self.index, self.embedder):
            fake.heal()


def build_services(tokenizer: Tokenizer, data_dir: Path, clock: FakeClock) -> Services:
    """The unit tests' ``services`` fixture, over fakes whose faults can be withdrawn."""
    defaults = Settings.from_env({})
    settings = dataclasses.replace(
        defaults,
        data_dir=data_dir,
        limits=ParseLimits(isolation="inline", max_file_bytes=1_000_000),
        # Tiny pages: a few documents already cross page boundaries in every sweep.
        reconcile=dataclasses.replace(defaults.reconcile, page_size=2, lease_s=900.0),  # Tick(1000) outlasts it
    )
    return Services(
        settings=settings,
        blobs=HealableBlobSource(),
        artifacts=InMemoryArtifactStore(),
        jobs=HealableJobStore(),
        index=HealableSearchIndex(dimensions=64),
        embedder=HealableEmbedder(HashingEmbedder(64, tokenizer)),
        tokenizer=tokenizer,
        clock=clock,
        sleep=clock.sleep,
    )


# --------------------------------------------------------------------------- Durable, in-process


ACTIVE = ("Pending", "Running")


@dataclass
class Instance:
    instance_id: str
    input: dict[str, Any]
    run: Run
    created: datetime
    last_updated: datetime
    status: str = "Pending"
    generator: Generator[Any, Any, Any] | None = None
    task: Any = None  # the activity the instance was about to call when its host died


class Context:
    """Just enough of ``DurableOrchestrationContext`` for ``ingest_document``."""

    def __init__(self, world: World, instance: Instance) -> None:
        self._world = world
        self._instance = instance
        self.instance_id = instance.instance_id

    @property
    def current_utc_datetime(self) -> datetime:
        return self._world.clock.now

    def get_input(self) -> dict[str, Any]:
        return self._instance.input

    def call_activity_with_retry(self, name: str, options: Any, payload: Any) -> tuple[str, str, Any]:
        return ("activity", name, payload)

    def create_timer(self, fire_at: datetime) -> tuple[str, datetime]:
        return ("timer", fire_at)

    def set_custom_status(self, status: Any) -> None:
        pass


class FakeDurableClient:
    """The parts of ``DurableOrchestrationClient`` the starter and the reconciler use."""

    def __init__(self, world: World) -> None:
        self._world = world

    async def start_new(self, name: str, instance_id: str, client_input: dict[str, Any]) -> str:
        world = self._world
        found = world.instances.get(instance_id)
        if found is not None and found.status in ACTIVE:
            raise Exception(f"an instance with id {instance_id} already exists")  # the SDK's bare Exception
        now = world.clock.now
        world.instances[instance_id] = Instance(instance_id, client_input, world.run_spec, now, now)
        world.queue.append(instance_id)
        return instance_id

    async def get_status(self, instance_id: str) -> Any:
        if self._world.racing:
            self._world.work()
        found = self._world.instances.get(instance_id)
        if found is None:
            return SimpleNamespace(runtime_status=None, last_updated_time=None)
        return SimpleNamespace(runtime_status=SimpleNamespace(value=found.status), last_updated_time=found.last_updated)

    async def terminate(self, instance_id: str, reason: str) -> None:
        found = self._world.instances.get(instance_id)
        if found is not None and found.status in ACTIVE:
            if self._world.racing and found.task is not None and found.task[0] == "activity":
                self._world.activity(found.task[1], found.task[2])  # its answer goes nowhere
            found.status, found.generator, found.task = "Terminated", None, None
            found.last_updated = self._world.clock.now
            self._world.note(f"  terminated {instance_id[-8:]}: {reason}")

    async def purge_instance_history_by(
        self, created_time_from: datetime, created_time_to: datetime, runtime_status: list[Any]
    ) -> Any:
        wanted = {status.value for status in runtime_status}
        doomed = [
            key
            for key, found in self._world.instances.items()
            if found.status in wanted and created_time_from <= found.created <= created_time_to
        ]
        for key in doomed:
            del self._world.instances[key]
        return SimpleNamespace(instances_deleted=len(doomed))


# --------------------------------------------------------------------------- the world


@dataclass(frozen=True)
class Outcome:
    """What a clean run of some bytes at some path ends with."""

    status: JobStatus
    chunks: dict[str, str]  # chunk id -> version


@dataclass
class World:
    services: Services
    clock: FakeClock
    instances: dict[str, Instance] = field(default_factory=dict)
    queue: list[str] = field(default_factory=list)  # started, not yet run
    late: list[tuple[str, str]] = field(default_factory=list)  # (event type, path) not yet delivered
    truth: dict[str, bytes] = field(default_factory=dict)  # what the users think each blob holds
    paths: set[str] = field(default_factory=set)  # every path the history touched
    run_spec: Run = Run()  # how the orchestrations started next will run
    healed: bool = False
    racing: bool = False  # the host runs orchestrations while a reconciler pass is under way
    bugs: list[str] = field(default_factory=list)  # exceptions no layer should let out
    story: list[str] = field(default_factory=list)

    @property
    def fakes(self) -> Fakes:
        return Fakes.of(self.services)

    @classmethod
    def create(cls, tokenizer: Tokenizer, data_dir: Path) -> World:
        clock = FakeClock()
        return cls(build_services(tokenizer, data_dir, clock), clock)

    @property
    def client(self) -> FakeDurableClient:
        return FakeDurableClient(self)

    @property
    def orchestrations(self) -> DurableOrchestrations:
        return DurableOrchestrations(self.client)

    def note(self, line: str) -> None:
        self.story.append(f"[{self.clock.now:%d %H:%M:%S}] {line}")

    # ------------------------------------------------------------------ playing a history

    async def play(self, history: History) -> None:
        for op in history.ops:
            self.note(repr(op))
            await self.step(op, history.paths)
            self.work()

    async def step(self, op: Op, paths: int) -> None:
        if isinstance(op, Write):
            path = path_name(op.path % paths)
            self.write(path, CONTENTS[op.content % len(CONTENTS)], op.backdated)
            await self.deliver_new("created", path, op.delivery, op.run)
        elif isinstance(op, Delete):
            path = path_name(op.path % paths)
            if self.fakes.blobs.delete(path):
                self.truth.pop(path, None)
                await self.deliver_new("deleted", path, op.delivery, Run())
        elif isinstance(op, Fault):
            self.arm(op)
        elif isinstance(op, Tick):
            self.clock.now += timedelta(seconds=op.seconds)
        elif isinstance(op, Deliver):
            if self.late:
                kind, path = self.late.pop(op.index % len(self.late))
                await self.deliver(kind, path, op.run)
        elif isinstance(op, Resume):
            paused = [found for found in self.instances.values() if found.generator is not None]
            if paused:
                self.drive(paused[op.index % len(paused)], op.run.crash)
        elif isinstance(op, Damage):
            self.damage(path_name(op.path % paths), op.lose)
        else:
            self.run_spec, self.racing = op.run, op.race
            try:
                await self.reconcile_pass()
            finally:
                self.run_spec, self.racing = Run(), False

    def write(self, path: str, data: bytes, backdated: bool = False) -> None:
        # Last-Modified from the clock: two writes in one tick tie, as Azure's one-second resolution does.
        modified = self.clock.now - timedelta(days=1 if backdated else 0)
        self.fakes.blobs.put(path, data, last_modified=modified)
        self.truth[path] = data
        self.paths.add(path)

    async def deliver_new(self, kind: str, path: str, delivery: Delivery, run: Run) -> None:
        if delivery in (Delivery.LATE, Delivery.TWICE):
            self.late.append((kind, path))
        if delivery in (Delivery.NOW, Delivery.TWICE):
            await self.deliver(kind, path, run)

    async def deliver(self, kind: str, path: str, run: Run) -> None:
        """The trigger handles the event; a service fault loses it (poison queue, dead letter)."""
        self.run_spec = run
        container = self.services.blobs.container
        try:
            if kind == "created":
                started = await ingest_blob(self.services, self.client, container, path)
                self.note(f"  created {path}: {'started' if started else 'not started'}")
            else:
                subject = f"/blobServices/default/containers/{container}/blobs/{path}"
                outcome = await handle_blob_event(self.services, self.client, BLOB_DELETED, subject)
                self.note(f"  deleted {path}: {outcome}")
        except IngestionError as error:
            self.note(f"  {kind} {path}: event lost: {error.message}")
        finally:
            self.run_spec = Run()

    def arm(self, fault: Fault) -> None:
        fakes, count = self.fakes, max(1, fault.count)
        injected = TransientError(f"injected {fault.target} fault", code="injected")
        if fault.target is Target.JOBS:
            fakes.jobs.fail_next(count, injected)
        elif fault.target is Target.JOB_STATUS:
            status = FAULT_STATUSES[fault.status % len(FAULT_STATUSES)]
            fakes.jobs.fail_on_status(status, count, injected)
        elif fault.target is Target.INDEX:
            fakes.index.fail_next_request(injected, count)
        elif fault.target is Target.INDEX_KEYS:
            fakes.index.fail_keys(503, lambda _key: True, times=count)
        elif fault.target is Target.EMBED:
            fakes.embedder.fail_next(count, injected)
        elif fault.target is Target.THROTTLE:
            throttled = TransientError("injected 429", retry_after=THROTTLE_S, code="throttled")
            fakes.embedder.fail_next(count, throttled)
        else:
            fakes.blobs.fail_next(count, injected)

    def damage(self, path: str, lose: bool) -> None:
        self.paths.add(path)  # a stray chunk may name a path nobody wrote: it is still ours to check
        index = self.fakes.index
        doc_id = DocumentRef(self.services.blobs.container, path).doc_id
        try:
            held = sorted(index.ids_for_doc(doc_id))
            if lose:
                index.delete([chunk_id for chunk_id, _ in held[:1]])
                return
            now = self.clock.now
            stray = Chunk(doc_id, 1000 + len(held), "A stray leftover.", "0" * 64, None, None, (), 4)
            vector = (1.0,) + (0.0,) * (index.dimensions - 1)
            index.upsert([IndexRecord(stray, vector, path, "stray", "text/plain", now, now)])
        except IngestionError as error:
            self.note(f"  damage {path}: {error.message}")

    def heal(self) -> None:
        """The faults stop: withdraw every armed fault that has not fired yet."""
        self.fakes.heal()
        self.healed = True

    async def reconcile_pass(self) -> Report | None:
        """One reconciler pass; a service fault kills it, as it would kill the timer function."""
        try:
            report = await reconcile(self.services, self.orchestrations)
        except IngestionError as error:
            self.note(f"  reconcile pass died: {error.message}")
            return None
        for action, outcome in report.actions:
            self.note(f"  reconcile {action.rule} {action.path}: {outcome}")
        return report

    # ------------------------------------------------------------------ running orchestrations

    def work(self) -> None:
        """The Durable host runs what was started, in order."""
        while self.queue:
            found = self.instances.get(self.queue.pop(0))
            if found is None or found.status != "Pending":
                continue
            crash = None if self.healed else found.run.crash
            if found.run.mode is Mode.PIPELINE:
                self.run_pipeline(found, crash)
            else:
                self.drive(found, crash)

    def run_pipeline(self, instance: Instance, crash: int | None) -> None:
        instance.status = "Running"
        request = StageRequest.from_payload(instance.input["request"])
        policy = RetryPolicy.from_payload(instance.input["policy"])
        jobs = self.fakes.jobs
        if crash is not None:
            jobs.fail_on_status(FAULT_STATUSES[crash % len(FAULT_STATUSES)], 1, Crash())
        try:
            job = run_document(self.services, request, policy)
        except Crash:
            self.crashed(instance)
            return
        except Exception as error:  # noqa: BLE001 -- run_document promises not to raise: a finding
            self.bugs.append(f"run_document raised {error!r}")
            instance.status = "Failed"
            return
        finally:
            jobs.disarm_crashes()
        instance.status, instance.last_updated = "Completed", self.clock.now
        self.note(f"  ran {instance.instance_id[-8:]} (pipeline): {job.status if job else 'superseded'}")

    def crashed(self, instance: Instance) -> None:
        instance.status = "Failed" if instance.run.failed else "Running"
        if instance.status == "Failed":
            instance.generator, instance.task = None, None
        self.note(f"  {instance.instance_id[-8:]} crashed; instance {instance.status}")

    def drive(self, instance: Instance, crash: int | None) -> None:
        """Run (or resume) the real orchestrator; the host dies before activity ``crash`` of this drive."""
        if instance.generator is None:
            instance.generator = ingest_document(Context(self, instance))
            instance.task = next(instance.generator)
        instance.status = "Running"
        generator, task, done = instance.generator, instance.task, 0
        while True:
            if task[0] == "timer":
                self.clock.now = max(self.clock.now, task[1])
                answer: Any = None
            else:
                if crash is not None and done >= crash:
                    instance.task = task  # Durable runs this activity again when the instance resumes
                    self.crashed(instance)
                    return
                answer = self.activity(task[1], task[2])
                done += 1
                instance.last_updated = self.clock.now
            try:
                task = generator.throw(answer) if isinstance(answer, Exception) else generator.send(answer)
            except StopIteration as finished:
                instance.status, instance.generator, instance.task = "Completed", None, None
                instance.last_updated = self.clock.now
                self.note(f"  ran {instance.instance_id[-8:]} (durable): {finished.value}")
                return

    def activity(self, name: str, payload: Any) -> Any:
        """One activity, with ``CRASH_RETRY``'s net: three tries, then the orchestrator sees an Exception."""
        for _ in range(3):
            try:
                if name == RECORD_OUTCOME:
                    return activities.record_outcome(self.services, payload)
                return activities.run_stage(self.services, name, payload)
            except Exception as error:  # noqa: BLE001 -- activities answer expected failures: this is a finding
                self.bugs.append(f"activity {name} raised {error!r}")
                last = error
        return Exception(f"activity {name} failed: {last}")

    # ------------------------------------------------------------------ the end

    async def converge(self, long_wait: bool = False, race: bool = False) -> list[Report | None]:
        """The faults stop; time passes; at most two reconciler passes, each followed by the runs it
        started (``race``: during the first pass too, and terminated activities still finish)."""
        self.heal()
        self.late.clear()  # whatever was still queued is never delivered
        settings = self.services.settings
        quiet = max(settings.reconcile.lease_s, settings.reconcile.settle_s, settings.retry.retry_later_s, THROTTLE_S)
        if long_wait:
            self.clock.now += timedelta(days=settings.reconcile.artifact_retention_days + 1)
        reports = []
        for number in (1, 2):
            self.clock.now += timedelta(seconds=quiet + 1)
            self.note(f"reconcile (converging, pass {number})")
            self.racing = race and number == 1
            reports.append(await self.reconcile_pass())
            self.racing = False
            self.work()
        return reports

    # ------------------------------------------------------------------ the invariant

    def problems(self, clean: CleanRuns) -> list[str]:
        """Everything that contradicts "converged" (empty when the world is consistent)."""
        services = self.services
        found: list[str] = []
        doc_ids = {DocumentRef(services.blobs.container, path).doc_id: path for path in self.paths}
        jobs = list(all_jobs(services.jobs))
        for listed in jobs:
            if not listed.status.is_terminal:
                found.append(f"{listed.path}: job is {listed.status}, not terminal")
            if listed.doc_id not in doc_ids:
                found.append(f"{listed.doc_id}: a job for a path nobody wrote")
        held_by_doc: dict[str, dict[str, str]] = {}
        after: str | None = None
        while chunks := services.index.chunks(after, 500):
            for chunk in chunks:
                held_by_doc.setdefault(chunk.doc_id, {})[chunk.id] = chunk.version
            after = chunks[-1].id
        for doc_id in sorted(set(held_by_doc) - set(doc_ids)):
            found.append(f"{doc_id}: {len(held_by_doc[doc_id])} chunks of a document nobody wrote")
        for doc_id, path in sorted(doc_ids.items(), key=lambda item: item[1]):
            job = services.jobs.get(doc_id)
            held = held_by_doc.get(doc_id, {})
            data = self.truth.get(path)
            if data is None:
                if job is not None and job.status is not JobStatus.DELETED:
                    found.append(f"{path}: the blob is gone but its job is {job.status}")
                if held:
                    found.append(f"{path}: the blob is gone but the index holds {len(held)} chunks")
                continue
            found.extend(f"{path}: {problem}" for problem in self._blob_problems(path, data, job, held, clean))
        return found

    def gave_up(self, job: Job) -> bool:
        """Re-driven ``max_redrives`` times (lost orchestrations, spent retries): a person's turn,
        by design, whatever the file holds; its chunks are out of the index."""
        return job.status is JobStatus.NEEDS_REVIEW and job.redrives >= self.services.settings.max_redrives

    def _blob_problems(
        self, path: str, data: bytes, job: Job | None, held: dict[str, str], clean: CleanRuns
    ) -> list[str]:
        etag = self.services.blobs.properties(path).version.etag
        expected = clean(path, data)
        if job is None:
            return ["the blob exists but has no job"]
        if job.version.etag != etag:
            return [f"the job is at version {job.version.etag}, the blob at {etag}"]
        if job.status is not expected.status and not self.gave_up(job):
            return [f"the job is {job.status}, a clean run ends {expected.status}"]
        found = []
        wanted = {} if self.gave_up(job) else expected.chunks
        if held != wanted:
            extra, missing = len(set(held) - set(wanted)), len(set(wanted) - set(held))
            stale = sum(1 for key, version in held.items() if wanted.get(key, version) != version)
            found.append(f"the index holds {extra} extra, {missing} missing, {stale} stale chunks")
        if job.status is JobStatus.INDEXED:
            content_hash = hashlib.sha256(data).hexdigest()
            if (job.version.content_hash, job.indexed_hash) != (content_hash, content_hash):
                found.append(
                    f"indexed hash {job.indexed_hash} / version {job.version.content_hash}, not {content_hash}"
                )
            if (job.chunk_count, job.chunk_ids_digest) != (len(expected.chunks), chunk_ids_digest(expected.chunks)):
                found.append(f"the job records {job.chunk_count} chunks / digest {job.chunk_ids_digest}")
        return found


class CleanRuns:
    """What one undisturbed run of some bytes at some path ends with (chunk ids depend on the path), cached."""

    def __init__(self, tokenizer: Tokenizer, data_dir: Path) -> None:
        self._tokenizer = tokenizer
        self._data_dir = data_dir
        self._outcomes: dict[tuple[str, bytes], Outcome] = {}

    def __repr__(self) -> str:  # hypothesis prints the test's arguments: keep this one short
        return f"CleanRuns({len(self._outcomes)} outcomes)"

    def __call__(self, path: str, data: bytes) -> Outcome:
        if (path, data) not in self._outcomes:
            world = World.create(self._tokenizer, self._data_dir)
            world.write(path, data)
            asyncio.run(world.deliver("created", path, Run()))
            world.work()
            job = world.services.jobs.get(DocumentRef(world.services.blobs.container, path).doc_id)
            assert job is not None
            self._outcomes[(path, data)] = Outcome(job.status, dict(world.services.index.ids_for_doc(job.doc_id)))
        return self._outcomes[(path, data)]
