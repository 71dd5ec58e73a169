"""AzureSearchIndex and the deploy step, through the real azure-search-documents over HTTP.

The local AI Search server (``tests/emulators/search_server.py``) plays the service and injects the
faults the adapter must survive: 207 partial failures, 413, 429 with retry headers, 503 and a
response slower than the client's timeout. Its request log shows what the SDK really sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError

from ingestion.adapters.azure_search import (
    AzureSearchIndex,
    check_index,
    connect_search,
    ensure_index,
    index_document,
    index_schema,
    odata_filter,
    odata_string,
    query_words,
)
from ingestion.errors import PermanentError, ReasonCode, TransientError
from ingestion.ports import SearchFilter, SearchMode, SearchQuery
from ingestion.retry import SDK_RETRIES
from tests.emulators.search import SEMANTIC_CONFIGURATION, unique_index_name
from tests.emulators.search_server import RequestRecord, SearchServer
from tests.integration.builders import DIMENSIONS, axis, blend, make_record

Connect = Callable[..., AzureSearchIndex]


@pytest.fixture
def server(search_server: SearchServer) -> Iterator[SearchServer]:
    search_server.reset()
    yield search_server
    search_server.reset()


@pytest.fixture
def index_name(server: SearchServer) -> Iterator[str]:
    """A fresh index (with the semantic configuration); the request log starts empty after it."""
    name = unique_index_name("unit")
    _, admin = connect_search(endpoint=server.url, index=name, key=server.api_key, retries=0)
    ensure_index(admin, name, DIMENSIONS, SEMANTIC_CONFIGURATION)
    server.reset()
    yield name
    admin.delete_index(name)
    admin.close()


@pytest.fixture
def connect(server: SearchServer, index_name: str) -> Iterator[Connect]:
    """Builds adapters over ``index_name`` with the given client options; closes their clients."""
    clients: list[Any] = []

    def build(*, retries: int = 0, timeout_s: float = 30.0, **options: Any) -> AzureSearchIndex:
        client, admin = connect_search(
            endpoint=server.url, index=index_name, key=server.api_key, retries=retries, timeout_s=timeout_s
        )
        clients.extend((client, admin))
        return AzureSearchIndex(client, dimensions=DIMENSIONS, **options)

    yield build
    for client in clients:
        client.close()


def sent(server: SearchServer, operation: str) -> list[RequestRecord]:
    """The requests the server saw whose path ends with ``operation`` (``search.index``, ...)."""
    return [record for record in server.requests if record.path.endswith(operation)]


def sdk_retries() -> int:
    return SDK_RETRIES.snapshot().get("search", 0)


class StaticToken:
    """A token credential (the shape of DefaultAzureCredential) that never calls anyone."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("token", 4_102_444_800)


# --------------------------------------------------------------------------- the deploy step


def test_ensure_index_creates_then_reports_unchanged(server: SearchServer) -> None:
    """The first run creates the index; a second run with the same settings writes nothing."""
    name = unique_index_name("deploy")
    _, admin = connect_search(endpoint=server.url, index=name, key=server.api_key)
    assert ensure_index(admin, name, DIMENSIONS, None) == "created"
    assert ensure_index(admin, name, DIMENSIONS, None) == "unchanged"
    assert [record.method for record in server.requests if record.path == f"/indexes('{name}')"] == [
        "GET", "PUT", "GET",
    ]  # fmt: skip
    admin.delete_index(name)


def test_ensure_index_updates_when_the_semantic_configuration_changes(server: SearchServer) -> None:
    """Adding, then removing, the semantic configuration is an in-place update."""
    name = unique_index_name("deploy")
    _, admin = connect_search(endpoint=server.url, index=name, key=server.api_key)
    ensure_index(admin, name, DIMENSIONS, None)
    assert ensure_index(admin, name, DIMENSIONS, "ranker") == "updated"
    assert admin.get_index(name).semantic_search.configurations[0].name == "ranker"
    assert ensure_index(admin, name, DIMENSIONS, "ranker") == "unchanged"
    assert ensure_index(admin, name, DIMENSIONS, None) == "updated"
    assert admin.get_index(name).semantic_search is None
    admin.delete_index(name)


