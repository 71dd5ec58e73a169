"""SearchIndex contract: per-record upsert results, exact listings (per document and paged), search and filters."""

from __future__ import annotations

import dataclasses
import math

import pytest

from ingestion.model import IndexRecord
from ingestion.ports import IndexedChunk, SearchFilter, SearchIndex, SearchMode, SearchQuery
from tests.integration.builders import DIMENSIONS, axis, blend, make_record


def search(
    index: SearchIndex,
    text: str = "",
    *,
    vector: tuple[float, ...] | None = None,
    mode: SearchMode = SearchMode.HYBRID,
    top: int = 5,
    where: SearchFilter | None = None,
) -> list[str]:
    """The ids of the hits, best first."""
    query = SearchQuery(text=text, vector=vector, mode=mode, top=top, filter=where or SearchFilter())
    return [hit.id for hit in index.search(query)]


def test_upsert_reports_201_for_new_and_200_for_replaced(index: SearchIndex) -> None:
    """A new id is created (201); upserting it again replaces it (200)."""
    records = [make_record("doc1", n, f"chunk number {n}") for n in range(3)]
    assert [(r.key, r.succeeded, r.status_code) for r in index.upsert(records)] == [(r.id, True, 201) for r in records]
    assert [(r.succeeded, r.status_code) for r in index.upsert(records)] == [(True, 200)] * 3


def test_upsert_is_idempotent(index: SearchIndex) -> None:
    """Upserting the same ids twice leaves the count unchanged."""
    records = [make_record("doc1", n, f"chunk number {n}") for n in range(4)]
    index.upsert(records)
    index.upsert(records)
    assert index.count_for_doc("doc1") == 4


def test_a_bad_record_fails_alone_with_400(index: SearchIndex) -> None:
    """Wrong vector length or a NaN fails that record (400, with a message); the others are written."""
    good1 = make_record("doc1", 0, "first good chunk")
    short = make_record("doc1", 1, "short vector", vector=(1.0, 0.0))
    good2 = make_record("doc1", 2, "second good chunk")
    nan = make_record("doc1", 3, "not a number", vector=(math.nan,) * DIMENSIONS)
    infinite = make_record("doc1", 4, "infinite", vector=(math.inf,) + (0.0,) * (DIMENSIONS - 1))
    results = index.upsert([good1, short, good2, nan, infinite])
    assert [(r.key, r.succeeded, r.status_code) for r in results] == [
        (good1.id, True, 201),
        (short.id, False, 400),
        (good2.id, True, 201),
        (nan.id, False, 400),
        (infinite.id, False, 400),
    ]
    assert all(r.message for r in results if not r.succeeded)
    assert sorted(chunk_id for chunk_id, _ in index.ids_for_doc("doc1")) == sorted([good1.id, good2.id])


def test_an_empty_batch_is_fine(index: SearchIndex) -> None:
    """Upserting or deleting nothing returns no results."""
    assert index.upsert([]) == []
    assert index.delete([]) == []


def test_delete_removes_chunks_and_a_missing_id_succeeds(index: SearchIndex) -> None:
    """delete() removes existing ids, and reports success (200) for ids that never existed."""
    records = [make_record("doc1", n, f"text {n}") for n in range(3)]
    index.upsert(records)
    results = index.delete([records[0].id, "never-existed"])
    assert [(r.key, r.succeeded, r.status_code) for r in results] == [
        (records[0].id, True, 200),
        ("never-existed", True, 200),
    ]
    assert index.count_for_doc("doc1") == 2


def test_delete_of_an_invalid_key_fails_with_400(index: SearchIndex) -> None:
    """A key outside the service's alphabet cannot name a document: 400 for it alone."""
    record = make_record("doc1", 0, "text")
    index.upsert([record])
    results = index.delete(["bad key/with slash", record.id])
    assert [(r.succeeded, r.status_code) for r in results] == [(False, 400), (True, 200)]
    assert index.count_for_doc("doc1") == 0


