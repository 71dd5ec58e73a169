"""Azure Functions entry point (Python v2 programming model): bindings only, no logic.

- ``start_ingestion``: blob trigger on ``uploads`` fed by Event Grid (the only blob trigger Flex
  Consumption has), bound to a ``BlobClient`` so the body never reaches this worker; it registers
  the blob's version and starts ``ingest_document`` under a deterministic instance id.
- ``remove_deleted_blob``: Event Grid trigger for ``BlobDeleted`` (the blob trigger drops deletes).
- ``ingest_document``: the orchestrator; the stages and ``record_outcome`` are its activities.
- HTTP: ``health`` (anonymous), ``search`` and ``documents/{doc_id}`` for the chatbot.

Services are built on first use, not at import (``ingestion.bootstrap.shared_services``); telemetry
starts at import (``ingestion.telemetry.start``), so every invocation's spans and logs are exported.
"""

# No ``from __future__ import annotations`` here: the Python worker reads these annotations at
# indexing time to choose converters (e.g. the SDK-type BlobClient), so they stay real objects.
import json
from collections.abc import Generator
from typing import Any

import azure.durable_functions as df
import azure.functions as func
import azurefunctions.extensions.bindings.blob as blob_binding

from ingestion import activities, reconcile_run, telemetry, triggers, workflow
from ingestion.api import health as health_report
from ingestion.api import job_status, report_payload, search
from ingestion.bootstrap import shared_services as services

telemetry.start()  # exporters from the environment (Application Insights, OTLP), before any work
app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


# ------------------------------------------------------------------ triggers and orchestration


@app.function_name("start_ingestion")
@app.blob_trigger(
    arg_name="blob", path="uploads/{name}", connection="UploadsStorage", source=func.BlobSource.EVENT_GRID
)
@app.durable_client_input(client_name="client")
async def start_ingestion(blob: blob_binding.BlobClient, client: df.DurableOrchestrationClient) -> None:
    await triggers.ingest_blob(services(), client, blob.container_name, blob.blob_name)


@app.function_name("remove_deleted_blob")
@app.event_grid_trigger(arg_name="event")
@app.durable_client_input(client_name="client")
async def remove_deleted_blob(event: func.EventGridEvent, client: df.DurableOrchestrationClient) -> None:
    await triggers.handle_blob_event(services(), client, event.event_type, event.subject)


@app.function_name(workflow.ORCHESTRATOR)
@app.orchestration_trigger(context_name="context")
def ingest_document(context: df.DurableOrchestrationContext) -> Generator[Any, Any, dict[str, Any]]:
    return (yield from workflow.ingest_document(context))


def _stage_activity(name: str) -> None:
    @app.function_name(name)
    @app.activity_trigger(input_name="payload")
    def stage(payload: dict[str, Any], context: func.Context) -> dict[str, Any]:
        return activities.run_stage(services(), name, payload, context.trace_context.trace_parent)


for _stage in workflow.STAGE_ACTIVITIES:
    _stage_activity(_stage)


@app.function_name(workflow.RECORD_OUTCOME)
@app.activity_trigger(input_name="payload")
def record_outcome(payload: dict[str, Any], context: func.Context) -> dict[str, Any]:
    return activities.record_outcome(services(), payload, context.trace_context.trace_parent)


@app.function_name("reconcile")
@app.timer_trigger(arg_name="timer", schedule="%INGEST_RECONCILE_SCHEDULE%")
@app.durable_client_input(client_name="client")
async def reconcile(timer: func.TimerRequest, client: df.DurableOrchestrationClient) -> None:
    await reconcile_run.reconcile(services(), reconcile_run.DurableOrchestrations(client))


# ------------------------------------------------------------------ HTTP


def _json(body: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, ensure_ascii=False), status_code=status, mimetype="application/json")


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return _json(health_report(services()))


@app.route(route="search", methods=["POST"])
def search_chunks(req: func.HttpRequest) -> func.HttpResponse:
    try:
        body = req.get_json()
        query = str(body["query"])
        top = int(body.get("top", 5))
    except (ValueError, KeyError, TypeError):
        return _json({"error": 'expected JSON {"query": "...", "top": 5}'}, status=400)
    hits = search(services(), query, top=max(1, min(top, 50)))
    return _json({"results": [hit.__dict__ | {"headings": list(hit.headings)} for hit in hits]})


@app.route(route="reconcile", methods=["POST"])
@app.durable_client_input(client_name="client")
async def reconcile_now(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    dry_run = req.params.get("dry_run", "").lower() in ("1", "true", "yes")
    report = await reconcile_run.reconcile(services(), reconcile_run.DurableOrchestrations(client), dry_run=dry_run)
    return _json(report_payload(report))


@app.route(route="documents/{doc_id}", methods=["GET"])
def document_status(req: func.HttpRequest) -> func.HttpResponse:
    job = services().jobs.get(req.route_params["doc_id"])
    if job is None:
        return _json({"error": "unknown document"}, status=404)
    return _json(job_status(job))