def test_ensure_index_refuses_a_dimension_change(server: SearchServer) -> None:
    """Another vector size is refused before any write, naming the way out (a new index)."""
    name = unique_index_name("deploy")
    _, admin = connect_search(endpoint=server.url, index=name, key=server.api_key)
    ensure_index(admin, name, DIMENSIONS, None)
    server.reset()
    with pytest.raises(PermanentError, match=r"holds 8-dimensional vectors.*INGEST_SEARCH_INDEX") as caught:
        ensure_index(admin, name, DIMENSIONS * 2, None)
    assert caught.value.reason is ReasonCode.INDEX_REJECTED
    assert [record.method for record in server.requests] == ["GET"]
    admin.delete_index(name)


def test_ensure_index_adds_fields_but_reports_a_refused_field_change(server: SearchServer) -> None:
    """A missing field is added in place; an existing field that differs is refused by the service, clearly."""
    name = unique_index_name("deploy")
    _, admin = connect_search(endpoint=server.url, index=name, key=server.api_key)
    older = index_schema(name, DIMENSIONS, None)
    older.fields = [field for field in older.fields if field.name != "content_hash"]
    admin.create_or_update_index(older)
    assert ensure_index(admin, name, DIMENSIONS, None) == "updated"
    changed = index_schema(name, DIMENSIONS, None)
    changed.fields = [field for field in changed.fields if field.name != "ingested_at"]
    next(field for field in changed.fields if field.name == "doc_id").filterable = False
    admin.delete_index(name)
    admin.create_or_update_index(changed)
    with pytest.raises(PermanentError, match="'doc_id' cannot be changed") as caught:
        ensure_index(admin, name, DIMENSIONS, None)
    assert caught.value.reason is ReasonCode.INDEX_REJECTED
    admin.delete_index(name)


def test_the_schema_marks_what_the_adapter_filters_and_sorts_on() -> None:
    """doc_id, version, content_type and access_groups are filterable, id sortable, the vector HNSW."""
    fields = {field.name: field for field in index_schema("chunks", 1536, "sem").fields}
    assert all(fields[name].filterable for name in ("doc_id", "version", "content_type", "access_groups"))
    assert fields["id"].key and fields["id"].sortable
    assert (fields["content_vector"].vector_search_dimensions, fields["content_vector"].type) == (
        1536,
        "Collection(Edm.Single)",
    )
    with pytest.raises(ValueError, match="dimensions"):
        index_schema("chunks", 5000, None)


def test_check_index_names_a_missing_index_and_the_deploy_command(server: SearchServer) -> None:
    """The app's start-up check fails clearly when nobody ran the deploy step."""
    client, _ = connect_search(endpoint=server.url, index="never-created", key=server.api_key)
    with pytest.raises(PermanentError, match=r"'never-created' does not exist.*python -m ingestion index ensure") as e:
        check_index(client)
    assert e.value.reason is ReasonCode.NOT_FOUND


def test_check_index_counts_the_documents_of_an_existing_index(
    server: SearchServer, index_name: str, connect: Connect
) -> None:
    """An existing index passes the check (through the data plane's docs/$count)."""
    connect().upsert([make_record("doc1", 0, "text")])
    client, _ = connect_search(endpoint=server.url, index=index_name, key=server.api_key)
    assert check_index(client) == 1


def test_a_wrong_api_key_is_a_transient_auth_error(server: SearchServer, index_name: str) -> None:
    """403 is transient with code ``auth`` (keys get rotated), never a file's fault."""
    client, _ = connect_search(endpoint=server.url, index=index_name, key="not-the-key")
    with pytest.raises(TransientError) as caught:
        check_index(client)
    assert caught.value.code == "auth"
    assert "not-the-key" not in caught.value.message