def test_ids_for_doc_and_count_for_doc_are_exact(index: SearchIndex) -> None:
    """Per-document listings return every (id, version) of that document, in id order, and no other."""
    doc1 = [make_record("doc1", n, f"doc one part {n}", version="v2") for n in range(7)]
    doc2 = [make_record("doc2", n, f"doc two part {n}") for n in range(3)]
    index.upsert(doc1 + doc2)
    assert list(index.ids_for_doc("doc1")) == sorted((r.id, "v2") for r in doc1)
    assert index.count_for_doc("doc1") == 7
    assert index.count_for_doc("doc2") == 3
    assert list(index.ids_for_doc("doc3")) == []
    assert index.count_for_doc("doc3") == 0


def listed(record: IndexRecord) -> IndexedChunk:
    """What a full listing should report for ``record``."""
    return IndexedChunk(record.id, record.chunk.doc_id, record.chunk.version, record.path)


def test_chunks_of_an_empty_index_is_an_empty_page(index: SearchIndex) -> None:
    """Listing an empty index gives an empty page, from the start or after any id."""
    assert index.chunks() == []
    assert index.chunks("0" * 32, limit=5) == []


def test_chunks_pages_cover_every_chunk_once_in_id_order(index: SearchIndex) -> None:
    """Pages of 3 over 10 chunks of 3 documents list each chunk once, in id order, then an empty page."""
    records = [
        # The path comes from the record, not from the document id (a renamed blob keeps its doc_id).
        dataclasses.replace(make_record(doc_id, n, f"{doc_id} part {n}", version=f"v-{doc_id}"), path=f"p/{doc_id}/{n}")
        for doc_id, count in (("doc1", 4), ("doc2", 3), ("doc3", 3))
        for n in range(count)
    ]
    index.upsert(records)
    pages: list[list[IndexedChunk]] = []
    after: str | None = None
    while page := index.chunks(after, limit=3):
        pages.append(page)
        after = page[-1].id
    assert [len(page) for page in pages] == [3, 3, 3, 1]
    assert [chunk for page in pages for chunk in page] == sorted(map(listed, records), key=lambda c: c.id)
    assert index.chunks(after, limit=3) == []
    assert index.chunks(limit=1000) == sorted(map(listed, records), key=lambda c: c.id)


def test_chunks_after_the_last_id_is_empty(index: SearchIndex) -> None:
    """``after`` at or past the greatest id gives an empty page."""
    records = [make_record("doc1", n, f"text {n}") for n in range(3)]
    index.upsert(records)
    last = max(record.id for record in records)
    assert index.chunks(last) == []
    assert index.chunks(last + "0") == []
    assert index.chunks("g") == []  # past every hex id


@pytest.mark.parametrize("limit", [0, -1])
def test_chunks_refuses_a_limit_below_one(index: SearchIndex, limit: int) -> None:
    """A page must hold at least one chunk: limit <= 0 is a caller error."""
    with pytest.raises(ValueError, match="limit"):
        index.chunks(limit=limit)


def test_chunks_accepts_a_full_page_and_azure_refuses_more(index: SearchIndex, request: pytest.FixtureRequest) -> None:
    """1,000 per page works everywhere; Azure refuses more, since the service answers at most 1,000 per response."""
    assert index.chunks(limit=1000) == []
    if request.node.callspec.params["index"] == "azure":
        with pytest.raises(ValueError, match="limit"):
            index.chunks(limit=1001)


def near_pair() -> tuple[IndexRecord, IndexRecord]:
    """Two records of one document whose ids share their first three characters (found deterministically)."""
    seen: dict[str, IndexRecord] = {}
    for n in range(5000):
        record = make_record("near", n, f"near text {n}")
        if (other := seen.setdefault(record.id[:3], record)) is not record:
            first, second = sorted((other, record), key=lambda r: r.id)
            return first, second
    raise AssertionError("no two ids share a prefix")  # pragma: no cover - 5,000 ids over 4,096 prefixes


