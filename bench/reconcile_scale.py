"""One reconciler pass over N documents on the embedded adapters: time and peak memory, by page size.

    .venv/bin/python bench/reconcile_scale.py [--sizes 10000,30000,100000] [--pages 100,1000] [--quick]

For each size N a world is built once and cached under the temp dir (``--rebuild`` builds it again):
N documents in an inbox of folders of 1,000 files (names like blob paths with a prefix; a flat folder
of N files costs the folder adapter a directory scan per page), their jobs ``indexed`` at the files' ETags with
``chunk_count`` and ``chunk_ids_digest`` matching 1-3 index rows each, and N/1000 documents of each
inconsistent kind (a blob with no job, a blob newer than its job, a deleted blob, orphan chunks, a
damaged index entry, a retry that is due, an in-progress job nobody drives), spread over all pages.
The timed pass is ``reconcile(services, None, dry_run=True)`` with ``max_items`` above N: all three
sweeps read and decide everything, nothing is applied (no orchestration started, no job written). It
must find exactly the injected inconsistencies; any difference is printed and fails the run.

Each (N, page size) runs in a fresh child process, so its memory figure belongs to that pass alone:
the peak resident set during the pass (``/proc/self/statm`` sampled every 5 ms, and ``ru_maxrss`` if
it rose) above the RSS when the pass began: every allocation, SQLite's and the thread pool's included.
``--tracemalloc`` adds ``tracemalloc``'s peak of Python objects, from a second, untimed pass (tracing
makes the pass ~3x slower). A cell whose time, extrapolated from the same page size's smaller cells,
exceeds ``--cell-limit-s`` is skipped and says so. Adapter calls are timed through thin wrappers to
show where the time goes. Ratios compare cells of one run: this machine is noisy.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingestion.adapters.local_blob import FolderBlobSource
from ingestion.adapters.sqlite_index import SqliteSearchIndex
from ingestion.adapters.sqlite_jobs import SqliteJobStore
from ingestion.bootstrap import build_services
from ingestion.config import Settings
from ingestion.model import (
    PROGRESS,
    Chunk,
    DocumentRef,
    DocumentVersion,
    IndexRecord,
    Job,
    JobStatus,
    TrailEntry,
    chunk_ids_digest,
    stable_hash,
    to_iso,
)
from ingestion.reconcile import Rule
from ingestion.reconcile_run import reconcile

WORLD_FORMAT = 2  # bump when the world changes, so cached worlds are built again
DIMENSIONS = 8  # the reconciler never reads vectors; short ones keep the index file small
EXPECTED_RULE = {
    "no_job": Rule.MISSED_TRIGGER,
    "stale_job": Rule.MISSED_TRIGGER,
    "blob_deleted": Rule.BLOB_DELETED,
    "orphan_chunks": Rule.ORPHAN_CHUNKS,
    "damaged_index": Rule.INDEX_MISMATCH,
    "retry_due": Rule.RETRY_DUE,
    "stuck": Rule.ORCHESTRATION_LOST,
}
KINDS = tuple(EXPECTED_RULE)
NO_BLOB = ("blob_deleted", "orphan_chunks")
NO_JOB = ("no_job", "orphan_chunks")
INDEXED = ("ok", "stale_job", "blob_deleted", "orphan_chunks", "damaged_index")
CALLS = {  # adapter call -> column header
    "blobs.page": "blobs.page",
    "blobs.properties": "blobs.props",
    "jobs.list": "jobs.list",
    "jobs.get_many": "jobs.getmany",
    "index.chunks": "idx.chunks",
    "index.ids_for_doc": "idx.ids_for",
}


FILES_PER_FOLDER = 1000


class Doc(NamedTuple):
    number: int
    path: str
    doc_id: str
    kind: str  # "ok" or one of KINDS


def bench_settings(root: Path, page: int = 500, max_items: int = 20_000) -> Settings:
    base = Settings.from_env({})
    return dataclasses.replace(
        base,
        inbox_dir=root / "inbox",
        data_dir=root / "data",
        tiktoken_cache_dir=Path(tempfile.gettempdir()) / "ingestion-tiktoken",
        embedding=dataclasses.replace(base.embedding, dimensions=DIMENSIONS),
        reconcile=dataclasses.replace(base.reconcile, page_size=page, max_items=max_items),
    )


# --------------------------------------------------------------------------- the world


def plan(size: int) -> list[Doc]:
    """Documents 1..7 of every stride of ~1,000 are inconsistent, one kind each."""
    per_kind = max(1, size // 1000)
    stride = size // per_kind
    docs = []
    for number in range(size):
        slot, offset = divmod(number, stride)
        kind = KINDS[offset - 1] if slot < per_kind and 1 <= offset <= len(KINDS) else "ok"
        path = f"d{number // FILES_PER_FOLDER:04d}/f{number:07d}.txt"
        docs.append(Doc(number, path, DocumentRef("uploads", path).doc_id, kind))
    return docs


def records_for(doc: Doc, at: datetime) -> list[IndexRecord]:
    """The document's 1-3 index rows (3 when damaged), built as ``tests/integration/builders.make_record``."""
    count = 3 if doc.kind == "damaged_index" else 1 + doc.number % 3
    return [
        IndexRecord(
            chunk=Chunk(doc.doc_id, ordinal, f"{doc.path} part {ordinal}", content_hash(doc), ordinal + 1, None, (), 4),
            vector=(1.0,) + (0.0,) * (DIMENSIONS - 1),
            path=doc.path,
            title=doc.path,
            content_type="text/plain",
            last_modified=at,
            ingested_at=at,
        )
        for ordinal in range(count)
    ]


