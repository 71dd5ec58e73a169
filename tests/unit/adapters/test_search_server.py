"""The local AI Search server's own rules: the service behaviour the adapter's tests rely on.

Driven through ``SearchService.handle`` (the HTTP layer is exercised by test_azure_search.py and the
contract tests), plus one run of the standalone command line.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ingestion.adapters.azure_search import index_schema
from tests.emulators.process import ServerProcess, free_port, python_server
from tests.emulators.search_server import MAX_BATCH_ACTIONS, RRF_K, SearchService, words

API_KEY = "key"
INDEX = "/indexes('idx')"


def call(service: SearchService, method: str, path: str, body: Any = None, *, key: str | None = API_KEY) -> Any:
    """(status, parsed body) of one request."""
    raw = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    headers = {"api-key": key} if key is not None else {}
    response = service.handle(method, f"{path}?api-version=2024-07-01", headers, raw)
    if response.content_type.startswith("application/json") and response.body:
        return response.status, json.loads(response.body)
    return response.status, response.body.decode()


def doc(key: str, content: str = "", **fields: Any) -> dict[str, Any]:
    return {"@search.action": "upload", "id": key, "doc_id": "d1", "content": content, **fields}


def index_docs(service: SearchService, *actions: dict[str, Any]) -> tuple[int, Any]:
    return call(service, "POST", f"{INDEX}/docs/search.index", {"value": list(actions)})


def search(service: SearchService, **body: Any) -> list[str]:
    status, answer = call(service, "POST", f"{INDEX}/docs/search.post.search", body)
    assert status == 200, answer
    return [row["id"] for row in answer["value"]]


@pytest.fixture
def service() -> SearchService:
    """A service holding index ``idx`` (the adapter's schema, 4 dimensions, a semantic configuration)."""
    created = SearchService(API_KEY)
    status, _ = call(created, "PUT", INDEX, index_schema("idx", 4, "sem").as_dict())
    assert status == 201
    return created


def test_a_missing_index_is_404_in_the_service_error_shape(service: SearchService) -> None:
    """The error body is ``{"error": {"code", "message"}}`` naming index and service."""
    assert call(service, "GET", "/indexes('nope')") == (
        404,
        {"error": {"code": "", "message": "The index 'nope' for service 'local-search' was not found."}},
    )
    assert call(service, "DELETE", "/indexes('nope')")[0] == 404


def test_requests_need_the_api_key(service: SearchService) -> None:
    """No api-key header: 401; a wrong one: 403."""
    assert call(service, "GET", INDEX, key=None)[0] == 401
    assert call(service, "GET", INDEX, key="wrong")[0] == 403


def test_existing_fields_cannot_change_but_new_ones_can_be_added(service: SearchService) -> None:
    """A vector dimension change is refused (as by the service); adding a field is an update."""
    status, answer = call(service, "PUT", INDEX, index_schema("idx", 8, "sem").as_dict())
    assert status == 400
    assert "content_vector" in answer["error"]["message"]
    wider = index_schema("idx", 4, "sem").as_dict()
    wider["fields"].append({"name": "extra", "type": "Edm.String"})
    assert call(service, "PUT", INDEX, wider)[0] == 200


def test_index_actions_answer_per_key(service: SearchService) -> None:
    """201 new, 200 replaced or deleted (even when missing), 404 merging a missing key; 207 if any failed."""
    assert index_docs(service, doc("a"), doc("b"))[1]["value"][0]["statusCode"] == 201
    status, answer = index_docs(
        service,
        doc("a"),
        {"@search.action": "merge", "id": "zz"},
        {"@search.action": "mergeOrUpload", "id": "b", "content": "merged"},
        {"@search.action": "delete", "id": "never"},
        doc("bad key"),
    )
    assert status == 207
    assert [(r["key"], r["status"], r["statusCode"]) for r in answer["value"]] == [
        ("a", True, 200), ("zz", False, 404), ("b", True, 200), ("never", True, 200), ("bad key", False, 400),
    ]  # fmt: skip
    assert service.documents("idx")["b"]["content"] == "merged"


@pytest.mark.parametrize(
    ("action", "problem"),
    [
        (doc("a", content_vector=[1.0, 2.0]), "dimensionality of 4"),
        (doc("a", nope="x"), "'nope' does not exist"),
        (doc("a", ordinal="three"), "Edm.Int32"),
        (doc("a", last_modified="yesterday"), "Edm.DateTimeOffset"),
    ],
)
def test_a_malformed_value_rejects_the_whole_request(service: SearchService, action: Any, problem: str) -> None:
    """Nothing of a batch with one malformed document is written (why the adapter validates first)."""
    status, answer = index_docs(service, doc("ok"), action)
    assert status == 400
    assert problem in answer["error"]["message"]
    assert service.documents("idx") == {}


def test_an_empty_batch_is_refused(service: SearchService) -> None:
    """The service wants at least one action per request (the adapter never sends an empty batch)."""
    status, answer = index_docs(service)
    assert status == 400
    assert "No indexing actions" in answer["error"]["message"]


def test_nan_is_not_json_and_big_requests_are_413(service: SearchService) -> None:
    """A NaN literal is a 400; more than 1,000 actions or a body over the limit is a 413."""
    assert call(service, "POST", f"{INDEX}/docs/search.index", b'{"value": [{"id": "a", "ordinal": NaN}]}')[0] == 400
    assert index_docs(service, *(doc(f"k{n}") for n in range(MAX_BATCH_ACTIONS + 1)))[0] == 413
    service.max_body_bytes = 100
    assert index_docs(service, doc("a", "x" * 200))[0] == 413


def filter_library(service: SearchService) -> None:
    index_docs(
        service,
        doc("a", doc_id="d1", ordinal=1, access_groups=["hr"], version="v1", last_modified="2026-01-01T00:00:00Z"),
        doc(
            "b", doc_id="d2", ordinal=2, access_groups=["hr", "fin"], version="v2", last_modified="2026-02-01T00:00:00Z"
        ),
        doc("c", doc_id="d'3", ordinal=3, access_groups=[], version="v1", last_modified="2026-01-10T00:00:00+02:00"),
    )


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("doc_id eq 'd1'", {"a"}),
        ("doc_id ne 'd1'", {"b", "c"}),
        ("doc_id eq 'd''3'", {"c"}),
        ("ordinal gt 1 and ordinal le 3", {"b", "c"}),
        ("not (ordinal lt 2) or doc_id eq 'd1'", {"a", "b", "c"}),
        ("(version eq 'v1') and (ordinal eq 3)", {"c"}),
        ("search.in(doc_id, 'd1, d2')", {"a", "b"}),
        ("search.in(doc_id, 'd1|d''3', '|')", {"a", "c"}),
        ("access_groups/any(g: g eq 'fin')", {"b"}),
        ("access_groups/any(g: search.in(g, 'fin|hr', '|'))", {"a", "b"}),
        ("access_groups/any()", {"a", "b"}),
        ("not access_groups/any()", {"c"}),
        ("access_groups/all(g: g eq 'hr')", {"a", "c"}),
        ("last_modified ge 2026-01-09T23:00:00Z", {"b"}),
        ("last_modified lt 2026-01-09T23:00:00Z", {"a", "c"}),
    ],
)
def test_the_odata_filter_subset(service: SearchService, expression: str, expected: set[str]) -> None:
    """Comparisons, boolean logic, search.in and lambdas select exactly the matching documents."""
    filter_library(service)
    assert set(search(service, filter=expression)) == expected


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"filter": "path eq 'x'"}, "not filterable"),
        ({"filter": "nope eq 1"}, "Could not find a property named 'nope'"),
        ({"filter": "doc_id eq"}, "end of expression"),
        ({"filter": "access_groups eq 'hr'"}, "only inside any/all"),
        ({"orderby": "content asc"}, "not sortable"),
        ({"select": "id,content_vector"}, "not retrievable"),
        ({"facets": ["doc_id"]}, "not implemented"),
        ({"queryType": "semantic", "semanticConfiguration": "other", "search": "x"}, "Unknown semantic"),
        ({"queryType": "semantic", "semanticConfiguration": "sem"}, "needs search text"),
        ({"vectorQueries": [{"kind": "vector", "vector": [1.0], "k": 1, "fields": "content_vector"}]}, "4 dimensions"),
        ({"bogus": 1}, "not a valid search parameter"),
    ],
)
def test_the_service_refuses_what_the_schema_does_not_allow(service: SearchService, body: Any, problem: str) -> None:
    """Filters need filterable fields, sorts sortable ones, selects retrievable ones; unknown options fail."""
    status, answer = call(service, "POST", f"{INDEX}/docs/search.post.search", body)
    assert status == 400
    assert problem in answer["error"]["message"]