def test_chunks_compares_ids_exactly_at_close_boundaries(index: SearchIndex) -> None:
    """Ids sharing a prefix page exactly: a prefix sorts before the id, the id itself is excluded."""
    first, second = near_pair()
    index.upsert([first, second])
    prefix = first.id[:3]
    assert [c.id for c in index.chunks(prefix)] == [first.id, second.id]
    assert [c.id for c in index.chunks(first.id[:-1])] == [first.id, second.id]
    assert [c.id for c in index.chunks(first.id)] == [second.id]
    assert [c.id for c in index.chunks(first.id + "0")] == [second.id]
    assert [c.id for c in index.chunks(second.id[:-1])] == [second.id]  # they differ before the last character
    assert index.chunks(second.id) == []
    assert index.chunks(prefix, limit=1) == [listed(first)]
    assert index.chunks("'" + prefix) == [listed(first), listed(second)]  # a quote in ``after`` is only text


def library(index: SearchIndex) -> dict[str, str]:
    """Three chunks about different things; returns their ids by nickname."""
    records = {
        "revenue": make_record("doc1", 0, "The quarterly revenue grew in the northern region", axis(0)),
        "vacation": make_record("doc1", 1, "Employee handbook: vacation policy and sick leave", axis(1)),
        "licenses": make_record("doc2", 0, "Revenue recognition rules for software licenses", axis(2)),
    }
    index.upsert(list(records.values()))
    return {name: record.id for name, record in records.items()}


def test_keyword_search_finds_the_matching_chunk_first(index: SearchIndex) -> None:
    """Keyword search ranks the chunk holding more of the query's words first."""
    ids = library(index)
    assert search(index, "vacation policy", mode=SearchMode.KEYWORD) == [ids["vacation"]]
    hits = search(index, "northern revenue", mode=SearchMode.KEYWORD)
    assert hits == [ids["revenue"], ids["licenses"]]


def test_keyword_search_is_case_insensitive_and_ignores_punctuation(index: SearchIndex) -> None:
    """Query text is reduced to its words: case and operators-looking punctuation do not matter."""
    ids = library(index)
    assert search(index, 'VACATION!!! "policy" AND (NOT) -leave*', mode=SearchMode.KEYWORD)[0] == ids["vacation"]


def test_a_query_without_words_finds_nothing(index: SearchIndex) -> None:
    """An empty or punctuation-only keyword query returns no hits (and does not fail)."""
    library(index)
    assert search(index, "", mode=SearchMode.KEYWORD) == []
    assert search(index, '?! "" * ()', mode=SearchMode.KEYWORD) == []
    assert search(index, "", mode=SearchMode.HYBRID) == []


def test_vector_search_finds_the_nearest_chunk_first(index: SearchIndex) -> None:
    """Vector search ranks by cosine similarity (length of the query vector does not matter)."""
    ids = library(index)
    assert search(index, vector=axis(2, scale=7.0), mode=SearchMode.VECTOR)[0] == ids["licenses"]
    assert search(index, vector=blend(0.2, 0.9), mode=SearchMode.VECTOR)[:2] == [ids["vacation"], ids["revenue"]]


def test_vector_search_without_a_vector_is_a_caller_error(index: SearchIndex) -> None:
    """A VECTOR query must carry a vector."""
    library(index)
    with pytest.raises(ValueError, match="vector"):
        search(index, "text", mode=SearchMode.VECTOR)


def test_hybrid_search_finds_the_expected_chunk_first(index: SearchIndex) -> None:
    """When words and vector agree, hybrid search puts that chunk first."""
    ids = library(index)
    assert search(index, "vacation", vector=axis(1))[0] == ids["vacation"]


def test_hybrid_prefers_a_chunk_ranked_high_in_both_lists(index: SearchIndex) -> None:
    """RRF: first in keywords and second in vectors beats first in vectors only."""
    both = make_record("doc1", 0, "apple apple apple banana", blend(0.8, 0.6))
    vector_only = make_record("doc1", 1, "cherry", axis(0))
    keyword_second = make_record("doc1", 2, "apple cherry date elderberry fig grape kiwi lemon", axis(1))
    index.upsert([both, vector_only, keyword_second])
    assert search(index, "apple", mode=SearchMode.KEYWORD)[0] == both.id
    assert search(index, vector=axis(0), mode=SearchMode.VECTOR)[0] == vector_only.id
    fused = index.search(SearchQuery(text="apple", vector=axis(0), mode=SearchMode.HYBRID, top=3))
    assert fused[0].id == both.id
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62)
    assert [hit.score for hit in fused] == sorted((hit.score for hit in fused), reverse=True)