def content_hash(doc: Doc) -> str:
    return stable_hash("content", doc.path)


def damaged(records: list[IndexRecord], variant: int) -> list[IndexRecord]:
    """The index lost a chunk, holds one of another version, or one with another id (same count)."""
    if variant == 0:
        return records[:-1]
    first = records[0]
    if variant == 1:
        chunk = dataclasses.replace(first.chunk, version=stable_hash("older content"))
    else:
        chunk = dataclasses.replace(first.chunk, ordinal=first.chunk.ordinal + 50)
    return [dataclasses.replace(first, chunk=chunk), *records[1:]]


def job_for(doc: Doc, version: DocumentVersion, status: JobStatus, at: datetime, **fields: Any) -> Job:
    """A job as the pipeline leaves it, with its trail and stage times (a realistic body to parse)."""
    steps = {
        JobStatus.INDEXED: (*PROGRESS, JobStatus.INDEXED),
        JobStatus.EMBEDDING: PROGRESS[:5],
        JobStatus.RETRY_LATER: (*PROGRESS[:2], JobStatus.RETRY_LATER),
    }[status]
    return Job(
        doc_id=doc.doc_id,
        container="uploads",
        path=doc.path,
        version=version,
        status=status,
        created_at=at,
        updated_at=at,
        attempts=1,
        instance_id=f"ingest-{doc.doc_id}-{version.key}",
        stage_times={step.value: to_iso(at) for step in steps},
        trail=tuple(TrailEntry(at, step, "blob created" if step is JobStatus.QUEUED else "") for step in steps),
        **fields,
    )