def test_keyword_scoring_is_bm25_with_search_modes(service: SearchService) -> None:
    """More occurrences rank higher; searchMode all needs every word; orderby overrides the score."""
    index_docs(service, doc("once", "apple pie"), doc("twice", "apple apple pie"), doc("other", "banana"))
    assert search(service, search="apple") == ["twice", "once"]
    assert search(service, search="apple banana", searchMode="any") == ["other", "twice", "once"]
    assert search(service, search="apple banana", searchMode="all") == []
    assert search(service, search="apple", orderby="id asc") == ["once", "twice"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Don't STOP", ["don't", "stop"]),
        ("pi is 3.14, or 3,14; U.S.A.", ["pi", "is", "3.14", "or", "3,14", "u.s.a"]),
        ("e-mail snake_case", ["e", "mail", "snake_case"]),
        ("हिन्दी भाषा", ["हिन्दी", "भाषा"]),
        ("عَرَبِيّ", ["عَرَبِيّ"]),
        ("日本語のテキスト", ["日", "本", "語", "の", "テキスト"]),
        ("?! -- ...", []),
    ],
)
def test_words_follow_the_standard_analyzer(text: str, expected: list[str]) -> None:
    """UAX#29 word breaks, lowercased: marks stay in their word, ' and . join letters, ideographs stand alone."""
    assert words(text) == expected


