"""The Durable Functions webhooks the SDK's ``DurableOrchestrationClient`` calls, over the local engine.

Paths, query parameters and status codes are the ones ``azure-functions-durable`` 1.7.0 sends and
expects (``DurableOrchestrationClient.py``, ``RpcManagementOptions.py``), and the ones the Durable
extension answers with: start 202 (500 when a Pending/Running instance has the id, 400 for an
unknown orchestrator), status 200/202/400/404 by runtime status, purge 200/404, terminate and
raise-event 202/410/404. ``client_binding`` builds the JSON string a ``durableClient`` input
binding receives, pointing the SDK here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, unquote

from ingestion.devhost.engine import InstanceExists
from ingestion.devhost.http import HttpReply

PREFIX = "/runtime/webhooks/durabletask/"
_BAD_ID = re.compile(r"[/\\#?\x00-\x1f\x7f]")  # what the extension rejects in instance ids
_STATUS_CODES = {"Completed": 200, "Pending": 202, "Running": 202, "Failed": 400, "Terminated": 400}


class Engine(Protocol):
    """The part of ``DurableEngine`` the webhooks use."""

    hub_name: str

    def start_new(self, name: str, instance_id: str | None, input_json: str | None) -> str: ...
    def get_status(
        self, instance_id: str, *, show_history: bool = ..., show_history_output: bool = ..., show_input: bool = ...
    ) -> dict[str, Any] | None: ...
    def query(
        self,
        *,
        created_from: datetime | None = ...,
        created_to: datetime | None = ...,
        runtime_status: Collection[str] | None = ...,
        prefix: str | None = ...,
    ) -> list[dict[str, Any]]: ...
    def terminate(self, instance_id: str, reason: str) -> str: ...
    def raise_event(self, instance_id: str, name: str, data_json: str | None) -> str: ...
    def purge(self, instance_id: str) -> int: ...
    def purge_by(
        self, *, created_from: datetime, created_to: datetime | None = ..., runtime_status: Collection[str] | None = ...
    ) -> int: ...


def client_binding(base_url: str, hub: str) -> str:
    """The ``durableClient`` binding string, with every URL under ``base_url`` + ``PREFIX``."""
    root = base_url + PREFIX
    tail = f"taskHub={quote(hub)}&connection=Storage"
    instance = f"{root}instances/INSTANCEID"
    return json.dumps(
        {
            "taskHubName": hub,
            "creationUrls": {
                "createNewInstancePostUri": f"{root}orchestrators/{{functionName}}[/{{instanceId}}]",
                "createAndWaitOnNewInstancePostUri": f"{root}orchestrators/{{functionName}}[/{{instanceId}}]"
                "?timeout={timeoutInSeconds}&pollingInterval={intervalInSeconds}",
            },
            "managementUrls": _management_urls(instance, tail) | {"id": "INSTANCEID"},
            "baseUrl": root,
            "requiredQueryStringParameters": "",
            "rpcBaseUrl": root,
            "httpBaseUrl": root,
        }
    )


def _management_urls(instance: str, tail: str) -> dict[str, str]:
    return {
        "statusQueryGetUri": f"{instance}?{tail}",
        "sendEventPostUri": f"{instance}/raiseEvent/{{eventName}}?{tail}",
        "terminatePostUri": f"{instance}/terminate?reason={{text}}&{tail}",
        "rewindPostUri": f"{instance}/rewind?reason={{text}}&{tail}",
        "purgeHistoryDeleteUri": f"{instance}?{tail}",
        "restartPostUri": f"{instance}/restart?{tail}",
        "suspendPostUri": f"{instance}/suspend?reason={{text}}&{tail}",
        "resumePostUri": f"{instance}/resume?reason={{text}}&{tail}",
    }


class DurableWebhooks:
    """Serves requests below ``PREFIX`` (mounted on the devhost's HTTP server)."""

    def __init__(self, engine: Engine, base_url: Callable[[], str]) -> None:
        self._engine = engine
        self._base_url = base_url

    def __call__(  # noqa: PLR0911 - one return per webhook route: the match reads as the route table
        self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes
    ) -> HttpReply:
        parts = [unquote(part) for part in path.split("/")]
        params = dict(parse_qsl(query, keep_blank_values=True))
        try:
            match method, parts:
                case "POST", ["orchestrators", name, *rest] if len(rest) <= 1:
                    return self._start(name, rest[0] if rest and rest[0] else None, body)
                case "GET", ["instances"] | ["instances", ""]:
                    return _json(200, self._engine.query(**_filters(params)))
                case "GET", ["instances", instance_id]:
                    return self._status(instance_id, params)
                case "DELETE", ["instances"] | ["instances", ""]:
                    filters = _filters(params)
                    if filters.get("created_from") is None:
                        return _error(400, "createdTimeFrom is required to purge instances by filter")
                    filters.pop("prefix", None)
                    return _purged(self._engine.purge_by(**filters))
                case "DELETE", ["instances", instance_id]:
                    return _purged(self._engine.purge(instance_id))
                case "POST", ["instances", instance_id, "terminate"]:
                    outcome = self._engine.terminate(instance_id, params.get("reason", ""))
                    return _outcome(outcome, "terminated")
                case "POST", ["instances", instance_id, "raiseEvent", event_name]:
                    outcome = self._engine.raise_event(instance_id, event_name, _input_json(body))
                    return _outcome(outcome, "raised")
                case _, ["instances", _, ("rewind" | "suspend" | "resume" | "restart") as operation]:
                    return _error(501, f"the devhost's engine does not support {operation}")
                case _, ["entities", *_]:
                    return _error(501, "the devhost's engine does not run durable entities")
        except ValueError as error:  # malformed dates, statuses or JSON in the request
            return _error(400, str(error))
        return HttpReply(HTTPStatus.NOT_FOUND)

    def _start(self, name: str, instance_id: str | None, body: bytes) -> HttpReply:
        if instance_id is not None and (_BAD_ID.search(instance_id) or len(instance_id) > 256):
            return _error(400, f"Instance ID '{instance_id}' contains invalid characters or is too long.")
        try:
            started = self._engine.start_new(name, instance_id, _input_json(body))
        except KeyError:
            return _error(400, f"The function '{name}' doesn't exist, is disabled, or is not an orchestrator function.")
        except InstanceExists:
            # The extension's own wording and code: the SDK raises it as the exception message.
            return _error(500, "An Orchestration instance with the status Running already exists.")
        instance = f"{self._base_url()}{PREFIX}instances/{quote(started, safe='')}"
        urls = _management_urls(instance, f"taskHub={quote(self._engine.hub_name)}&connection=Storage")
        return _json(202, {"id": started, **urls}, [("Location", urls["statusQueryGetUri"])])

    def _status(self, instance_id: str, params: Mapping[str, str]) -> HttpReply:
        status = self._engine.get_status(
            instance_id,
            show_history=_flag(params.get("showHistory"), default=False),
            show_history_output=_flag(params.get("showHistoryOutput"), default=False),
            show_input=_flag(params.get("showInput"), default=True),
        )
        if status is None:
            return HttpReply(HTTPStatus.NOT_FOUND)  # empty body: the SDK reads it as "no such instance"
        return _json(_STATUS_CODES.get(str(status.get("runtimeStatus")), 200), status)


def _input_json(body: bytes) -> str | None:
    """The JSON text of an input or event payload.

    The SDK serializes the value itself, then posts that *string* as JSON, so the body is a JSON
    string holding JSON text; any other client posts the JSON value directly. Both are accepted.
    """
    text = body.decode("utf-8").strip()
    if not text:
        return None
    value = json.loads(text)
    if isinstance(value, str):
        try:
            json.loads(value)
        except ValueError:
            return text  # a plain string value, not JSON text: the value is the string itself
        return value
    return None if value is None else text


def _filters(params: Mapping[str, str]) -> dict[str, Any]:
    statuses = [s for s in params.get("runtimeStatus", "").split(",") if s]
    return {
        "created_from": _time(params.get("createdTimeFrom")),
        "created_to": _time(params.get("createdTimeTo")),
        "runtime_status": statuses or None,
        "prefix": params.get("instanceIdPrefix") or None,
    }


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    parsed = datetime.fromisoformat(text.replace(" ", "+"))  # an unencoded "+01:00" arrives as a space
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _flag(text: str | None, *, default: bool) -> bool:
    return default if text is None else text.strip().lower() == "true"


def _outcome(outcome: str, done: str) -> HttpReply:
    codes = {done: HTTPStatus.ACCEPTED, "finished": HTTPStatus.GONE, "not_found": HTTPStatus.NOT_FOUND}
    return HttpReply(codes.get(outcome, HTTPStatus.INTERNAL_SERVER_ERROR))


def _purged(count: int) -> HttpReply:
    return _json(200, {"instancesDeleted": count}) if count else HttpReply(HTTPStatus.NOT_FOUND)


def _error(status: int, message: str) -> HttpReply:
    return _json(status, {"Message": "Something went wrong while processing your request", "ExceptionMessage": message})


def _json(status: int, body: object, headers: Sequence[tuple[str, str]] = ()) -> HttpReply:
    return HttpReply(status, [("Content-Type", "application/json; charset=utf-8"), *headers], json.dumps(body).encode())