def build_blobs_and_jobs(root: Path, size: int, at: datetime) -> None:
    """The files, then a job per document at its file's ETag (``SqliteJobStore.create``: no bulk API)."""
    settings = bench_settings(root)
    docs = plan(size)
    for doc in docs:  # empty files: only an inode each; the reconciler never reads content
        if doc.kind not in NO_BLOB:
            (settings.inbox_dir / doc.path).parent.mkdir(exist_ok=True)
            os.close(os.open(settings.inbox_dir / doc.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    listed = FolderBlobSource(settings.inbox_dir, settings.container).list()
    versions = {blob.path: blob.version for blob in listed}
    jobs = SqliteJobStore(settings.data_dir / "jobs.sqlite3")
    try:
        for doc in docs:
            if doc.kind in NO_JOB:
                continue
            seen = versions.get(doc.path) or DocumentVersion('"gone"', 0, at)
            version = dataclasses.replace(seen, content_hash=content_hash(doc))
            if doc.kind == "retry_due":
                jobs.create(job_for(doc, version, JobStatus.RETRY_LATER, at, retry_at=at))
            elif doc.kind == "stuck":
                jobs.create(job_for(doc, version, JobStatus.EMBEDDING, at))
            else:
                if doc.kind == "stale_job":
                    version = dataclasses.replace(version, etag='"an older version"')
                ids = [record.id for record in records_for(doc, at)]
                recorded = {"chunk_count": len(ids), "chunk_ids_digest": chunk_ids_digest(ids)}
                jobs.create(job_for(doc, version, JobStatus.INDEXED, at, indexed_hash=content_hash(doc), **recorded))
    finally:
        jobs.close()


def build_index(root: Path, size: int, at: datetime) -> int:
    """The index rows, upserted 1,000 at a time; returns how many."""
    index = SqliteSearchIndex(bench_settings(root).data_dir / "index.sqlite3", DIMENSIONS)
    pending: list[IndexRecord] = []
    total = 0
    try:
        for doc in plan(size):
            if doc.kind in INDEXED:
                records = records_for(doc, at)
                pending += damaged(records, doc.number % 3) if doc.kind == "damaged_index" else records
            if len(pending) >= 1000 or doc.number == size - 1:
                index.upsert(pending)
                total += len(pending)
                pending = []
    finally:
        index.close()
    return total


def world(cache: Path, size: int, rebuild: bool) -> tuple[Path, dict[str, Any], float]:
    """The world of ``size`` documents, built on first use (a marker written last says it is whole)."""
    root = cache / f"n{size}-w{WORLD_FORMAT}"
    marker = root / "world.json"
    if marker.exists() and not rebuild:
        return root, json.loads(marker.read_text()), 0.0
    started = time.perf_counter()
    shutil.rmtree(root, ignore_errors=True)
    (root / "inbox").mkdir(parents=True)
    (root / "data").mkdir()
    at = datetime.now(UTC) - timedelta(days=2)  # older than every lease and settle time
    # Two processes on two cores: the job and index databases are separate files.
    with ProcessPoolExecutor(2) as pool:
        jobs = pool.submit(build_blobs_and_jobs, root, size, at)
        chunks = pool.submit(build_index, root, size, at).result()
        jobs.result()
    docs = plan(size)
    meta = {
        "expected": {doc.doc_id: EXPECTED_RULE[doc.kind].value for doc in docs if doc.kind != "ok"},
        "seen": {
            "blobs": sum(doc.kind not in NO_BLOB for doc in docs),
            "jobs": sum(doc.kind not in NO_JOB for doc in docs),
            "chunks": chunks,
        },
    }
    marker.write_text(json.dumps(meta))
    return root, meta, time.perf_counter() - started


# --------------------------------------------------------------------------- one pass (child process)


class Timed:
    """A port whose method calls add their wall time to ``spent`` (the reconciler awaits one at a time)."""

    def __init__(self, name: str, port: Any, spent: dict[str, float], calls: Counter[str]) -> None:
        self._name, self._port, self._spent, self._calls = name, port, spent, calls

    def __getattr__(self, attribute: str) -> Any:
        value = getattr(self._port, attribute)
        if not callable(value):
            return value
        key = f"{self._name}.{attribute}"

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = value(*args, **kwargs)
            if isinstance(result, Iterator):  # ids_for_doc is lazy: its queries run when consumed
                result = iter(list(result))
            self._spent[key] += time.perf_counter() - started
            self._calls[key] += 1
            return result

        return timed


def rss_kib() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def run_pass(root: Path, page: int, traced: bool) -> dict[str, Any]:
    services = build_services(bench_settings(root, page=page, max_items=10**9))
    spent: dict[str, float] = defaultdict(float)
    calls: Counter[str] = Counter()
    timed = dataclasses.replace(
        services,
        blobs=Timed("blobs", services.blobs, spent, calls),
        jobs=Timed("jobs", services.jobs, spent, calls),
        index=Timed("index", services.index, spent, calls),
    )
    python_mib = None
    try:
        start_rss, start_max = rss_kib(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = [start_rss]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.005):
                peak[0] = max(peak[0], rss_kib())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.perf_counter()
        report = asyncio.run(reconcile(timed, None, dry_run=True))
        seconds = time.perf_counter() - started
        stop.set()
        sampler.join()
        end_max = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_rss = max(peak[0], end_max if end_max > start_max else 0)
        if traced:
            tracemalloc.start()
            asyncio.run(reconcile(services, None, dry_run=True))
            python_mib = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    finally:
        services.close()
    return {
        "seconds": seconds,
        "rss_mib": (peak_rss - start_rss) / 1024,
        "python_mib": python_mib,
        "found": {action.doc_id: action.rule.value for action, _ in report.actions},
        "outcomes": sorted({outcome for _, outcome in report.actions}),
        "seen": dict(report.seen),
        "finished": report.finished_sweeps,
        "spent": dict(spent),
        "calls": dict(calls),
    }


def child(root: Path, page: int, traced: bool) -> dict[str, Any]:
    """One pass in a fresh interpreter (its peak RSS is then this pass's alone)."""
    command = [sys.executable, __file__, "--child", str(root), "--pages", str(page)]
    command += ["--tracemalloc"] if traced else []
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pass over {root} (page {page}) failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.splitlines()[-1]))