def test_connect_search_needs_a_key_or_an_https_credential() -> None:
    """A token credential over plain HTTP is refused up front (azure-core would refuse every request)."""
    with pytest.raises(ValueError, match="key or a credential"):
        connect_search(endpoint="https://x.search.windows.net", index="chunks")
    with pytest.raises(ValueError, match="https"):
        connect_search(endpoint="http://127.0.0.1:1", index="chunks", credential=StaticToken())
    client, admin = connect_search(endpoint="https://x.search.windows.net", index="chunks", credential=StaticToken())
    client.close()
    admin.close()


# --------------------------------------------------------------------------- writes


def test_a_partial_failure_is_mapped_per_key(server: SearchServer, connect: Connect) -> None:
    """A 207 answers each key: failed keys carry their status and message, the others are written."""
    index = connect()
    records = [make_record("doc1", n, f"chunk {n}") for n in range(5)]
    for status, record in zip((503, 409, 422, 400), records[1:], strict=True):
        server.fail_keys(status, [record.id], message=f"injected {status}")
    results = index.upsert(records)
    assert [(r.key, r.succeeded, r.status_code) for r in results] == [
        (records[0].id, True, 201),
        (records[1].id, False, 503),
        (records[2].id, False, 409),
        (records[3].id, False, 422),
        (records[4].id, False, 400),
    ]
    assert [r.message for r in results[1:]] == ["injected 503", "injected 409", "injected 422", "injected 400"]
    (request,) = sent(server, "docs/search.index")
    assert (request.status, request.docs) == (207, 5)
    # The persist stage retries the failed keys; the faults were one-off, so now they are written.
    assert [r.status_code for r in index.upsert(records[1:])] == [201] * 4


def test_a_413_is_one_request_and_a_permanent_rejection(server: SearchServer, connect: Connect) -> None:
    """413 is not split into more requests behind persist's back: one request, INDEX_REJECTED."""
    index = connect()
    server.max_body_bytes = 2_000
    with pytest.raises(PermanentError, match="413") as caught:
        index.upsert([make_record("doc1", n, "word " * 50) for n in range(10)])
    assert caught.value.reason is ReasonCode.INDEX_REJECTED
    assert len(sent(server, "docs/search.index")) == 1


def test_the_sdk_alone_would_split_a_413_into_many_requests(
    server: SearchServer, index_name: str, connect: Connect
) -> None:
    """Why the adapter guards 413: the SDK halves the batch and resends, silently (azure-search-documents)."""
    connect()
    client, _ = connect_search(endpoint=server.url, index=index_name, key=server.api_key)
    server.max_body_bytes = 2_000
    documents = [index_document(make_record("doc1", n, "word " * 50)) for n in range(10)]
    results = client.merge_or_upload_documents(documents)
    assert all(result.succeeded for result in results)
    assert len(sent(server, "docs/search.index")) > 5


def test_malformed_records_are_answered_400_and_never_sent(server: SearchServer, connect: Connect) -> None:
    """A short vector or a NaN would make the service reject the whole request: they stay here."""
    index = connect()
    good = [make_record("doc1", n, "fine") for n in range(2)]
    short = make_record("doc1", 5, "short", vector=(1.0,))
    nan = make_record("doc1", 6, "nan", vector=(float("nan"),) * DIMENSIONS)
    results = index.upsert([good[0], short, nan, good[1]])
    assert [(r.succeeded, r.status_code) for r in results] == [(True, 201), (False, 400), (False, 400), (True, 201)]
    (request,) = sent(server, "docs/search.index")
    assert [doc["id"] for doc in request.payload["value"]] == [good[0].id, good[1].id]
    assert index.upsert([short]) == [results[1]]
    assert len(sent(server, "docs/search.index")) == 1  # nothing valid: no request at all


