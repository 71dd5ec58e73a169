"""The Azure ``SearchIndex``: chunks in an Azure AI Search index, through azure-search-documents.

Writes are one ``docs/search.index`` request each (``mergeOrUpload``, or ``delete``), answered per key;
the SDK does not raise on 207 partial success, so every ``IndexingResult`` becomes an ``IndexResult``
and the persist stage retries only the failed keys. Records the service would refuse are answered
here with 400 and never sent: a malformed vector (wrong length, NaN, infinity) would make the
service reject the whole request, and a key outside its alphabet cannot name a document.

A 413 is not split: on 413 the SDK silently halves the batch and resends each half, recursively, which
would turn one bounded request into many behind the persist stage's back. The persist stage already
keeps batches under the service's limits (1,000 documents, ~8 MB of 16 MB), so a 413 means a record
or the size estimate is wrong and resending the same records can only fail again: it is a
``PermanentError(INDEX_REJECTED)`` whose message names the size, raised on the first response.

Reads: per-document listings and the whole-index listing (``chunks``) page by ``id gt '<last>'``
ordered by id (``$skip`` stops at 100,000);
counts are exact (filter, ``count``, ``top=0``). Hybrid search sends the query's words (whole as the
service's analyzer sees them, punctuation escaped, so no operator is interpreted) and a vector
query, and the service fuses the two lists with Reciprocal Rank Fusion, like the embedded index.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterator, Sequence
from typing import Any

from azure.core.credentials import AzureKeyCredential, TokenCredential
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline import PipelineResponse
from azure.search.documents import IndexDocumentsBatch, SearchClient
from azure.search.documents.indexes import SearchIndexClient
from azure.search.documents.models import VectorizedQuery

from ingestion.adapters.azure_errors import RetryCountingPolicy, sdk_retry_kwargs, translated
from ingestion.adapters.azure_search_schema import VECTOR_FIELD, check_index, ensure_index, index_schema
from ingestion.adapters.index_rules import key_problem, record_problem
from ingestion.errors import ReasonCode, TransientError
from ingestion.model import IndexRecord, to_iso
from ingestion.ports import IndexedChunk, IndexResult, SearchFilter, SearchHit, SearchMode, SearchQuery

__all__ = [
    "AzureSearchIndex",
    "check_index",
    "connect_search",
    "ensure_index",
    "index_schema",
    "odata_filter",
    "odata_string",
    "query_words",
    "search_text",
]

PAGE_SIZE = 1000  # ids per listing request (the service returns at most 1,000 per page anyway)
HYBRID_DEPTH = 50  # nearest neighbours fused with the keyword list; the embedded index fuses 50 deep too
_MAX_QUERY_TERMS = 64
_HIT_FIELDS = ["id", "doc_id", "path", "title", "content", "ordinal", "page_start", "page_end", "headings", "version"]
_LISTING_FIELDS = ("id", "doc_id", "version", "path")
_IN_DELIMITERS = "|,;~^"  # search.in splits on any character of its third argument


def connect_search(
    *,
    endpoint: str,
    index: str,
    key: str | None = None,
    credential: TokenCredential | None = None,
    retries: int = 2,
    timeout_s: float = 30.0,
) -> tuple[SearchClient, SearchIndexClient]:
    """A data-plane client for ``index`` and a control-plane client, with capped and counted retries.

    An API key goes in the ``api-key`` header (plain ``http://`` works, for the local server); a token
    credential (``DefaultAzureCredential``) needs ``https://``, which azure-core enforces for bearer tokens.
    """
    auth: AzureKeyCredential | TokenCredential
    if key:
        auth = AzureKeyCredential(key)
    elif credential is not None:
        if not endpoint.lower().startswith("https://"):
            # azure-core would refuse every request later, as a retryable-looking ServiceRequestError.
            raise ValueError(f"a token credential needs an https:// search endpoint, not {endpoint!r}")
        auth = credential
    else:
        raise ValueError("connect_search needs an API key or a credential")
    options: dict[str, Any] = {
        **sdk_retry_kwargs(retries, timeout_s),
        "per_retry_policies": [RetryCountingPolicy("search")],
    }
    return SearchClient(endpoint, index, auth, **options), SearchIndexClient(endpoint, auth, **options)


class AzureSearchIndex:
    """``SearchIndex`` over an existing Azure AI Search index (``ensure_index`` creates it at deploy time)."""

    def __init__(
        self,
        client: SearchClient,
        *,
        dimensions: int,
        semantic_configuration: str | None = None,
        page_size: int = PAGE_SIZE,
    ) -> None:
        if dimensions <= 0:
            raise ValueError("dimensions must be positive")
        if not 1 <= page_size <= PAGE_SIZE:
            # A page must fit in one response: past 1,000 the service answers in parts, and a listing
            # that stops at a short page would skip ids if a part ever came back alone.
            raise ValueError(f"page_size must be between 1 and {PAGE_SIZE}, not {page_size}")
        self._client = client
        self._dimensions = dimensions
        self._semantic = semantic_configuration or None
        self._page_size = page_size

    @property
    def dimensions(self) -> int:
        return self._dimensions

    # ------------------------------------------------------------------ writes

    def upsert(self, records: Sequence[IndexRecord]) -> list[IndexResult]:
        refused: dict[str, IndexResult] = {}
        documents: list[dict[str, Any]] = []
        for record in records:
            problem = record_problem(record, self._dimensions)
            if problem is None:
                documents.append(index_document(record))
            else:
                refused[record.id] = IndexResult(record.id, False, 400, problem)
        batch = IndexDocumentsBatch()
        batch.add_merge_or_upload_actions(documents)
        answered = self._send(batch, f"index upsert of {len(documents)} chunk(s)") if documents else {}
        return [refused.get(record.id) or answered.get(record.id) or _unanswered(record.id) for record in records]

    def delete(self, ids: Sequence[str]) -> list[IndexResult]:
        problems = {key: key_problem(key) for key in ids}
        valid = [key for key, problem in problems.items() if problem is None]
        batch = IndexDocumentsBatch()
        batch.add_delete_actions([{"id": key} for key in valid])
        answered = self._send(batch, f"index delete of {len(valid)} chunk(s)") if valid else {}
        return [
            IndexResult(key, False, 400, problem)
            if (problem := problems[key])
            else answered.get(key) or _unanswered(key)
            for key in ids
        ]

    # ------------------------------------------------------------------ reads

    def ids_for_doc(self, doc_id: str) -> Iterator[tuple[str, str]]:
        after: str | None = None
        while True:
            rows = self._listing(
                f"listing the chunks of {doc_id}",
                f"doc_id eq {odata_string(doc_id)}",
                after,
                ("id", "version"),
                self._page_size,
            )
            yield from ((str(row["id"]), str(row["version"])) for row in rows)
            if len(rows) < self._page_size:
                return
            after = str(rows[-1]["id"])

    def count_for_doc(self, doc_id: str) -> int:
        with translated(f"counting the chunks of {doc_id}", rejected=ReasonCode.INDEX_REJECTED):
            pager = self._client.search(
                search_text=None, filter=f"doc_id eq {odata_string(doc_id)}", include_total_count=True, top=0
            )
            count = pager.get_count()
        if count is None:
            raise TransientError(f"counting the chunks of {doc_id}: the service returned no count")
        return int(count)

    def chunks(self, after: str | None = None, limit: int = 1000) -> list[IndexedChunk]:
        if not 1 <= limit <= PAGE_SIZE:
            # One page is one response: the service answers at most 1,000 documents per request.
            raise ValueError(f"limit must be between 1 and {PAGE_SIZE}, not {limit}")
        rows = self._listing("listing the index", None, after, _LISTING_FIELDS, limit)
        return [IndexedChunk(str(row["id"]), str(row["doc_id"]), str(row["version"]), str(row["path"])) for row in rows]

    def search(self, query: SearchQuery) -> list[SearchHit]:
        if query.mode is SearchMode.VECTOR and query.vector is None:
            raise ValueError("a vector query needs query.vector")
        if query.top <= 0:
            return []
        words = [] if query.mode is SearchMode.VECTOR else query_words(query.text)
        vector = None if query.mode is SearchMode.KEYWORD else query.vector
        if not words and vector is None:
            return []  # nothing to match: the service would return every document for an empty query
        options: dict[str, Any] = {"filter": odata_filter(query.filter), "select": _HIT_FIELDS, "top": query.top}
        if vector is not None:
            depth = query.top if query.mode is SearchMode.VECTOR else max(query.top, HYBRID_DEPTH)
            options["vector_queries"] = [
                VectorizedQuery(vector=self._checked(vector), k_nearest_neighbors=depth, fields=VECTOR_FIELD)
            ]
        if words:
            options.update(search_text=search_text(words), search_mode="any", query_type="simple")
            if self._semantic:
                options.update(query_type="semantic", semantic_configuration_name=self._semantic)
        with translated("search", rejected=ReasonCode.INDEX_REJECTED):
            return [_hit(row) for row in self._client.search(**options)]

    # ------------------------------------------------------------------ internals

    def _listing(
        self, what: str, where: str | None, after: str | None, fields: Sequence[str], top: int
    ) -> list[dict[str, Any]]:
        """One page of ``fields`` of the documents matching ``where``, ids after ``after``, in id order
        (keyset paging: ``$skip`` stops at 100,000)."""
        clauses = [clause for clause in (where, None if after is None else f"id gt {odata_string(after)}") if clause]
        with translated(what, rejected=ReasonCode.INDEX_REJECTED):
            pager = self._client.search(
                search_text=None,
                filter=" and ".join(clauses) or None,
                order_by=["id asc"],
                select=list(fields),
                top=top,
            )
            return list(pager)

    def _send(self, batch: IndexDocumentsBatch, what: str) -> dict[str, IndexResult]:
        with translated(what, rejected=ReasonCode.INDEX_REJECTED):
            answer = self._client.index_documents(batch, raw_response_hook=_refuse_too_large)
        return {
            result.key: IndexResult(
                result.key, bool(result.succeeded), int(result.status_code), result.error_message or ""
            )
            for result in answer
        }

    def _checked(self, vector: Sequence[float]) -> list[float]:
        if len(vector) != self._dimensions:
            raise ValueError(f"query vector has {len(vector)} dimensions, the index {self._dimensions}")
        if not all(math.isfinite(x) for x in vector):
            raise ValueError("query vector holds a NaN or infinite value")
        return [float(x) for x in vector]


def index_document(record: IndexRecord) -> dict[str, Any]:
    """The index document of ``record`` (ARCHITECTURE.md, "Index document")."""
    chunk = record.chunk
    return {
        "id": record.id,
        "doc_id": chunk.doc_id,
        "path": record.path,
        "title": record.title,
        "content": chunk.text,
        VECTOR_FIELD: [float(x) for x in record.vector],
        "ordinal": chunk.ordinal,
        "page_start": chunk.page_start,
        "page_end": chunk.page_end,
        "headings": list(chunk.headings),
        "content_type": record.content_type,
        "content_hash": chunk.content_hash,
        "version": chunk.version,
        "access_groups": list(record.access_groups),
        "last_modified": to_iso(record.last_modified),
        "ingested_at": to_iso(record.ingested_at),
    }


def query_words(text: str) -> list[str]:
    """User text reduced to its lowercase words: whitespace-separated, the punctuation around each trimmed.

    A word keeps what the service's standard analyzer (UAX#29 word breaks) keeps together: combining
    marks (the vowel signs of Devanagari, Arabic harakat) and an apostrophe or point inside it
    (``employee's``, ``2.5``). Cutting there, as ``\\w+`` does, would search for fragments the index
    never holds. ``search_text`` escapes what punctuation is left, so no operator is ever interpreted.
    """
    words: dict[str, None] = {}
    for token in text.lower().split():
        letters = [at for at, ch in enumerate(token) if ch.isalnum()]
        if not letters:
            continue
        end = letters[-1] + 1
        while end < len(token) and _is_mark(token[end]):
            end += 1  # a vowel sign after the last letter belongs to the word
        words[token[letters[0] : end]] = None
    return list(words)[:_MAX_QUERY_TERMS]


def search_text(words: Sequence[str]) -> str:
    """``words`` as simple query syntax: every character but letters, digits and marks escaped with ``\\``."""
    return " ".join("".join(ch if ch.isalnum() or _is_mark(ch) else "\\" + ch for ch in word) for word in words)


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch).startswith("M")


def odata_string(value: str) -> str:
    """An OData string literal: single quotes around, a quote inside doubled."""
    return "'" + value.replace("'", "''") + "'"


def odata_filter(where: SearchFilter) -> str | None:
    """The OData ``$filter`` for ``where`` (every given condition must hold), or ``None`` for no filter."""
    clauses = [
        _any_of(field, values)
        for field, values in (
            ("doc_id", where.doc_ids),
            ("version", where.versions),
            ("content_type", where.content_types),
        )
        if values
    ]
    if where.access_groups:
        clauses.append(f"access_groups/any(g: {_any_of('g', where.access_groups)})")
    return " and ".join(clauses) or None


def _any_of(field: str, values: Sequence[str]) -> str:
    """``field`` equals one of ``values``: ``search.in`` with a delimiter no value contains, else ``eq``s."""
    if len(values) == 1:
        return f"{field} eq {odata_string(values[0])}"
    # An empty value cannot be told apart from two adjacent delimiters in search.in's list: eq's say it exactly.
    for delimiter in _IN_DELIMITERS if all(values) else ():
        if not any(delimiter in value for value in values):
            return f"search.in({field}, {odata_string(delimiter.join(values))}, '{delimiter}')"
    return "(" + " or ".join(f"{field} eq {odata_string(value)}" for value in values) + ")"


def _refuse_too_large(response: PipelineResponse[Any, Any]) -> None:
    """A per-request hook: turn 413 into a plain error, so the SDK's batch-halving path never runs."""
    http = response.http_response
    if http.status_code == 413:
        size = len(response.http_request.body or b"")
        raise HttpResponseError(
            message=f"the service refused a {size:,}-byte request as too large (413); lower INGEST_INDEX_BATCH_MB",
            response=http,
        )


def _unanswered(key: str) -> IndexResult:
    # Not accepted, never done: 503 is what the service answers for a key it could not process.
    return IndexResult(key, False, 503, "the service returned no result for this key")


def _hit(row: dict[str, Any]) -> SearchHit:
    reranked = row.get("@search.reranker_score")
    return SearchHit(
        id=str(row["id"]),
        doc_id=str(row["doc_id"]),
        path=str(row["path"]),
        title=str(row.get("title") or ""),
        content=str(row.get("content") or ""),
        ordinal=int(row["ordinal"]),
        page_start=row.get("page_start"),
        page_end=row.get("page_end"),
        headings=tuple(row.get("headings") or ()),
        version=str(row["version"]),
        score=float(reranked if reranked is not None else row["@search.score"]),
    )
