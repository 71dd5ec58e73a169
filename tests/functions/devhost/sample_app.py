"""A small function app with one function per trigger kind the devhost serves; it records its calls."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Generator
from typing import Any

import azure.durable_functions as df
import azure.functions as func
from azurefunctions.extensions.bindings.blob import BlobClient

app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)

_calls: list[tuple[str, Any]] = []
_lock = threading.Lock()


def record(function: str, detail: Any) -> None:
    with _lock:
        _calls.append((function, detail))


def calls(function: str) -> list[Any]:
    """What ``function`` recorded so far, in call order."""
    with _lock:
        return [detail for name, detail in _calls if name == function]


def reset() -> None:
    with _lock:
        _calls.clear()


# --------------------------------------------------------------------------- HTTP


@app.route(route="items/{item_id}/{extra?}", methods=["GET", "POST"])
def items(req: func.HttpRequest) -> func.HttpResponse:
    echo = {
        "method": req.method,
        "url": req.url,
        "route": dict(req.route_params),
        "query": dict(req.params),
        "body": req.get_body().decode(),
        "header": req.headers.get("x-echo"),
    }
    return func.HttpResponse(json.dumps(echo), status_code=201, headers={"X-Reply": "yes"}, mimetype="application/json")


@app.route(route="greet/{name:alpha}", methods=["GET"])
async def greet(req: func.HttpRequest) -> func.HttpResponse:
    await asyncio.sleep(0)
    return func.HttpResponse(f"hello {req.route_params['name']}", headers={"X-Handler": "async"})


@app.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("the handler failed")


@app.route(route="start/{orchestrator}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    body = req.get_body()
    instance_id = await client.start_new(
        req.route_params["orchestrator"], req.params.get("id"), json.loads(body) if body else None
    )
    return client.create_check_status_response(req, instance_id)


@app.route(route="client", methods=["POST"])
@app.durable_client_input(client_name="client")
async def client_op(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    """Runs one durable client call named in the body; answers its result or the error it raised."""
    ask = req.get_json()
    op, instance_id = ask["op"], ask.get("id")
    try:
        if op == "start":
            result: Any = await client.start_new(ask["name"], instance_id, ask.get("input"))
        elif op == "status":
            status = await client.get_status(instance_id, show_history=ask.get("history", False))
            result = status.to_json() if status else None
        elif op == "terminate":
            result = await client.terminate(instance_id, ask["reason"])
        elif op == "raise":
            result = await client.raise_event(instance_id, ask["event"], ask.get("data"))
        elif op == "purge":
            result = (await client.purge_instance_history(instance_id)).instances_deleted
        elif op == "query":
            statuses = [df.OrchestrationRuntimeStatus(s) for s in ask["statuses"]]
            result = sorted(s.instance_id for s in await client.get_status_by(runtime_status=statuses))
        else:
            raise ValueError(op)
    except Exception as error:  # noqa: BLE001 - the test reads what the SDK raised
        return func.HttpResponse(json.dumps({"error": str(error)}), status_code=409, mimetype="application/json")
    return func.HttpResponse(json.dumps({"result": result}, default=str), mimetype="application/json")


# --------------------------------------------------------------------------- events and timers


@app.blob_trigger(
    arg_name="blob", path="uploads/{name}", connection="AzureWebJobsStorage", source=func.BlobSource.EVENT_GRID
)
@app.durable_client_input(client_name="client")
async def on_blob(blob: BlobClient, client: df.DurableOrchestrationClient) -> None:
    kind = type(blob)
    detail = {"type": f"{kind.__module__}.{kind.__name__}", "container": blob.container_name, "name": blob.blob_name}
    record("on_blob", detail | {"url": blob.url})
    if blob.blob_name.startswith("fail"):
        raise RuntimeError(f"cannot take {blob.blob_name}")
    try:
        await client.start_new("pipeline", f"blob-{blob.blob_name}", {"name": blob.blob_name})
    except Exception as error:
        if "already exists" not in str(error):  # a duplicate event: the running instance has it
            raise


@app.event_grid_trigger(arg_name="event")
def on_event(event: func.EventGridEvent) -> None:
    record("on_event", {"type": event.event_type, "subject": event.subject, "data": event.get_json(), "id": event.id})
    if "poison" in event.subject:
        raise ValueError("this event always fails")


@app.timer_trigger(schedule="* * * * * *", arg_name="timer")
def tick(timer: func.TimerRequest) -> None:
    record("tick", {"past_due": timer.past_due, "next": timer.schedule_status.get("Next")})


# --------------------------------------------------------------------------- durable


@app.orchestration_trigger(context_name="context")
def pipeline(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    ask = context.get_input() or {}
    shouted = yield context.call_activity("shout", ask.get("name", ""))
    size = yield context.call_activity("measure", {"text": shouted})
    go = (yield context.wait_for_external_event("go")) if ask.get("wait") else None
    return {"shout": shouted, "size": size, "go": go}


@app.activity_trigger(input_name="text")
def shout(text: str) -> str:
    return text.upper()


@app.activity_trigger(input_name="payload")
async def measure(payload: dict[str, str]) -> int:
    await asyncio.sleep(0)
    return len(payload["text"])