def test_upsert_sends_merge_or_upload_with_the_whole_index_document(server: SearchServer, connect: Connect) -> None:
    """Every field of ARCHITECTURE.md's index document goes out, date-times with their offset."""
    record = make_record("doc1", 0, "text", access_groups=("hr",), headings=("Intro",))
    connect().upsert([record])
    (request,) = sent(server, "docs/search.index")
    (action,) = request.payload["value"]
    assert action["@search.action"] == "mergeOrUpload"
    assert set(action) - {"@search.action"} == {
        "id", "doc_id", "path", "title", "content", "content_vector", "ordinal", "page_start", "page_end",
        "headings", "content_type", "content_hash", "version", "access_groups", "last_modified", "ingested_at",
    }  # fmt: skip
    assert (action["access_groups"], action["headings"], action["ingested_at"]) == (
        ["hr"],
        ["Intro"],
        "2026-01-01T00:00:00+00:00",
    )


def test_delete_sends_only_valid_keys(server: SearchServer, connect: Connect) -> None:
    """A key outside the alphabet is answered 400 and not sent; a missing id succeeds as the service says."""
    index = connect()
    record = make_record("doc1", 0, "text")
    index.upsert([record])
    results = index.delete(["bad key/slash", "never-existed", record.id])
    assert [(r.succeeded, r.status_code) for r in results] == [(False, 400), (True, 200), (True, 200)]
    request = sent(server, "docs/search.index")[-1]
    assert [(a["@search.action"], a["id"]) for a in request.payload["value"]] == [
        ("delete", "never-existed"),
        ("delete", record.id),
    ]


# --------------------------------------------------------------------------- whole-request faults


def test_429_is_retried_by_the_sdk_up_to_the_cap_then_transient_with_retry_after(
    server: SearchServer, connect: Connect
) -> None:
    """With Retry-After the SDK retries (cap 2: three requests, two counted); then retry-after-ms wins."""
    index = connect(retries=2)
    # azure-core sleeps Retry-After (kept tiny here); the classifier prefers retry-after-ms.
    server.fail_next(10, 429, retry_after="0.01", retry_after_ms="1500", path="search.index")
    before = sdk_retries()
    with pytest.raises(TransientError) as caught:
        index.upsert([make_record("doc1", 0, "text")])
    assert (caught.value.code, caught.value.retry_after) == ("http_429", 1.5)
    assert len(sent(server, "docs/search.index")) == 1 + 2
    assert sdk_retries() - before == 2


def test_429_without_retry_after_on_a_post_is_not_retried_by_the_sdk(server: SearchServer, connect: Connect) -> None:
    """azure-core retries a POST only on 500/503/504 or when Retry-After is present: one request here."""
    index = connect(retries=2)
    server.fail_next(10, 429, retry_after_ms="200", path="search.index")
    before = sdk_retries()
    with pytest.raises(TransientError) as caught:
        index.upsert([make_record("doc1", 0, "text")])
    assert caught.value.retry_after == 0.2
    assert (len(sent(server, "docs/search.index")), sdk_retries() - before) == (1, 0)


def test_503_is_retried_by_the_sdk_then_transient(server: SearchServer, connect: Connect) -> None:
    """A lasting 503 costs 1 + cap requests and then a TransientError; a single one is absorbed."""
    index = connect(retries=1)
    server.fail_next(5, 503, path="search.index")
    before = sdk_retries()
    with pytest.raises(TransientError) as caught:
        index.upsert([make_record("doc1", 0, "text")])
    assert caught.value.code == "http_503"
    assert (len(sent(server, "docs/search.index")), sdk_retries() - before) == (2, 1)
    server.reset()
    server.fail_next(1, 503, path="search.post.search")
    assert index.count_for_doc("doc1") == 0
    assert len(sent(server, "docs/search.post.search")) == 2