def test_top_limits_the_number_of_hits(index: SearchIndex) -> None:
    """No more than ``top`` hits are returned, in every mode."""
    index.upsert([make_record("doc1", n, f"common word {n}", blend(1.0, n / 10)) for n in range(12)])
    for mode in SearchMode:
        assert len(search(index, "common", vector=axis(0), mode=mode, top=4)) == 4


def test_hits_carry_what_a_citation_needs(index: SearchIndex) -> None:
    """A hit has the chunk's document, path, title, pages, headings, ordinal, version and text."""
    record = make_record(
        "doc9", 3, "Citations need pages", axis(0), version="v7", title="Guide", headings=("Part 1", "Pages")
    )
    index.upsert([record])
    (hit,) = index.search(SearchQuery(text="citations", mode=SearchMode.KEYWORD))
    assert (hit.id, hit.doc_id, hit.path, hit.title, hit.content) == (
        record.id, "doc9", "docs/doc9.pdf", "Guide", "Citations need pages",
    )  # fmt: skip
    assert (hit.ordinal, hit.page_start, hit.page_end, hit.headings, hit.version) == (
        3,
        4,
        5,
        ("Part 1", "Pages"),
        "v7",
    )
    assert hit.score > 0


def test_replacing_a_chunk_updates_what_keyword_search_sees(index: SearchIndex) -> None:
    """After a chunk is replaced (same id, new title) or deleted, keyword search reflects it."""
    first = make_record("doc1", 0, "unchanged body text", title="Alpha")
    index.upsert([first])
    assert search(index, "alpha", mode=SearchMode.KEYWORD) == [first.id]
    index.upsert([make_record("doc1", 0, "unchanged body text", title="Omega")])
    assert search(index, "alpha", mode=SearchMode.KEYWORD) == []
    assert search(index, "omega", mode=SearchMode.KEYWORD) == [first.id]
    index.delete([first.id])
    assert search(index, "omega body", mode=SearchMode.KEYWORD) == []


def filtered_library(index: SearchIndex) -> dict[str, str]:
    """Four chunks that all match the query, differing in doc, version, type and access groups."""
    records = {
        "hr_plain": make_record("doc1", 0, "policy one", axis(0), access_groups=("hr",)),
        "both_pdf": make_record(
            "doc1", 1, "policy two", blend(0.9, 0.1), version="v2", content_type="application/pdf",
            access_groups=("finance", "hr"),
        ),
        "public_pdf": make_record("doc2", 0, "policy three", blend(0.8, 0.2), content_type="application/pdf"),
        "finance": make_record("doc3", 0, "policy four", blend(0.7, 0.3), access_groups=("finance",)),
    }  # fmt: skip
    index.upsert(list(records.values()))
    return {name: record.id for name, record in records.items()}


@pytest.mark.parametrize("mode", list(SearchMode))
@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (SearchFilter(), {"hr_plain", "both_pdf", "public_pdf", "finance"}),
        (SearchFilter(doc_ids=("doc1",)), {"hr_plain", "both_pdf"}),
        (SearchFilter(doc_ids=("doc2", "doc3")), {"public_pdf", "finance"}),
        (SearchFilter(versions=("v2",)), {"both_pdf"}),
        (SearchFilter(content_types=("application/pdf",)), {"both_pdf", "public_pdf"}),
        (SearchFilter(access_groups=("hr",)), {"hr_plain", "both_pdf"}),
        (SearchFilter(access_groups=("finance", "legal")), {"both_pdf", "finance"}),
        (SearchFilter(access_groups=("legal",)), set()),
        (SearchFilter(doc_ids=("doc1",), access_groups=("finance",)), {"both_pdf"}),
    ],
)
def test_filters_select_exactly_the_matching_chunks(
    index: SearchIndex, mode: SearchMode, where: SearchFilter, expected: set[str]
) -> None:
    """Filters on doc id, version, content type and access groups (any-of) apply in every mode."""
    ids = filtered_library(index)
    found = search(index, "policy", vector=axis(0), mode=mode, top=10, where=where)
    assert sorted(found) == sorted(ids[name] for name in expected)