# --------------------------------------------------------------------------- the report


def check(meta: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """Why the pass did not find exactly the injected inconsistencies (empty when it did)."""
    problems = []
    expected, found = meta["expected"], result["found"]
    wrong = {doc: (expected.get(doc), rule) for doc, rule in found.items() if expected.get(doc) != rule}
    missed = Counter(rule for doc, rule in expected.items() if doc not in found)
    if wrong:
        problems.append(f"{len(wrong)} unexpected actions, e.g. {next(iter(wrong.items()))} (expected, found)")
    if missed:
        problems.append(f"missed {dict(missed)}")
    if result["seen"] != meta["seen"]:
        problems.append(f"read {result['seen']}, the world holds {meta['seen']}")
    if result["finished"] != ["blobs", "jobs", "index"] or result["outcomes"] != ["planned"]:
        problems.append(f"sweeps finished {result['finished']}, outcomes {result['outcomes']}")
    return problems


def exponent(n1: int, t1: float, n2: int, t2: float) -> float:
    """``e`` in time ~ N**e between two cells (1: linear, 2: quadratic)."""
    return math.log(t2 / t1) / math.log(n2 / n1)


def parts(row: dict[str, Any]) -> dict[str, float]:
    """A pass's time split into its adapter calls and the rest."""
    spent = {name: row["spent"].get(name, 0.0) for name in CALLS}
    return {**spent, "rest": row["seconds"] - sum(spent.values())}


def predicted_s(done: list[tuple[int, dict[str, float]]], size: int) -> float:
    """A cell's time from the same page size's smaller cells: each part grown at the rate it showed
    between the last two (at least linearly; a quadratic listing then shows as one)."""
    if not done:
        return 0.0
    n_last, last = done[-1]
    total = 0.0
    for name, seconds in last.items():
        growth = 1.0
        if len(done) >= 2 and done[-2][1][name] > 0 and seconds > 0:
            growth = min(2.5, max(1.0, exponent(done[-2][0], done[-2][1][name], n_last, seconds)))
        total += seconds * (size / n_last) ** growth
    return total


def print_tables(rows: dict[tuple[int, int], dict[str, Any]], sizes: list[int], pages: list[int]) -> None:
    traced = any(row["python_mib"] is not None for row in rows.values())
    print("\none dry-run pass (all sweeps read and decide; nothing applied); items = blobs + jobs + chunks read")
    python = f"{'py MiB':>7}" if traced else ""
    print(f"{'N':>7}{'page':>6}{'s':>8}{'items/s':>9}{'us/item':>8}{'RSS+MiB':>8}{python}{'actions':>9}")
    for (size, page), row in sorted(rows.items()):
        print(
            f"{size:>7}{page:>6}{row['seconds']:>8.2f}{row['items'] / row['seconds']:>9.0f}"
            f"{row['seconds'] / row['items'] * 1e6:>8.1f}{row['rss_mib']:>8.1f}"
            + (f"{row['python_mib']:>7.2f}" if traced else "")
            + f"{len(row['found']):>9}  {'as injected' if row['matches'] else 'NOT AS INJECTED'}"
        )
    print("\nwhere the time goes (s): inside adapter calls, and the rest (the reconciler, thread hops)")
    print(f"{'N':>7}{'page':>6}" + "".join(f"{header:>12}" for header in (*CALLS.values(), "rest")))
    for (size, page), row in sorted(rows.items()):
        print(f"{size:>7}{page:>6}" + "".join(f"{seconds:>12.2f}" for seconds in parts(row).values()))
    size, page = max(rows)
    calls = rows[size, page]["calls"]
    print(f"  calls at N={size} page {page}: " + ", ".join(f"{CALLS[k]} {calls.get(k, 0)}" for k in CALLS))
    print("\nlinearity: time(N) / time(smallest N) against N / smallest N (exponent e in time ~ N**e)")
    for page in pages:
        done = [(n, rows[n, page]) for n in sizes if (n, page) in rows]
        if len(done) < 2:
            continue
        n0, r0 = done[0]
        growth = ", ".join(
            f"N x{n / n0:.0f}: time x{t / r0['seconds']:.1f} (e={exponent(n0, r0['seconds'], n, t):.2f})"
            for n, t in ((n, r["seconds"]) for n, r in done[1:])
        )
        per_page = ", ".join(f"{1000 * r['spent']['blobs.page'] / r['calls']['blobs.page']:.0f}" for _, r in done)
        print(f"  page {page:>5}: {growth}; ms per blobs.page call: {per_page}")
    print("memory: peak RSS growth (MiB) at each page size, by N" + (" (| tracemalloc peak)" if traced else ""))
    for size in sizes:
        cells = [
            f"page {p}: {rows[size, p]['rss_mib']:.1f}" + (f" | {rows[size, p]['python_mib']:.2f}" if traced else "")
            for p in pages
            if (size, p) in rows
        ]
        if cells:
            print(f"  N={size:>7}: " + "; ".join(cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,30000,100000", help="numbers of documents, comma-separated")
    parser.add_argument("--pages", default="100,1000", help="Settings.reconcile.page_size values, comma-separated")
    parser.add_argument("--quick", action="store_true", help="smoke run: sizes 2000,6000")
    parser.add_argument("--tracemalloc", action="store_true", help="also Python's peak, from a second pass")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "reconcile-scale")
    parser.add_argument("--rebuild", action="store_true", help="build the worlds again")
    parser.add_argument("--cell-limit-s", type=float, default=180.0, help="skip cells predicted slower (0: never)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    pages = [int(page) for page in args.pages.split(",")]
    if args.child is not None:
        print(json.dumps(run_pass(args.child, pages[0], args.tracemalloc)))
        return 0
    sizes = sorted(int(size) for size in ("2000,6000" if args.quick else args.sizes).split(","))
    if min(sizes) < 100:
        parser.error("sizes must be at least 100")
    rows: dict[tuple[int, int], dict[str, Any]] = {}
    failures: list[str] = []
    injected: list[str] = []
    load_before = os.getloadavg()[0]
    for size in sizes:
        root, meta, built_s = world(args.cache, size, args.rebuild)
        injected.append(f"N={size}: {len(meta['expected'])}")
        seen = meta["seen"]
        how = f"built in {built_s:.1f} s" if built_s else f"cached in {args.cache}"
        print(f"N={size}: {seen['blobs']} blobs, {seen['jobs']} jobs, {seen['chunks']} chunks, {how}")
        rules = Counter(meta["expected"].values())
        print(f"  injected: {', '.join(f'{rule} {count}' for rule, count in sorted(rules.items()))}")
        for page in pages:
            earlier = [(n, parts(rows[n, page])) for n in sizes if (n, page) in rows]
            guess = predicted_s(earlier, size)
            if args.cell_limit_s and guess > args.cell_limit_s:
                print(f"  page {page}: skipped, predicted {guess:.0f} s > --cell-limit-s {args.cell_limit_s:.0f}")
                continue
            result = rows[size, page] = child(root, page, args.tracemalloc)
            result["items"] = sum(result["seen"].values())
            problems = check(meta, result)
            result["matches"] = not problems
            failures += [f"N={size} page={page}: {problem}" for problem in problems]
    if rows:
        print_tables(rows, sizes, pages)
    load = f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end, {os.cpu_count()} cores"
    print(f"{load} (other processes on the machine make times noisy)")
    print(f"check ({', '.join(injected)} injected): " + ("FAILED" if failures else "each pass found exactly those"))
    for failure in failures:
        print(f"  {failure}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