def test_a_response_slower_than_the_timeout_is_transient(server: SearchServer, connect: Connect) -> None:
    """A read timeout is a transient connection fault; the SDK does not resend a timed-out POST."""
    index = connect(retries=2, timeout_s=0.5)
    server.delay_next(1, 2.0, path="search.post.search")
    with pytest.raises(TransientError) as caught:
        index.search(SearchQuery(text="anything", mode=SearchMode.KEYWORD))
    assert caught.value.code == "connection"
    assert len(sent(server, "docs/search.post.search")) == 1


def test_a_whole_request_rejection_is_permanent(server: SearchServer, connect: Connect) -> None:
    """A 400 for the whole request (not per key) is INDEX_REJECTED."""
    server.fail_next(1, 400, path="search.index")
    with pytest.raises(PermanentError) as caught:
        connect().upsert([make_record("doc1", 0, "text")])
    assert caught.value.reason is ReasonCode.INDEX_REJECTED


# --------------------------------------------------------------------------- listings and OData


@pytest.mark.parametrize("chunks", [8, 6])
def test_ids_for_doc_pages_by_id_across_several_pages(server: SearchServer, connect: Connect, chunks: int) -> None:
    """Pages of 3 continue with ``id gt '<last>'`` ordered by id (never $skip); a quote in the doc id is escaped."""
    index = connect(page_size=3)
    doc_id = "o'brien's notes"
    records = [make_record(doc_id, n, f"part {n}", version="v2") for n in range(chunks)]
    index.upsert([*records, make_record("o", 0, "other document"), make_record("o'brien", 0, "another")])
    server.reset()
    assert list(index.ids_for_doc(doc_id)) == sorted((r.id, "v2") for r in records)
    pages = [record.payload for record in sent(server, "docs/search.post.search")]
    assert len(pages) == chunks // 3 + 1
    assert all(page["orderby"] == "id asc" and page["select"] == "id,version" and "skip" not in page for page in pages)
    assert pages[0]["filter"] == "doc_id eq 'o''brien''s notes'"
    third = sorted(r.id for r in records)[2]
    assert pages[1]["filter"] == f"doc_id eq 'o''brien''s notes' and id gt '{third}'"


def test_count_for_doc_is_exact_and_quotes_the_doc_id(server: SearchServer, connect: Connect) -> None:
    """The count asks for count with top=0, filtered on the (quoted) doc id."""
    index = connect()
    index.upsert([make_record("it's", n, f"text {n}") for n in range(4)] + [make_record("it", 0, "x")])
    assert index.count_for_doc("it's") == 4
    request = sent(server, "docs/search.post.search")[-1]
    assert request.payload == {"count": True, "filter": "doc_id eq 'it''s'", "top": 0}


def test_odata_literals_and_filters() -> None:
    """Strings double their quotes; lists use search.in with a delimiter no value holds, else eq's."""
    assert odata_string("it's 'quoted'") == "'it''s ''quoted'''"
    assert odata_filter(SearchFilter()) is None
    assert odata_filter(SearchFilter(doc_ids=("a'b",), versions=("v1", "v2"))) == (
        "doc_id eq 'a''b' and search.in(version, 'v1|v2', '|')"
    )
    assert odata_filter(SearchFilter(access_groups=("hr", "finance"))) == (
        "access_groups/any(g: search.in(g, 'hr|finance', '|'))"
    )
    assert odata_filter(SearchFilter(content_types=("a|b", "c"))) == "search.in(content_type, 'a|b,c', ',')"
    assert odata_filter(SearchFilter(doc_ids=("|,;~^", "x"))) == "(doc_id eq '|,;~^' or doc_id eq 'x')"


