"""The SDK's DurableOrchestrationClient against the devhost's webhooks and the real local engine."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ingestion.devhost.host import Host
from ingestion.devhost.rpc import client_binding
from tests.functions.devhost.conftest import call

pytestmark = pytest.mark.timeout(60)


def client(host: Host, op: str, **ask: Any) -> Any:
    """Runs one client call inside the sample app's ``client`` function; its result, or raises."""
    reply = call("POST", f"{host.base_url}/api/client", {"op": op, **ask})
    body = reply.json()
    if "error" in body:
        raise RuntimeError(body["error"])
    return body["result"]


def test_http_starter_gets_check_status_urls_that_work(host: Host) -> None:
    """start_new + create_check_status_response: 202, Location, and a status URL that answers."""
    reply = call("POST", f"{host.base_url}/api/start/pipeline?id=first", {"name": "ada"})
    assert reply.status == 202
    payload = reply.json()
    assert payload["id"] == "first"
    assert reply.headers["Location"] == payload["statusQueryGetUri"]
    assert payload["statusQueryGetUri"].startswith(f"{host.base_url}/runtime/webhooks/durabletask/instances/first?")
    host.engine.wait_for("first", timeout=30)
    status = call("GET", payload["statusQueryGetUri"])
    assert status.status == 200
    assert status.json()["runtimeStatus"] == "Completed"
    assert status.json()["output"] == {"shout": "ADA", "size": 3, "go": None}


def test_start_status_raise_event_and_purge(host: Host) -> None:
    """A waiting instance is Running; a second start fails as Azure's does; an event completes it."""
    assert client(host, "start", name="pipeline", id="wait-1", input={"name": "x", "wait": True}) == "wait-1"
    with pytest.raises(RuntimeError, match="already exists"):
        client(host, "start", name="pipeline", id="wait-1", input={"name": "again"})
    assert client(host, "status", id="wait-1")["runtimeStatus"] in ("Pending", "Running")
    assert client(host, "purge", id="wait-1") == 0  # a running instance is not purged
    client(host, "raise", id="wait-1", event="go", data={"ok": True})
    host.engine.wait_for("wait-1", timeout=30)
    status = client(host, "status", id="wait-1", history=True)
    assert status["runtimeStatus"] == "Completed"
    assert status["output"] == {"shout": "X", "size": 1, "go": {"ok": True}}
    assert status["input"] == {"name": "x", "wait": True}
    assert status["history"][0]["EventType"] == "ExecutionStarted"
    with pytest.raises(RuntimeError, match="is gone"):
        client(host, "raise", id="wait-1", event="go")
    assert client(host, "purge", id="wait-1") == 1
    assert client(host, "status", id="wait-1") is None
    assert client(host, "purge", id="wait-1") == 0


def test_terminate_and_query_by_status(host: Host) -> None:
    """terminate ends a running instance (410 after that is no error); get_status_by filters."""
    client(host, "start", name="pipeline", id="stop-me", input={"name": "y", "wait": True})
    client(host, "start", name="pipeline", id="finish-me", input={"name": "z"})
    host.engine.wait_for("finish-me", timeout=30)
    assert client(host, "query", statuses=["Running", "Pending"]) == ["stop-me"]
    client(host, "terminate", id="stop-me", reason="no longer needed")
    host.engine.wait_for("stop-me", timeout=30)
    client(host, "terminate", id="stop-me", reason="again")  # 410: the SDK treats it as done
    assert client(host, "status", id="stop-me")["runtimeStatus"] == "Terminated"
    assert client(host, "query", statuses=["Completed"]) == ["finish-me"]
    with pytest.raises(RuntimeError, match="No instance"):
        client(host, "terminate", id="never-was", reason="x")


def test_unknown_orchestrator_is_reported_by_name(host: Host) -> None:
    """A start for an orchestrator the app lacks fails with the host's 400 message."""
    with pytest.raises(RuntimeError, match="'nope' doesn't exist"):
        client(host, "start", name="nope", id="x")


def test_webhook_status_codes_follow_the_extension(host: Host) -> None:
    """Raw webhook calls: 404 unknown, 202 running, purge-by needs a start time, 501 for rewind."""
    root = f"{host.base_url}/runtime/webhooks/durabletask"
    assert call("GET", f"{root}/instances/ghost").status == 404
    started = call("POST", f"{root}/orchestrators/pipeline/raw-1", {"name": "q", "wait": True})
    assert (started.status, started.json()["id"]) == (202, "raw-1")
    assert call("GET", f"{root}/instances/raw-1?showInput=false").status == 202
    assert call("DELETE", f"{root}/instances/").status == 400
    assert call("POST", f"{root}/instances/raw-1/rewind?reason=x").status == 501
    assert call("POST", f"{root}/instances/raw-1/raiseEvent/go", {"plain": 1}).status == 202
    host.engine.wait_for("raw-1", timeout=30)
    assert call("GET", f"{root}/instances/raw-1").json()["output"]["go"] == {"plain": 1}
    purged = call("DELETE", f"{root}/instances/?createdTimeFrom=2000-01-01T00:00:00.000000Z&runtimeStatus=Completed")
    assert purged.json() == {"instancesDeleted": 1}
    assert call("GET", f"{root}/instances/").json() == []


def test_client_binding_points_the_sdk_at_this_host() -> None:
    """The durableClient binding string carries the hub and rpcBaseUrl the SDK builds URLs from."""
    binding = json.loads(client_binding("http://127.0.0.1:7071", "Hub"))
    assert binding["taskHubName"] == "Hub"
    assert binding["rpcBaseUrl"] == "http://127.0.0.1:7071/runtime/webhooks/durabletask/"
    assert binding["managementUrls"]["id"] == "INSTANCEID"
    assert "INSTANCEID" in binding["managementUrls"]["statusQueryGetUri"]
