"""Azure Functions entry point (Python v2 programming model): bindings only, no logic.

Today it serves health and search over HTTP; the blob trigger, the Durable orchestrator and the
reconciler's timer arrive with their issues. Services are built on first use, not at import:
Flex Consumption gives an app 30 s to start, and settings errors should surface in a response.
"""

from __future__ import annotations

import json
from functools import cache

import azure.functions as func

from ingestion.api import job_status, search
from ingestion.bootstrap import build_services
from ingestion.config import Settings
from ingestion.services import Services

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@cache
def services() -> Services:
    return build_services(Settings.from_env())


def _json(body: object, status: int = 200) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(body, ensure_ascii=False), status_code=status, mimetype="application/json")


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    counts = services().jobs.count_by_status()
    return _json({"status": "ok", "jobs": {status.value: count for status, count in counts.items()}})


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


@app.route(route="documents/{doc_id}", methods=["GET"])
def document_status(req: func.HttpRequest) -> func.HttpResponse:
    job = services().jobs.get(req.route_params["doc_id"])
    if job is None:
        return _json({"error": "unknown document"}, status=404)
    return _json(job_status(job))