def test_access_group_filters_hold_groups_with_delimiters(server: SearchServer, connect: Connect) -> None:
    """A group name holding '|' or a quote still filters exactly (the service parses what we send)."""
    index = connect()
    records = {
        "pipe": make_record("doc1", 0, "policy", access_groups=("finance|legal",)),
        "quote": make_record("doc1", 1, "policy", access_groups=("o'neil team",)),
        "plain": make_record("doc1", 2, "policy", access_groups=("hr",)),
        "public": make_record("doc1", 3, "policy"),
    }
    index.upsert(list(records.values()))

    def found(*groups: str) -> set[str]:
        query = SearchQuery(text="policy", mode=SearchMode.KEYWORD, top=10, filter=SearchFilter(access_groups=groups))
        return {hit.id for hit in index.search(query)}

    assert found("finance|legal") == {records["pipe"].id}
    assert found("finance") == set()
    assert found("o'neil team", "hr") == {records["quote"].id, records["plain"].id}


# --------------------------------------------------------------------------- queries


def test_query_text_is_reduced_to_words() -> None:
    """Operators and punctuation never reach the service's query parser."""
    assert query_words('VACATION!!! "policy" AND (NOT) -leave* vacation') == [
        "vacation",
        "policy",
        "and",
        "not",
        "leave",
    ]
    assert query_words('?! "" * () _') == []


def test_a_query_without_words_or_vector_sends_nothing(server: SearchServer, connect: Connect) -> None:
    """No words and no vector: no hits, and no request (the service would match every document)."""
    index = connect()
    assert index.search(SearchQuery(text="?! *", mode=SearchMode.KEYWORD)) == []
    assert index.search(SearchQuery(text="", mode=SearchMode.HYBRID)) == []
    assert sent(server, "docs/search.post.search") == []


def test_keyword_and_hybrid_request_shapes(server: SearchServer, connect: Connect) -> None:
    """Keyword: simple syntax, any word. Hybrid: plus a vector query over content_vector, 50 deep."""
    index = connect()
    index.search(SearchQuery(text="Vacation policy?", mode=SearchMode.KEYWORD, top=3))
    index.search(SearchQuery(text="vacation", vector=axis(1), top=3))
    index.search(SearchQuery(text="ignored", vector=axis(1), mode=SearchMode.VECTOR, top=3))
    keyword, hybrid, vector = (record.payload for record in sent(server, "docs/search.post.search"))
    assert (keyword["search"], keyword["searchMode"], keyword["queryType"], keyword["top"]) == (
        "vacation policy",
        "any",
        "simple",
        3,
    )
    assert "vectorQueries" not in keyword
    assert hybrid["vectorQueries"] == [{"kind": "vector", "vector": list(axis(1)), "k": 50, "fields": "content_vector"}]
    assert "search" not in vector
    assert vector["vectorQueries"][0]["k"] == 3


def test_a_query_vector_of_the_wrong_size_is_a_caller_error(connect: Connect) -> None:
    """Like the embedded index: ValueError, before any request."""
    with pytest.raises(ValueError, match="dimensions"):
        connect().search(SearchQuery(vector=(1.0, 2.0), mode=SearchMode.VECTOR))


def test_semantic_ranker_request_shape_and_scores(server: SearchServer, connect: Connect) -> None:
    """With a semantic configuration, text queries go as queryType semantic; hits score by the reranker."""
    index = connect(semantic_configuration=SEMANTIC_CONFIGURATION)
    index.upsert(
        [
            make_record("doc1", 0, "sick leave and vacation policy", blend(0.1, 0.9)),
            make_record("doc1", 1, "vacation", axis(0)),
        ]
    )
    hits = index.search(SearchQuery(text="vacation policy", vector=axis(0), top=2))
    request = sent(server, "docs/search.post.search")[-1].payload
    assert (request["queryType"], request["semanticConfiguration"], request["search"]) == (
        "semantic",
        SEMANTIC_CONFIGURATION,
        "vacation policy",
    )
    assert [hit.ordinal for hit in hits] == [0, 1]
    assert hits[0].score > hits[1].score and 0 <= hits[1].score <= 4
    index.search(SearchQuery(vector=axis(0), mode=SearchMode.VECTOR))
    assert "queryType" not in sent(server, "docs/search.post.search")[-1].payload


