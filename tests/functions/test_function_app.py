"""function_app.py: what it registers, and its HTTP handlers over the embedded profile."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import azure.functions as func
import pytest

import function_app
from ingestion.bulk import ingest_all
from ingestion.model import DocumentRef


@pytest.fixture
def app_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The app's settings point at a temporary inbox and data folder; its services are rebuilt."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    monkeypatch.setenv("INGEST_INBOX_DIR", str(inbox))
    monkeypatch.setenv("INGEST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    function_app.services.cache_clear()
    yield inbox
    function_app.services().close()
    function_app.services.cache_clear()


# get_functions() validates as it builds, and refuses to run twice on one app: read it once.
FUNCTIONS = {function.get_function_name(): function for function in function_app.app.get_functions()}


def routes() -> dict[str, tuple[str, list[str], str]]:
    found = {}
    for function in FUNCTIONS.values():
        trigger = function.get_trigger()
        found[function.get_function_name()] = (
            trigger.route,
            [str(method.value) for method in trigger.methods],
            str(trigger.auth_level.value),
        )
    return found


def call(name: str, request: func.HttpRequest) -> func.HttpResponse:
    response = FUNCTIONS[name].get_user_function()(request)
    assert isinstance(response, func.HttpResponse)
    return response


def test_registered_http_routes() -> None:
    """Health is anonymous; search and document status need a function key."""
    assert routes() == {
        "health": ("health", ["GET"], "anonymous"),
        "search_chunks": ("search", ["POST"], "function"),
        "document_status": ("documents/{doc_id}", ["GET"], "function"),
    }


def test_search_and_status_answer_from_the_index(app_env: Path) -> None:
    """After ingestion, search returns the chunk with its citation and status says indexed."""
    (app_env / "handbook.md").write_text("# Leave\n\nEmployees get 25 days of paid leave per year.\n")
    ingest_all(function_app.services())

    found = call("search_chunks", func.HttpRequest("POST", "/api/search", body=b'{"query": "paid leave days"}'))
    results = json.loads(found.get_body())["results"]
    assert found.status_code == 200
    assert results[0]["path"] == "handbook.md"
    assert "25 days" in results[0]["content"]

    doc_id = DocumentRef("uploads", "handbook.md").doc_id
    status = call(
        "document_status",
        func.HttpRequest("GET", f"/api/documents/{doc_id}", route_params={"doc_id": doc_id}, body=b""),
    )
    assert json.loads(status.get_body())["status"] == "indexed"
    health = call("health", func.HttpRequest("GET", "/api/health", body=b""))
    assert json.loads(health.get_body()) == {"status": "ok", "jobs": {"indexed": 1}}


def test_bad_requests_get_clear_errors(app_env: Path) -> None:
    """A search without a query is a 400 with the expected shape; an unknown document is a 404."""
    bad = call("search_chunks", func.HttpRequest("POST", "/api/search", body=b'{"q": 1}'))
    assert bad.status_code == 400
    assert "query" in json.loads(bad.get_body())["error"]
    missing = call(
        "document_status", func.HttpRequest("GET", "/api/documents/x", route_params={"doc_id": "x"}, body=b"")
    )
    assert missing.status_code == 404