def test_simple_query_escapes_are_honoured_and_operators_refused(service: SearchService) -> None:
    """A backslash escapes the next character; an unescaped operator is not implemented locally (400)."""
    index_docs(service, doc("a", "the employee's handbook"), doc("b", "employee of the month"))
    assert search(service, search="employee\\'s") == ["a"]
    assert search(service, search="handbook\\)") == ["a"]
    for text in ("employee -month", "employee*", "(handbook)", '"the month"', "a | b", "a + b"):
        status, answer = call(service, "POST", f"{INDEX}/docs/search.post.search", {"search": text})
        assert status == 400, text
        assert "escape it" in answer["error"]["message"]


def test_hybrid_fuses_with_reciprocal_rank_fusion(service: SearchService) -> None:
    """The fused score is the sum of 1 / (60 + rank) over the keyword and vector lists."""
    index_docs(
        service,
        doc("both", "apple", content_vector=[0.9, 0.1, 0.0, 0.0]),
        doc("vector", "cherry", content_vector=[1.0, 0.0, 0.0, 0.0]),
    )
    query = {"kind": "vector", "vector": [1.0, 0.0, 0.0, 0.0], "k": 5, "fields": "content_vector"}
    status, answer = call(
        service,
        "POST",
        f"{INDEX}/docs/search.post.search",
        {"search": "apple", "vectorQueries": [query], "count": True},
    )
    assert status == 200
    assert [(row["id"], row["@search.score"]) for row in answer["value"]] == [
        ("both", pytest.approx(1 / (RRF_K + 1) + 1 / (RRF_K + 2))),
        ("vector", pytest.approx(1 / (RRF_K + 1))),
    ]
    assert answer["@odata.count"] == 2


def test_count_and_lookup_endpoints(service: SearchService) -> None:
    """docs/$count answers the number as text; docs('key') one document or 404."""
    index_docs(service, doc("a", "text"))
    assert call(service, "GET", f"{INDEX}/docs/$count") == (200, "1")
    assert call(service, "GET", f"{INDEX}/docs('a')")[1]["content"] == "text"
    assert call(service, "GET", f"{INDEX}/docs('b')")[0] == 404


def test_faults_follow_their_path_count_and_keys(service: SearchService) -> None:
    """fail_next hits only matching paths, the given number of times; fail_keys with times=None persists."""
    service.fail_next(1, 503, path="search.post.search", retry_after="2")
    assert index_docs(service, doc("a"))[0] == 200
    response = service.handle("POST", f"{INDEX}/docs/search.post.search?api-version=1", {"api-key": API_KEY}, b"{}")
    assert (response.status, response.headers) == (503, {"Retry-After": "2"})
    assert search(service) == ["a"]
    service.fail_keys(409, ["a"], times=None)
    for _ in range(2):
        assert index_docs(service, doc("a"))[1]["value"][0]["statusCode"] == 409
    service.reset()
    assert index_docs(service, doc("a"))[0] == 200
    assert [(r.method, r.status, r.docs) for r in service.requests] == [("POST", 200, 1)]


def test_the_command_line_serves_on_the_given_port(tmp_path: Path) -> None:
    """``python -m tests.emulators.search_server --port P --api-key K`` answers the REST API."""
    port = free_port()
    server = ServerProcess(
        "search", python_server("tests.emulators.search_server", "--port", str(port), "--api-key", "k"), port, tmp_path
    ).start(timeout_s=30)
    try:
        request = urllib.request.Request(  # noqa: S310 - a fixed http://127.0.0.1 URL
            f"{server.url}/indexes?api-version=2024-07-01", headers={"api-key": "k"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - a fixed http://127.0.0.1 URL
            assert json.loads(response.read()) == {"value": []}
    finally:
        server.stop()