def test_hits_come_back_whole(connect: Connect) -> None:
    """A hit maps every citation field back, with pages and headings as stored."""
    index = connect()
    record = make_record("doc1", 4, "citations need pages", title="Guide", headings=("Part 1",), version="v3")
    index.upsert([record])
    (hit,) = index.search(SearchQuery(text="citations", mode=SearchMode.KEYWORD))
    assert (hit.id, hit.doc_id, hit.path, hit.title, hit.ordinal, hit.page_start, hit.page_end, hit.headings) == (
        record.id, "doc1", "docs/doc1.pdf", "Guide", 4, 5, 6, ("Part 1",),
    )  # fmt: skip
    assert (hit.version, hit.content) == ("v3", "citations need pages")


def test_a_search_error_names_the_service_message(server: SearchServer, index_name: str) -> None:
    """A filter the service refuses surfaces its message (here: a field that is not filterable)."""
    client, _ = connect_search(endpoint=server.url, index=index_name, key=server.api_key)
    with pytest.raises(HttpResponseError, match="not filterable"):
        list(client.search(search_text=None, filter="path eq 'x'"))


# --------------------------------------------------------------------------- words the service's analyzer keeps whole


def test_query_words_keep_combining_marks_and_inner_apostrophes() -> None:
    """Devanagari and Arabic vowel signs stay inside their word; so do ``'`` and ``.`` between letters or digits."""
    assert query_words("हिन्दी भाषा") == ["हिन्दी", "भाषा"]
    assert query_words("عَرَبِيّ") == ["عَرَبِيّ"]
    assert query_words("The employee's (handbook), v2.5!") == ["the", "employee's", "handbook", "v2.5"]


def test_a_hindi_query_finds_its_document(connect: Connect) -> None:
    """Splitting at a vowel sign would search for single letters the index never holds (UAX#29 keeps the word)."""
    index = connect()
    hindi = make_record("doc1", 0, "हिन्दी भाषा की नीति")
    other = make_record("doc1", 1, "ह न द")  # the letters alone: what a query split at the marks would find
    index.upsert([hindi, other])
    hits = index.search(SearchQuery(text="हिन्दी?", mode=SearchMode.KEYWORD, top=5))
    assert [hit.id for hit in hits] == [hindi.id]


def test_a_word_with_an_inner_apostrophe_or_point_is_one_escaped_term(server: SearchServer, connect: Connect) -> None:
    """``employee's`` and ``2.5`` are single tokens for the standard analyzer: sent whole, punctuation escaped."""
    index = connect()
    record = make_record("doc1", 0, "The employee's handbook, version 2.5")
    index.upsert([record])
    assert [hit.id for hit in index.search(SearchQuery(text="employee's", mode=SearchMode.KEYWORD))] == [record.id]
    assert [hit.id for hit in index.search(SearchQuery(text="(2.5)", mode=SearchMode.KEYWORD))] == [record.id]
    first, second = (record.payload["search"] for record in sent(server, "docs/search.post.search"))
    assert (first, second) == ("employee\\'s", "2\\.5")


def test_any_of_with_an_empty_value_uses_equalities() -> None:
    """An empty value is ambiguous in search.in's delimited list (two delimiters in a row): eq's say it exactly."""
    assert odata_filter(SearchFilter(doc_ids=("", "x"))) == "(doc_id eq '' or doc_id eq 'x')"


def test_a_listing_page_must_fit_in_one_response(connect: Connect) -> None:
    """page_size above the service's 1,000 results per response is refused up front."""
    with pytest.raises(ValueError, match="page_size"):
        connect(page_size=1001)
    with pytest.raises(ValueError, match="page_size"):
        connect(page_size=0)
