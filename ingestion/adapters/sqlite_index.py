"""The embedded ``SearchIndex``: chunks in SQLite, searched the way Azure AI Search does it.

Keyword search is FTS5 with BM25 over content, title and headings; vector search is exact cosine
similarity in numpy over the rows that pass the filters; hybrid fuses the two ranked lists with
Reciprocal Rank Fusion (k = 60), Azure AI Search's algorithm for hybrid queries. The FTS5 table is
external-content, kept in sync with the chunk table by triggers, so one transaction updates both.
Upserts validate each record as the service does (key alphabet, vector shape) and report per record.
"""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ingestion.adapters._sqlite import open_sqlite, sqlite_errors, transaction
from ingestion.adapters.index_rules import key_problem, record_problem
from ingestion.model import IndexRecord, to_iso
from ingestion.ports import IndexedChunk, IndexResult, SearchFilter, SearchHit, SearchMode, SearchQuery

RRF_K = 60  # Azure AI Search's constant for Reciprocal Rank Fusion
_MAX_QUERY_TERMS = 64
_PAGE = 1000

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # ``seq`` is the FTS rowid; an explicit INTEGER PRIMARY KEY, so VACUUM can never renumber it.
    """CREATE TABLE IF NOT EXISTS chunks (
        seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL, version TEXT NOT NULL,
        path TEXT NOT NULL, title TEXT NOT NULL, content TEXT NOT NULL, vector BLOB NOT NULL,
        ordinal INTEGER NOT NULL, page_start INTEGER, page_end INTEGER, headings TEXT NOT NULL,
        content_type TEXT NOT NULL, content_hash TEXT NOT NULL, access_groups TEXT NOT NULL,
        last_modified TEXT NOT NULL, ingested_at TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks (doc_id, id)",
    """CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(content, title, headings,
        content='chunks', content_rowid='seq', tokenize='porter unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
        INSERT INTO chunks_fts (rowid, content, title, headings)
        VALUES (new.seq, new.content, new.title, new.headings); END""",
    """CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
        INSERT INTO chunks_fts (chunks_fts, rowid, content, title, headings)
        VALUES ('delete', old.seq, old.content, old.title, old.headings); END""",
    """CREATE TRIGGER IF NOT EXISTS chunks_au AFTER UPDATE ON chunks BEGIN
        INSERT INTO chunks_fts (chunks_fts, rowid, content, title, headings)
        VALUES ('delete', old.seq, old.content, old.title, old.headings);
        INSERT INTO chunks_fts (rowid, content, title, headings)
        VALUES (new.seq, new.content, new.title, new.headings); END""",
)
_COLUMNS = (
    "id, doc_id, version, path, title, content, vector, ordinal, page_start, page_end, headings,"
    " content_type, content_hash, access_groups, last_modified, ingested_at"
)
_UPSERT = (
    f"INSERT INTO chunks ({_COLUMNS}) VALUES ({', '.join('?' * 16)}) ON CONFLICT (id) DO UPDATE SET "  # noqa: S608 - fixed text
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS.replace(" ", "").split(",")[1:])
)
_HIT_COLUMNS = "id, doc_id, path, title, content, ordinal, page_start, page_end, headings, version"


class SqliteSearchIndex:
    """Chunks in the SQLite file ``path`` (created if missing). Call ``close()`` when done."""

    def __init__(self, path: Path, dimensions: int, *, busy_timeout_s: float = 30.0) -> None:
        if dimensions <= 0:
            raise ValueError("dimensions must be positive")
        self._dimensions = dimensions
        self._db = open_sqlite(path, busy_timeout_s)
        self._lock = threading.RLock()  # one shared connection; see SqliteJobStore for why
        try:
            with sqlite_errors(str(path)), transaction(self._db) as db:
                for statement in _SCHEMA:
                    db.execute(statement)
                db.execute("INSERT OR IGNORE INTO meta VALUES ('dimensions', ?)", (str(dimensions),))
                (stored,) = db.execute("SELECT value FROM meta WHERE name = 'dimensions'").fetchone()
        except BaseException:
            self._db.close()
            raise
        if int(stored) != dimensions:
            self._db.close()
            raise ValueError(f"{path} holds {stored}-dimensional vectors, not {dimensions}")

    @property
    def dimensions(self) -> int:
        return self._dimensions

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ writes

    def upsert(self, records: Sequence[IndexRecord]) -> list[IndexResult]:
        results: list[IndexResult] = []
        with self._lock, sqlite_errors("index upsert"), transaction(self._db) as db:
            ids = json.dumps([record.id for record in records])
            existing = {
                row[0]
                for row in db.execute("SELECT id FROM chunks WHERE id IN (SELECT value FROM json_each(?))", (ids,))
            }
            for record in records:
                problem = record_problem(record, self._dimensions)
                if problem is not None:
                    results.append(IndexResult(record.id, False, 400, problem))
                    continue
                db.execute(_UPSERT, _row(record))
                results.append(IndexResult(record.id, True, 200 if record.id in existing else 201))
                existing.add(record.id)
        return results

    def delete(self, ids: Sequence[str]) -> list[IndexResult]:
        problems = {key: key_problem(key) for key in ids}
        valid = json.dumps([key for key, problem in problems.items() if problem is None])
        with self._lock, sqlite_errors("index delete"), transaction(self._db) as db:
            db.execute("DELETE FROM chunks WHERE id IN (SELECT value FROM json_each(?))", (valid,))
        return [
            IndexResult(key, problems[key] is None, 200 if problems[key] is None else 400, problems[key] or "")
            for key in ids
        ]

    # ------------------------------------------------------------------ reads

    def ids_for_doc(self, doc_id: str) -> Iterator[tuple[str, str]]:
        after = ""
        while True:  # page by id, so the lock is never held while the caller works
            with self._lock, sqlite_errors(doc_id):
                rows = self._db.execute(
                    "SELECT id, version FROM chunks WHERE doc_id = ? AND id > ? ORDER BY id LIMIT ?",
                    (doc_id, after, _PAGE),
                ).fetchall()
            yield from ((chunk_id, version) for chunk_id, version in rows)
            if len(rows) < _PAGE:
                return
            after = rows[-1][0]

    def count_for_doc(self, doc_id: str) -> int:
        with self._lock, sqlite_errors(doc_id):
            (count,) = self._db.execute("SELECT count(*) FROM chunks WHERE doc_id = ?", (doc_id,)).fetchone()
        return int(count)

    def chunks(self, after: str | None = None, limit: int = 1000) -> list[IndexedChunk]:
        if limit <= 0:
            raise ValueError(f"limit must be positive, not {limit}")
        # Every key is non-empty, so "" stands for "from the start"; the UNIQUE index on id serves the query.
        with self._lock, sqlite_errors("index listing"):
            rows = self._db.execute(
                "SELECT id, doc_id, version, path FROM chunks WHERE id > ? ORDER BY id LIMIT ?", (after or "", limit)
            ).fetchall()
        return [IndexedChunk(str(key), str(doc_id), str(version), str(path)) for key, doc_id, version, path in rows]

    def search(self, query: SearchQuery) -> list[SearchHit]:
        if query.top <= 0:
            return []
        where, params = _filter_sql(query.filter)
        with self._lock, sqlite_errors("search"):
            if query.mode is SearchMode.KEYWORD:
                ranked = self._keyword(query.text, where, params, query.top)
            elif query.mode is SearchMode.VECTOR:
                if query.vector is None:
                    raise ValueError("a vector query needs query.vector")
                ranked = self._vector(query.vector, where, params, query.top)
            else:
                depth = max(50, query.top)
                lists = [[key for key, _ in self._keyword(query.text, where, params, depth)]]
                if query.vector is not None:
                    lists.append([key for key, _ in self._vector(query.vector, where, params, depth)])
                ranked = reciprocal_rank_fusion(lists, query.top)
            return self._hits(ranked)

    # ------------------------------------------------------------------ internals

    def _keyword(self, text: str, where: str, params: list[str], top: int) -> list[tuple[str, float]]:
        match = fts_query(text)
        if match is None:
            return []
        rows = self._db.execute(
            "SELECT c.id, bm25(chunks_fts) FROM chunks_fts JOIN chunks AS c ON c.seq = chunks_fts.rowid"  # noqa: S608 - fixed SQL; values are bound
            f" WHERE chunks_fts MATCH ? AND {where} ORDER BY bm25(chunks_fts), c.id LIMIT ?",
            (match, *params, top),
        ).fetchall()
        return [(key, -float(rank)) for key, rank in rows]  # bm25() is lower-is-better

    def _vector(self, vector: Sequence[float], where: str, params: list[str], top: int) -> list[tuple[str, float]]:
        if len(vector) != self._dimensions:
            raise ValueError(f"query vector has {len(vector)} dimensions, the index {self._dimensions}")
        rows = self._db.execute(f"SELECT id, vector FROM chunks AS c WHERE {where} ORDER BY id", params).fetchall()  # noqa: S608 - fixed SQL; values are bound
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(len(rows), -1)
        scores = matrix @ _unit(np.asarray(vector, dtype=np.float32))
        norms = np.linalg.norm(matrix, axis=1)
        scores = np.divide(scores, norms, out=np.zeros_like(scores), where=norms > 0)
        best = np.argsort(-scores, kind="stable")[:top]  # stable: ties stay in id order
        return [(rows[i][0], float(scores[i])) for i in best]

    def _hits(self, ranked: list[tuple[str, float]]) -> list[SearchHit]:
        if not ranked:
            return []
        rows = self._db.execute(
            f"SELECT {_HIT_COLUMNS} FROM chunks WHERE id IN (SELECT value FROM json_each(?))",  # noqa: S608 - fixed SQL; values are bound
            (json.dumps([key for key, _ in ranked]),),
        ).fetchall()
        by_id = {row[0]: row for row in rows}
        return [_hit(by_id[key], score) for key, score in ranked if key in by_id]


def fts_query(text: str) -> str | None:
    """User text as a safe FTS5 query: its words, each quoted, OR-ed; ``None`` when it has none."""
    words = dict.fromkeys(word for word in re.findall(r"\w+", text.lower()) if any(ch.isalnum() for ch in word))
    if not words:
        return None
    return " OR ".join(f'"{word}"' for word in list(words)[:_MAX_QUERY_TERMS])


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], top: int) -> list[tuple[str, float]]:
    """Fuse ranked id lists: score = Σ 1 / (k + rank), rank counted from 1; ties broken by id."""
    scores: dict[str, float] = defaultdict(float)
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            scores[key] += 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:top]


def _filter_sql(where: SearchFilter) -> tuple[str, list[str]]:
    clauses: list[str] = ["1 = 1"]
    params: list[str] = []
    for column, values in (
        ("doc_id", where.doc_ids),
        ("version", where.versions),
        ("content_type", where.content_types),
    ):
        if values:
            clauses.append(f"c.{column} IN (SELECT value FROM json_each(?))")  # noqa: S608 - column names are ours
            params.append(json.dumps(list(values)))
    if where.access_groups:
        clauses.append(
            "EXISTS (SELECT 1 FROM json_each(c.access_groups) AS g WHERE g.value IN (SELECT value FROM json_each(?)))"
        )
        params.append(json.dumps(list(where.access_groups)))
    return " AND ".join(clauses), params


def _unit(vector: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _row(record: IndexRecord) -> tuple[object, ...]:
    chunk = record.chunk
    return (
        record.id,
        chunk.doc_id,
        chunk.version,
        record.path,
        record.title,
        chunk.text,
        np.asarray(record.vector, dtype=np.float32).tobytes(),
        chunk.ordinal,
        chunk.page_start,
        chunk.page_end,
        json.dumps(list(chunk.headings), ensure_ascii=False),
        record.content_type,
        chunk.content_hash,
        json.dumps(list(record.access_groups), ensure_ascii=False),
        to_iso(record.last_modified),
        to_iso(record.ingested_at),
    )


def _hit(row: Sequence[Any], score: float) -> SearchHit:
    key, doc_id, path, title, content, ordinal, page_start, page_end, headings, version = row
    return SearchHit(
        id=str(key),
        doc_id=str(doc_id),
        path=str(path),
        title=str(title),
        content=str(content),
        ordinal=int(ordinal),
        page_start=page_start,
        page_end=page_end,
        headings=tuple(json.loads(str(headings))),
        version=str(version),
        score=score,
    )
