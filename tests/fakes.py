"""In-memory fakes of every port, for unit tests: same semantics as the adapters, plus fault injection.

The contract tests in ``tests/integration`` run against these and against the embedded adapters, so
a behaviour a unit test relies on here is one the real adapters have too. Fakes are thread-safe
(one lock each) and keep everything in dicts; faults are injected explicitly, never at random.
"""

from __future__ import annotations

import itertools
import math
import re
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ingestion.adapters.index_rules import key_problem, record_problem
from ingestion.adapters.local_artifacts import validate_key, validate_prefix
from ingestion.errors import ConcurrencyError, PermanentError, ReasonCode, Superseded
from ingestion.model import DocumentVersion, IndexRecord, Job, JobStatus, from_iso
from ingestion.ports import (
    BlobInfo,
    BlobPage,
    Embedder,
    Embeddings,
    IndexedChunk,
    IndexResult,
    JobPage,
    SearchHit,
    SearchMode,
    SearchQuery,
)

_RRF_K = 60


# --------------------------------------------------------------------------- blobs


_Blobs = list[BlobInfo]  # a module-level name: in the class, ``list`` is the method


class InMemoryBlobSource:
    """Blobs in a dict. ``put`` gives every write a new ETag; ``fail_next`` breaks reads."""

    def __init__(self, container: str = "uploads") -> None:
        self._container = container
        self._blobs: dict[str, tuple[bytes, DocumentVersion]] = {}
        self._lock = threading.Lock()
        self._sequence = itertools.count(1)
        self._last_modified = datetime(2000, 1, 1, tzinfo=UTC)
        self._failures: list[tuple[BaseException, int]] = []
        self.reads: list[str] = []  # the path of every read() call, in order

    @property
    def container(self) -> str:
        return self._container

    def put(self, path: str, data: bytes, last_modified: datetime | None = None) -> BlobInfo:
        """Create or overwrite a blob; ``last_modified`` defaults to now (strictly increasing)."""
        with self._lock:
            if last_modified is None:
                last_modified = max(datetime.now(UTC), self._last_modified + timedelta(microseconds=1))
            self._last_modified = max(self._last_modified, last_modified)
            version = DocumentVersion(f'"0x{next(self._sequence):016X}"', len(data), last_modified)
            self._blobs[path] = (bytes(data), version)
        return BlobInfo(path, version)

    def delete(self, path: str) -> bool:
        """Remove a blob; ``False`` when there was none."""
        with self._lock:
            return self._blobs.pop(path, None) is not None

    def fail_next(self, n: int, error: BaseException, *, after_chunks: int = 0) -> None:
        """Make the next ``n`` read() calls raise ``error`` after yielding ``after_chunks`` chunks."""
        with self._lock:
            self._failures.extend([(error, after_chunks)] * n)

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        return iter(self._sorted(prefix))

    def page(self, continuation: str | None = None, limit: int = 1000) -> BlobPage:
        """A page of ``limit`` blobs after the name ``continuation`` (the last one of the page before)."""
        if limit <= 0:
            raise ValueError("limit must be positive")
        found = self._sorted("", after=continuation)
        if len(found) <= limit:
            return BlobPage(found, None)
        return BlobPage(found[:limit], found[limit - 1].path)

    def properties(self, path: str) -> BlobInfo:
        with self._lock:
            return BlobInfo(path, self._get(path)[1])

    def read(self, path: str, etag: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        with self._lock:
            self.reads.append(path)
            failure = self._failures.pop(0) if self._failures else None
            data, version = self._get(path)
        if version.etag != etag:
            raise Superseded(f"{path}: version {etag} replaced by {version.etag}")
        return self._stream(path, data, etag, chunk_size, failure)

    def _sorted(self, prefix: str, after: str | None = None) -> _Blobs:
        """A snapshot of the blobs under ``prefix`` named after ``after``, in name order."""
        with self._lock:
            return sorted(
                (
                    BlobInfo(path, version)
                    for path, (_, version) in self._blobs.items()
                    if path.startswith(prefix) and (after is None or path > after)
                ),
                key=lambda info: info.path,
            )

    def _get(self, path: str) -> tuple[bytes, DocumentVersion]:
        if path not in self._blobs:
            raise PermanentError(ReasonCode.NOT_FOUND, f"{path}: not found")
        return self._blobs[path]

    def _stream(
        self, path: str, data: bytes, etag: str, size: int, failure: tuple[BaseException, int] | None
    ) -> Iterator[bytes]:
        pieces = [data[start : start + size] for start in range(0, len(data), size)]
        for index in range(len(pieces) + 1):
            if failure is not None and index == min(failure[1], len(pieces)):
                raise failure[0]
            if index == len(pieces) - 1 or not pieces:
                # Like the folder adapter: a blob overwritten during the read fails before its end.
                with self._lock:
                    current = self._blobs.get(path)
                if current is None or current[1].etag != etag:
                    raise Superseded(f"{path}: overwritten or deleted while it was read")
            if index < len(pieces):
                yield pieces[index]


# --------------------------------------------------------------------------- artifacts


class InMemoryArtifactStore:
    """Artifacts in a dict, with the folder store's key rules."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.writes = 0  # successful put/put_stream calls

    def put(self, key: str, data: bytes) -> None:
        self.put_stream(key, [data])

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        validate_key(key)
        data = b"".join(chunks)  # if ``chunks`` raises, nothing is stored
        with self._lock:
            self._data[key] = data
            self.writes += 1
        return len(data)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._data.get(validate_key(key))

    def open(self, key: str) -> Iterator[bytes]:
        data = self.get(key)
        if data is None:
            raise KeyError(key)
        return iter([data[start : start + (1 << 20)] for start in range(0, len(data), 1 << 20)])

    def exists(self, key: str) -> bool:
        return self.get(key) is not None

    def delete_prefix(self, prefix: str) -> int:
        with self._lock:
            doomed = [key for key in self._data if key.startswith(validate_prefix(prefix))]
            for key in doomed:
                del self._data[key]
        return len(doomed)

    def list(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        with self._lock:
            keys = sorted(key for key in self._data if key.startswith(prefix))
        yield from keys


# --------------------------------------------------------------------------- jobs


class InMemoryJobStore:
    """Job payloads in a dict with ETag-checked writes; ``fail_next`` breaks writes."""

    def __init__(self) -> None:
        self._docs: dict[str, tuple[dict[str, Any], str]] = {}
        self._lock = threading.Lock()
        self._failures: list[BaseException] = []
        self._status_failures: dict[JobStatus, list[BaseException]] = {}

    def fail_next(self, n: int, error: BaseException) -> None:
        """Make the next ``n`` create()/replace() calls raise ``error`` without writing."""
        with self._lock:
            self._failures.extend([error] * n)

    def fail_on_status(self, status: JobStatus, n: int, error: BaseException) -> None:
        """Make the next ``n`` writes that move a job to ``status`` raise ``error``: a fault aimed at
        one stage, since each stage's first act is to move its job to its own status."""
        with self._lock:
            self._status_failures.setdefault(status, []).extend([error] * n)

    def get(self, doc_id: str) -> Job | None:
        with self._lock:
            found = self._docs.get(doc_id)
        return None if found is None else Job.from_payload(found[0], etag=found[1])

    def get_many(self, doc_ids: Sequence[str]) -> dict[str, Job]:
        return {doc_id: job for doc_id in doc_ids if (job := self.get(doc_id)) is not None}

    def create(self, job: Job) -> Job:
        with self._lock:
            self._maybe_fail()
            if job.doc_id in self._docs:
                raise ConcurrencyError(f"{job.doc_id}: a job already exists")
            return self._store(job)

    def replace(self, job: Job) -> Job:
        with self._lock:
            self._maybe_fail()
            current = self._docs.get(job.doc_id)
            aimed = self._status_failures.get(job.status)
            if aimed and current is not None and current[0]["status"] != job.status.value:
                raise aimed.pop(0)
            if job.etag is None or current is None or current[1] != job.etag:
                raise ConcurrencyError(f"{job.doc_id}: the job changed (or is gone) since etag {job.etag}")
            return self._store(job)

    def list(
        self,
        status: JobStatus | None = None,
        *,
        updated_before: datetime | None = None,
        limit: int = 500,
        continuation: str | None = None,
    ) -> JobPage:
        if limit <= 0:
            raise ValueError("limit must be positive")
        with self._lock:
            matching = [
                Job.from_payload(payload, etag=etag)
                for doc_id, (payload, etag) in sorted(self._docs.items())
                if (continuation is None or doc_id > continuation)
                and (status is None or payload["status"] == status.value)
                and (updated_before is None or from_iso(payload["updated_at"]) < updated_before)
            ]
        page = matching[:limit]
        return JobPage(page, page[-1].doc_id if len(matching) > limit else None)

    def count_by_status(self) -> dict[JobStatus, int]:
        """How many jobs are in each status (statuses without any job are absent)."""
        with self._lock:
            return dict(Counter(JobStatus(payload["status"]) for payload, _ in self._docs.values()))

    def _maybe_fail(self) -> None:
        if self._failures:
            raise self._failures.pop(0)

    def _store(self, job: Job) -> Job:
        etag = uuid.uuid4().hex
        self._docs[job.doc_id] = (job.to_payload(), etag)  # a payload copy: callers cannot alias it
        return replace(job, etag=etag)


# --------------------------------------------------------------------------- search index


@dataclass
class _KeyFailure:
    status_code: int
    matches: Callable[[str], bool]
    times: int | None  # per key; None = forever
    used: Counter[str] = field(default_factory=Counter)


class InMemorySearchIndex:
    """Index records in a dict; word-count keyword scoring, exact cosine, RRF for hybrid."""

    def __init__(self, dimensions: int) -> None:
        self.dimensions = dimensions
        self._records: dict[str, IndexRecord] = {}
        self._lock = threading.Lock()
        self._key_failures: list[_KeyFailure] = []
        self._request_failures: list[BaseException] = []
        self.upserts: list[list[str]] = []  # the ids of every upsert request, in order

    def fail_keys(self, status_code: int, keys: Iterable[str] | Callable[[str], bool], times: int | None = 1) -> None:
        """Make upserts of matching keys fail with ``status_code``, ``times`` times per key (None: always)."""
        matches = keys if callable(keys) else frozenset(keys).__contains__
        with self._lock:
            self._key_failures.append(_KeyFailure(status_code, matches, times))

    def fail_next_request(self, error: BaseException, times: int = 1) -> None:
        """Make the next ``times`` calls (upsert, delete, ids_for_doc, count_for_doc, chunks, search) raise."""
        with self._lock:
            self._request_failures.extend([error] * times)

    def upsert(self, records: Sequence[IndexRecord]) -> list[IndexResult]:
        results = []
        with self._lock:
            self._maybe_fail()
            self.upserts.append([record.id for record in records])
            for record in records:
                problem = record_problem(record, self.dimensions)
                injected = self._injected(record.id)
                if problem is not None:
                    results.append(IndexResult(record.id, False, 400, problem))
                elif injected is not None:
                    results.append(IndexResult(record.id, False, injected, "injected failure"))
                else:
                    results.append(IndexResult(record.id, True, 200 if record.id in self._records else 201))
                    self._records[record.id] = record
        return results

    def delete(self, ids: Sequence[str]) -> list[IndexResult]:
        results = []
        with self._lock:
            self._maybe_fail()
            for key in ids:
                problem = key_problem(key)
                if problem is None:
                    self._records.pop(key, None)
                results.append(IndexResult(key, problem is None, 200 if problem is None else 400, problem or ""))
        return results

    def ids_for_doc(self, doc_id: str) -> Iterator[tuple[str, str]]:
        with self._lock:
            self._maybe_fail()
            found = sorted((r.id, r.chunk.version) for r in self._records.values() if r.chunk.doc_id == doc_id)
        return iter(found)

    def count_for_doc(self, doc_id: str) -> int:
        return len(list(self.ids_for_doc(doc_id)))

    def chunks(self, after: str | None = None, limit: int = 1000) -> list[IndexedChunk]:
        if limit <= 0:
            raise ValueError(f"limit must be positive, not {limit}")
        with self._lock:
            self._maybe_fail()
            page = sorted((r for r in self._records.values() if after is None or r.id > after), key=lambda r: r.id)
        return [IndexedChunk(r.id, r.chunk.doc_id, r.chunk.version, r.path) for r in page[:limit]]

    def search(self, query: SearchQuery) -> list[SearchHit]:
        with self._lock:
            self._maybe_fail()
            candidates = sorted((r for r in self._records.values() if _passes(r, query)), key=lambda r: r.id)
        keyword = _keyword_ranking(query.text, candidates)
        if query.mode is SearchMode.VECTOR and query.vector is None:
            raise ValueError("a vector query needs query.vector")
        vector = _vector_ranking(query.vector, candidates) if query.vector is not None else []
        if query.mode is SearchMode.KEYWORD:
            ranked = keyword
        elif query.mode is SearchMode.VECTOR:
            ranked = vector
        else:
            fused: dict[str, float] = defaultdict(float)
            depth = max(50, query.top)  # candidates per list, as the SQLite index takes them
            for ranking in (keyword[:depth], vector[:depth]):
                for rank, (key, _) in enumerate(ranking, start=1):
                    fused[key] += 1.0 / (_RRF_K + rank)
            ranked = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
        by_id = {r.id: r for r in candidates}
        return [_hit(by_id[key], score) for key, score in ranked[: max(query.top, 0)]]

    def _maybe_fail(self) -> None:
        if self._request_failures:
            raise self._request_failures.pop(0)

    def _injected(self, key: str) -> int | None:
        for rule in self._key_failures:
            if rule.matches(key) and (rule.times is None or rule.used[key] < rule.times):
                rule.used[key] += 1
                return rule.status_code
        return None


def _passes(record: IndexRecord, query: SearchQuery) -> bool:
    wanted, chunk = query.filter, record.chunk
    return (
        (not wanted.doc_ids or chunk.doc_id in wanted.doc_ids)
        and (not wanted.versions or chunk.version in wanted.versions)
        and (not wanted.content_types or record.content_type in wanted.content_types)
        and (not wanted.access_groups or bool(set(wanted.access_groups) & set(record.access_groups)))
    )


def _words(text: str) -> list[str]:
    return [word for word in re.findall(r"\w+", text.lower()) if any(ch.isalnum() for ch in word)]


def _keyword_ranking(text: str, records: list[IndexRecord]) -> list[tuple[str, float]]:
    terms = set(_words(text))
    scored = []
    for record in records:
        counts = Counter(_words(" ".join((record.chunk.text, record.title, *record.chunk.headings))))
        score = sum(1 + math.log(counts[term]) for term in terms if counts[term])
        if score > 0:
            scored.append((record.id, score))
    return sorted(scored, key=lambda item: (-item[1], item[0]))


def _vector_ranking(vector: Sequence[float], records: list[IndexRecord]) -> list[tuple[str, float]]:
    def cosine(other: Sequence[float]) -> float:
        norms = math.hypot(*vector) * math.hypot(*other)
        return sum(a * b for a, b in zip(vector, other, strict=True)) / norms if norms else 0.0

    return sorted(((r.id, cosine(r.vector)) for r in records), key=lambda item: (-item[1], item[0]))


def _hit(record: IndexRecord, score: float) -> SearchHit:
    chunk = record.chunk
    return SearchHit(
        id=record.id,
        doc_id=chunk.doc_id,
        path=record.path,
        title=record.title,
        content=chunk.text,
        ordinal=chunk.ordinal,
        page_start=chunk.page_start,
        page_end=chunk.page_end,
        headings=chunk.headings,
        version=chunk.version,
        score=score,
    )


# --------------------------------------------------------------------------- embeddings


class CountingEmbedder:
    """Wraps any ``Embedder``: counts what reaches it, and fails on demand (``fail_next``)."""

    def __init__(self, inner: Embedder) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self._failures: list[BaseException] = []
        self.calls = 0  # successful embed() calls
        self.failed_calls = 0  # embed() calls that raised (injected or from ``inner``)
        self.inputs = 0  # texts embedded by successful calls
        self.tokens = 0  # prompt tokens of successful calls
        self.batches: list[int] = []  # inputs per successful call

    def fail_next(self, n: int, error: BaseException) -> None:
        """Make the next ``n`` embed() calls raise ``error`` without reaching ``inner``."""
        with self._lock:
            self._failures.extend([error] * n)

    @property
    def model(self) -> str:
        return self._inner.model

    @property
    def dimensions(self) -> int:
        return self._inner.dimensions

    @property
    def max_batch_inputs(self) -> int:
        return self._inner.max_batch_inputs

    @property
    def max_batch_tokens(self) -> int:
        return self._inner.max_batch_tokens

    @property
    def max_input_tokens(self) -> int:
        return self._inner.max_input_tokens

    def embed(self, texts: Sequence[str]) -> Embeddings:
        with self._lock:
            failure = self._failures.pop(0) if self._failures else None
            if failure is not None:
                self.failed_calls += 1
        if failure is not None:
            raise failure
        try:
            result = self._inner.embed(texts)
        except Exception:
            with self._lock:
                self.failed_calls += 1
            raise
        with self._lock:
            self.calls += 1
            self.inputs += len(texts)
            self.tokens += result.prompt_tokens
            self.batches.append(len(texts))
        return result
