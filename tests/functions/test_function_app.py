"""function_app.py: what it registers, and its HTTP handlers over the embedded profile."""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from pathlib import Path

import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob_binding
import pytest

import function_app
from ingestion.bootstrap import reset_shared_services
from ingestion.jobs import register_version
from ingestion.model import DocumentRef
from ingestion.pipeline import run_document
from ingestion.stages import StageRequest
from ingestion.workflow import ORCHESTRATOR, RECORD_OUTCOME, STAGE_ACTIVITIES


@pytest.fixture
def app_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The app's settings point at a temporary inbox and data folder; its services are rebuilt."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    monkeypatch.setenv("INGEST_INBOX_DIR", str(inbox))
    monkeypatch.setenv("INGEST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken"))
    reset_shared_services()
    yield inbox
    reset_shared_services()


# get_functions() validates as it builds, and refuses to run twice on one app: read it once.
FUNCTIONS = {function.get_function_name(): function for function in function_app.app.get_functions()}


def bindings(name: str) -> dict[str, dict[str, object]]:
    """Each binding of a function as its function.json entry, by binding name."""
    entries = json.loads(FUNCTIONS[name].get_function_json())["bindings"]
    return {entry.pop("name"): entry for entry in entries}


def test_every_registered_function() -> None:
    """The app registers exactly the starter, the deletion handler, the orchestration and the HTTP API."""
    assert set(FUNCTIONS) == {
        "start_ingestion",
        "remove_deleted_blob",
        ORCHESTRATOR,
        *STAGE_ACTIVITIES,
        RECORD_OUTCOME,
        "reconcile",
        "health",
        "search_chunks",
        "reconcile_now",
        "document_status",
    }


def test_the_starter_is_an_event_grid_blob_trigger_that_never_receives_the_body() -> None:
    """Blob trigger on uploads/{name} with source EventGrid, bound as a BlobClient, with a durable client."""
    assert bindings("start_ingestion") == {
        "blob": {
            "direction": "IN",
            "type": "blobTrigger",
            "path": "uploads/{name}",
            "connection": "UploadsStorage",
            "source": "EventGrid",
        },
        "client": {"direction": "IN", "type": "durableClient"},
    }
    starter = FUNCTIONS["start_ingestion"].get_user_function().client_function
    assert inspect.iscoroutinefunction(starter)  # durable client functions must be async
    annotation = inspect.signature(starter, eval_str=True).parameters["blob"].annotation
    assert annotation is blob_binding.BlobClient  # the SDK-type binding: a client, not an InputStream


def test_deletions_have_their_own_event_grid_trigger() -> None:
    """BlobDeleted events reach an Event Grid trigger (the blob trigger drops them), async with a client."""
    assert bindings("remove_deleted_blob") == {
        "event": {"direction": "IN", "type": "eventGridTrigger"},
        "client": {"direction": "IN", "type": "durableClient"},
    }
    assert inspect.iscoroutinefunction(FUNCTIONS["remove_deleted_blob"].get_user_function().client_function)


def test_the_orchestration_and_its_activities() -> None:
    """One orchestrator; each stage and record_outcome is an activity taking a JSON payload."""
    assert bindings(ORCHESTRATOR) == {"context": {"direction": "IN", "type": "orchestrationTrigger"}}
    for name in (*STAGE_ACTIVITIES, RECORD_OUTCOME):
        assert bindings(name) == {"payload": {"direction": "IN", "type": "activityTrigger"}}, name


def test_the_reconciler_runs_on_a_timer_from_settings_with_a_durable_client() -> None:
    """The only timer is the reconciler's; its schedule is an app setting; it is async with a client."""
    assert [name for name, f in FUNCTIONS.items() if f.get_trigger().type == "timerTrigger"] == ["reconcile"]
    assert bindings("reconcile") == {
        "timer": {"direction": "IN", "type": "timerTrigger", "schedule": "%INGEST_RECONCILE_SCHEDULE%"},
        "client": {"direction": "IN", "type": "durableClient"},
    }
    assert inspect.iscoroutinefunction(FUNCTIONS["reconcile"].get_user_function().client_function)


def routes() -> dict[str, tuple[str, list[str], str]]:
    found = {}
    for function in FUNCTIONS.values():
        trigger = function.get_trigger()
        if trigger.type != "httpTrigger":
            continue
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
    """Health is anonymous; search, reconcile and document status need a function key."""
    assert routes() == {
        "health": ("health", ["GET"], "anonymous"),
        "search_chunks": ("search", ["POST"], "function"),
        "reconcile_now": ("reconcile", ["POST"], "function"),
        "document_status": ("documents/{doc_id}", ["GET"], "function"),
    }


def test_search_and_status_answer_from_the_index(app_env: Path) -> None:
    """After ingestion, search returns the chunk with its citation and status says indexed."""
    (app_env / "handbook.md").write_text("# Leave\n\nEmployees get 25 days of paid leave per year.\n")
    services = function_app.services()
    [blob] = services.blobs.list()
    registration = register_version(services, DocumentRef("uploads", blob.path), blob.version)
    run_document(services, StageRequest(registration.job.doc_id, blob.version.etag))

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
    report = json.loads(health.get_body())
    assert (report["status"], report["jobs"]) == ("ok", {"indexed": 1})
    # Process-wide counters (other tests in this process may have added to them): present, by name.
    assert all(isinstance(count, int) for count in report["sdk_retries"].values())
    assert all(isinstance(count, int) for count in report["reconciler_actions"].values())


def test_bad_requests_get_clear_errors(app_env: Path) -> None:
    """A search without a query is a 400 with the expected shape; an unknown document is a 404."""
    bad = call("search_chunks", func.HttpRequest("POST", "/api/search", body=b'{"q": 1}'))
    assert bad.status_code == 400
    assert "query" in json.loads(bad.get_body())["error"]
    missing = call(
        "document_status", func.HttpRequest("GET", "/api/documents/x", route_params={"doc_id": "x"}, body=b"")
    )
    assert missing.status_code == 404
