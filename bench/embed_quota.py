"""Embedding against a token quota: the pipeline's embed stage with the shared limiter vs a plain SDK client.

    .venv/bin/python bench/embed_quota.py [--docs 240] [--threads 8] [--tpm 300000] [--window-s 3]

Starts the local embeddings server in-process with Azure-style quota (tokens per minute reset every
minute, requests per minute over sixths of it) on a compressed minute (``--window-s`` seconds), and
prepares a workload: documents of real text (the corpus's War and Peace when present, else the
samples) through the real fetch, parse and chunk stages on the in-memory fakes.

Run 1, the pipeline: ``embed_chunks`` on every document, with ``--threads`` workers like concurrent
activities, the ``OpenAIEmbedder`` from ``connect_embedder`` as embedder (one limiter shared by every
thread). A ``TransientError`` puts the document back after its ``retry_after`` (the retry policy's
delay, as the orchestrator would): a retry, not a failure. A permanent error, or retries running
out, fails the document.

Run 2, the baseline, in the same process on the same documents: a plain ``openai.AzureOpenAI``
client with default settings (2 retries, honouring retry-after), no limiter, one
``embeddings.create`` per batch (the stage's default batch bounds); a document fails when the SDK
gives up.

Reported: tokens the server accepted per (compressed) minute as a share of the quota over the
steady part of each run (every full minute but the first and the last), 429s, retries, failures.
The issue's bar: the pipeline sustains at least 90% of the quota with zero failed documents.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import random
import re
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai

from ingestion.adapters.local_embedder import HashingEmbedder
from ingestion.adapters.openai_embedder import connect_embedder
from ingestion.config import EmbeddingSettings, ParseLimits, Settings
from ingestion.errors import TransientError
from ingestion.jobs import register_version
from ingestion.model import Chunk, DocumentRef
from ingestion.retry import SDK_RETRIES, jitter_for
from ingestion.services import Services
from ingestion.stages import StageRequest, chunk_document, embed_chunks, fetch_blob, parse_document
from ingestion.stages.chunk import load_chunks
from ingestion.stages.common import bounded_batches
from ingestion.tokens import Tokenizer
from tests.emulators.embeddings_server import EmbeddingsServer
from tests.fakes import InMemoryArtifactStore, InMemoryBlobSource, InMemoryJobStore, InMemorySearchIndex

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO.parent / "shared" / "corpus" / "public" / "book-war-and-peace-1225p.txt"
API_KEY = "bench-key"
DEPLOYMENT = "text-embedding-3-small"
DIMENSIONS = 256


# ------------------------------------------------------------------ workload


def paragraphs() -> list[str]:
    """Paragraphs of real prose: the corpus's novel, else the repository's samples."""
    sources = [BOOK] if BOOK.is_file() else sorted((REPO / "samples").glob("*.[mhe]*"))
    text = "\n\n".join(path.read_text(encoding="utf-8", errors="replace") for path in sources)
    found = [" ".join(block.split()) for block in re.split(r"\n\s*\n", text)]
    return [block for block in found if len(block) > 40]


def documents(count: int, words_per_doc: tuple[int, int]) -> list[bytes]:
    """``count`` Markdown documents of consecutive paragraphs from a seeded random place each."""
    pool = paragraphs()
    docs = []
    for number in range(count):
        rng = random.Random(number)
        target, start = rng.randint(*words_per_doc), rng.randrange(len(pool))
        body, words = [f"# Document {number}"], 0
        while words < target:
            paragraph = pool[(start + len(body)) % len(pool)]
            body.append(paragraph)
            words += len(paragraph.split())
        docs.append("\n\n".join(body).encode())
    return docs


def chunks_of(services: Services, request: StageRequest) -> list[Chunk]:
    job = services.jobs.get(request.doc_id)
    assert job is not None and job.version.content_hash is not None
    return load_chunks(services, request.doc_id, job.version.content_hash)


def prepare(services: Services, docs: list[bytes]) -> list[StageRequest]:
    """Each document uploaded, registered and taken through fetch, parse and chunk: ready to embed."""
    assert isinstance(services.blobs, InMemoryBlobSource)
    requests = []
    for number, data in enumerate(docs):
        info = services.blobs.put(f"bench/doc-{number:05d}.md", data)
        job = register_version(services, DocumentRef(services.blobs.container, info.path), info.version).job
        request = StageRequest(job.doc_id, info.version.etag)
        fetch_blob(services, request)
        parse_document(services, request)
        chunk_document(services, request)
        requests.append(request)
    return requests


# ------------------------------------------------------------------ the runs


@dataclass
class Outcome:
    name: str
    seconds: float = 0.0
    failed: int = 0
    doc_retries: int = 0
    sdk_retries: int = 0
    throttled: int = 0
    asked_to_wait_s: float = 0.0  # retry-after summed over the 429s
    requests: int = 0
    windows: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # why documents failed (first few are reported)


class RetryQueue:
    """Documents to embed, each due at a time; a transient failure puts one back for later."""

    def __init__(self, requests: list[StageRequest]) -> None:
        self._heap = [(0.0, number, request, 1) for number, request in enumerate(requests)]
        self._open = len(requests)
        self._sequence = len(requests)
        self._ready = threading.Condition()

    def take(self) -> tuple[StageRequest, int] | None:
        """The next due document and its attempt number; ``None`` once every document is settled."""
        with self._ready:
            while True:
                if self._open == 0:
                    return None
                now = time.monotonic()
                if self._heap and self._heap[0][0] <= now:
                    _, _, request, attempt = heapq.heappop(self._heap)
                    return request, attempt
                self._ready.wait(self._heap[0][0] - now if self._heap else None)

    def again(self, request: StageRequest, attempt: int, delay: float) -> None:
        with self._ready:
            self._sequence += 1
            heapq.heappush(self._heap, (time.monotonic() + delay, self._sequence, request, attempt + 1))
            self._ready.notify()

    def settled(self) -> None:
        with self._ready:
            self._open -= 1
            self._ready.notify_all()


def run_threads(threads: int, work: Callable[[], None]) -> float:
    started = time.perf_counter()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return time.perf_counter() - started


def run_pipeline(services: Services, requests: list[StageRequest], args: argparse.Namespace) -> Outcome:
    """The embed stage with the OpenAIEmbedder (shared limiter), retried like the orchestrator would."""
    embedder = connect_embedder(
        kind="azure_openai",
        endpoint=f"http://127.0.0.1:{args.port}",
        model=DEPLOYMENT,
        dimensions=DIMENSIONS,
        tokenizer=services.tokenizer,
        api_key=API_KEY,
        tokens_per_minute=args.tpm,
        requests_per_minute=args.rpm,
        minute_s=args.window_s,
    )
    services = dataclasses.replace(services, embedder=embedder)
    policy, queue, outcome, lock = services.settings.retry, RetryQueue(requests), Outcome("pipeline"), threading.Lock()

    def failed(why: str) -> None:
        with lock:
            outcome.failed += 1
            outcome.errors.append(why[:200])

    def work() -> None:
        while (item := queue.take()) is not None:
            request, attempt = item
            try:
                embed_chunks(services, request)
            except TransientError as error:
                delay = policy.next_delay(attempt, error.retry_after, jitter_for(request.doc_id, str(attempt)))
                if delay is not None:
                    with lock:
                        outcome.doc_retries += 1
                    queue.again(request, attempt, delay)
                    continue
                failed(f"retries spent: {error}")
            except Exception as error:  # noqa: BLE001 -- PermanentError or a bug: the document fails, not the run
                failed(f"{type(error).__name__}: {error}")
            # Settled on every path: a worker that died here would leave the others waiting forever.
            queue.settled()

    before = SDK_RETRIES.snapshot().get("openai", 0)
    outcome.seconds = run_threads(args.threads, work)
    outcome.sdk_retries = SDK_RETRIES.snapshot().get("openai", 0) - before
    embedder.close()
    return outcome


def run_baseline(services: Services, requests: list[StageRequest], args: argparse.Namespace) -> Outcome:
    """A plain openai client with default settings, one create() per batch, no limiter."""
    client = openai.AzureOpenAI(
        azure_endpoint=f"http://127.0.0.1:{args.port}", api_key=API_KEY, api_version="2024-10-21"
    )
    settings = services.settings.embedding
    pending, outcome, lock = list(requests), Outcome("baseline"), threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if not pending:
                    return
                request = pending.pop(0)
            chunks = chunks_of(services, request)
            try:
                for batch in bounded_batches(
                    chunks,
                    min(2048, settings.batch_inputs),
                    min(300_000, settings.batch_tokens),
                    lambda c: c.token_count,
                ):
                    client.embeddings.create(
                        input=[chunk.text for chunk in batch], model=DEPLOYMENT, dimensions=DIMENSIONS
                    )
            except Exception as error:  # noqa: BLE001 -- the SDK gave up (or a bug): the document failed
                with lock:
                    outcome.failed += 1
                    outcome.errors.append(f"{type(error).__name__}: {error}"[:200])

    outcome.seconds = run_threads(args.threads, work)
    client.close()
    return outcome


def observe(server: EmbeddingsServer, outcome: Outcome) -> Outcome:
    records = server.records
    outcome.requests = len(records)
    outcome.throttled = sum(1 for record in records if record.status == 429)
    outcome.asked_to_wait_s = sum(record.retry_after_s for record in records if record.status == 429)
    if outcome.name == "baseline":  # the SDK numbers its attempts; the server saw every retry
        outcome.sdk_retries = sum(1 for record in records if record.retry_count > 0)
    outcome.windows = server.tokens_by_window()
    return outcome


# ------------------------------------------------------------------ report


def steady(outcome: Outcome, quota: int) -> tuple[float, float] | None:
    """Mean and lowest share of the quota over every window but the first (start-up) and the last (the
    tail); ``None`` when the run is too short to have such a window (no figure beats a ramp's)."""
    shares = [100.0 * tokens / quota for tokens in outcome.windows[1:-1]]
    return (statistics.fmean(shares), min(shares)) if shares else None


def steady_cell(outcome: Outcome, quota: int) -> str:
    figures = steady(outcome, quota)
    return "n/a (< 3 windows)" if figures is None else "{:.1f}% (min {:.1f}%)".format(*figures)


def report(args: argparse.Namespace, chunks: int, tokens: int, runs: list[Outcome]) -> None:
    print(
        f"quota: {args.tpm:,} tokens and {args.rpm:,} requests per {args.window_s:g} s 'minute'; "
        f"{args.docs} documents, {chunks:,} chunks, {tokens:,} tokens; {args.threads} threads"
    )
    print(f"{'':30}" + "".join(f"{run.name:>22}" for run in runs))
    rows: list[tuple[str, Callable[[Outcome], str]]] = [
        ("steady tokens/min, % quota", lambda run: steady_cell(run, args.tpm)),
        ("windows (tokens accepted)", lambda run: str(len(run.windows))),
        ("requests sent", lambda run: f"{run.requests:,}"),
        ("429s seen", lambda run: f"{run.throttled:,}"),
        ("retry-after asked, total", lambda run: f"{run.asked_to_wait_s:.1f} s"),
        ("SDK retries", lambda run: f"{run.sdk_retries:,}"),
        ("document retries", lambda run: f"{run.doc_retries:,}" if run.name == "pipeline" else "n/a"),
        ("failed documents", lambda run: f"{run.failed:,}"),
        ("wall time", lambda run: f"{run.seconds:.1f} s"),
    ]
    for label, cell in rows:
        print(f"{label:30}" + "".join(f"{cell(run):>22}" for run in runs))
    print("tokens accepted per window, % of quota:")
    for run in runs:
        print(f"  {run.name:9}" + " ".join(f"{100 * tokens / args.tpm:5.1f}" for tokens in run.windows))
    for run in runs:
        for error in run.errors[:3]:
            print(f"  {run.name} failure: {error}")
    figures = steady(runs[0], args.tpm)
    if figures is None:
        verdict = "cannot be judged against"  # too short a run: use more documents or a shorter window
    else:
        verdict = "meets" if figures[0] >= 90.0 and runs[0].failed == 0 else "does NOT meet"
    print(f"pipeline {verdict} the bar (>= 90% of quota, 0 failed documents)")
    print("command: " + " ".join([".venv/bin/python", "bench/embed_quota.py", *sys.argv[1:]]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=240, help="documents in the workload")
    parser.add_argument("--min-words", type=int, default=3000, help="shortest document, in words")
    parser.add_argument("--max-words", type=int, default=9000, help="longest document, in words")
    parser.add_argument("--threads", type=int, default=8, help="concurrent activities")
    parser.add_argument("--tpm", type=int, default=300_000, help="tokens per (compressed) minute")
    parser.add_argument("--rpm", type=int, default=0, help="requests per minute (default: 6 per 1,000 TPM)")
    parser.add_argument("--window-s", type=float, default=3.0, help="the length of the compressed minute")
    args = parser.parse_args()
    args.rpm = args.rpm or max(1, args.tpm * 6 // 1000)

    tokenizer = Tokenizer("cl100k_base", Path("/tmp/ingestion-tiktoken"))
    settings = Settings(limits=ParseLimits(isolation="inline"), embedding=EmbeddingSettings(dimensions=DIMENSIONS))
    server = EmbeddingsServer(tokenizer, api_key=API_KEY).start()  # on a port the OS picks
    args.port = server.port
    try:
        services = Services(
            settings=settings,
            blobs=InMemoryBlobSource(),
            artifacts=InMemoryArtifactStore(),
            jobs=InMemoryJobStore(),
            index=InMemorySearchIndex(DIMENSIONS),
            embedder=HashingEmbedder(DIMENSIONS, tokenizer),  # replaced by the run; preparing embeds nothing
            tokenizer=tokenizer,
        )
        requests = prepare(services, documents(args.docs, (args.min_words, args.max_words)))
        chunks = [chunks_of(services, request) for request in requests]
        total_chunks, total_tokens = sum(map(len, chunks)), sum(c.token_count for doc in chunks for c in doc)
        runs = []
        for run in (run_pipeline, run_baseline):
            server.reset(args.tpm, args.rpm, args.window_s)
            runs.append(observe(server, run(services, requests, args)))
        report(args, total_chunks, total_tokens, runs)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
