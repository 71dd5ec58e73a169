"""A local Application Insights ingestion endpoint ("Breeze"), for the Azure Monitor exporter's tests.

The exporter POSTs a JSON array of envelopes (``TelemetryItem``) to ``<IngestionEndpoint>/v2.1/track``
(``azure-monitor-opentelemetry-exporter``: ``AzureMonitorClient`` formats ``{host}/{apiVersion}`` +
``/track``); the service answers ``200 {"itemsReceived", "itemsAccepted", "errors": []}``. An
envelope is ``{"name": "Microsoft.ApplicationInsights.Request" | ...RemoteDependency | ...Message |
...Metric | ..., "time", "iKey", "tags": {"ai.operation.id", "ai.operation.parentId", ...},
"data": {"baseType", "baseData": {"name", "properties" (customDimensions), ...}}}``.

The connection string ``connection_string`` points the exporter here over plain HTTP (no credential,
so no bearer-token policy insists on TLS). Bodies may be gzip-encoded. Every envelope is kept, in
arrival order, for the tests' assertions (``envelopes``, ``of_type``).
"""

from __future__ import annotations

import gzip
import json
import re
import threading
from dataclasses import dataclass
from typing import Any

from tests.emulators.local_http import LocalHttpServer, QuietHandler

INSTRUMENTATION_KEY = "00000000-0000-0000-0000-000000000000"
REQUEST = "Microsoft.ApplicationInsights.Request"
DEPENDENCY = "Microsoft.ApplicationInsights.RemoteDependency"
MESSAGE = "Microsoft.ApplicationInsights.Message"
METRIC = "Microsoft.ApplicationInsights.Metric"
_TRACK = re.compile(r"/+v2(?:\.1)?/track")  # the client joins "<endpoint>/" and "/v2.1": "//v2.1/track"


@dataclass(frozen=True)
class Envelope:
    """One telemetry item as received: its type, its ``baseData``, its tags, and the request path."""

    name: str
    base_data: dict[str, Any]
    tags: dict[str, str]
    path: str

    @property
    def properties(self) -> dict[str, Any]:
        """``customDimensions`` in Application Insights."""
        found = self.base_data.get("properties")
        return found if isinstance(found, dict) else {}

    @property
    def operation_id(self) -> str | None:
        return self.tags.get("ai.operation.id")

    @property
    def parent_id(self) -> str | None:
        return self.tags.get("ai.operation.parentId")


class AppInsightsIngest:
    """The ingestion endpoint on 127.0.0.1 (a port the OS picks), from ``start()`` to ``stop()``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._envelopes: list[Envelope] = []
        self.rejected: list[str] = []  # requests answered 400/404, with the reason
        self._server: LocalHttpServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"{self._server.url}/"

    @property
    def connection_string(self) -> str:
        """What ``APPLICATIONINSIGHTS_CONNECTION_STRING`` holds to send here (no trailing ``;``:
        the exporter's parser rejects an empty pair)."""
        return f"InstrumentationKey={INSTRUMENTATION_KEY};IngestionEndpoint={self.url}"

    def start(self) -> AppInsightsIngest:
        service = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                path = self.path.split("?", 1)[0]
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = service._track(path, body, self.headers.get("Content-Encoding", ""))
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = LocalHttpServer(Handler)
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    def __enter__(self) -> AppInsightsIngest:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def envelopes(self) -> list[Envelope]:
        with self._lock:
            return list(self._envelopes)

    def of_type(self, name: str) -> list[Envelope]:
        return [envelope for envelope in self.envelopes if envelope.name == name]

    def _track(self, path: str, body: bytes, encoding: str) -> tuple[int, dict[str, Any]]:
        if not _TRACK.fullmatch(path):
            return self._reject(404, f"no route {path}")
        try:
            raw = gzip.decompress(body) if "gzip" in encoding.lower() else body
            items = json.loads(raw)
        except (OSError, ValueError) as error:
            return self._reject(400, f"unreadable body: {error}")
        if isinstance(items, dict):  # the service takes one envelope as well as an array
            items = [items]
        if not isinstance(items, list):
            return self._reject(400, "expected a JSON array of envelopes")
        received, errors = [], []
        for index, item in enumerate(items):
            envelope = _envelope(item, path)
            if envelope is None:
                errors.append({"index": index, "statusCode": 400, "message": "invalid envelope"})
            else:
                received.append(envelope)
        with self._lock:
            self._envelopes.extend(received)
        answer = {"itemsReceived": len(items), "itemsAccepted": len(received), "errors": errors}
        return (206 if errors else 200), answer

    def _reject(self, status: int, reason: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.rejected.append(reason)
        return status, {"itemsReceived": 0, "itemsAccepted": 0, "errors": [{"statusCode": status, "message": reason}]}


def _envelope(item: object, path: str) -> Envelope | None:
    """The envelope in ``item``, or ``None`` when it lacks what the service requires (name, time, data)."""
    if not isinstance(item, dict) or not item.get("name") or not item.get("time"):
        return None
    data = item.get("data")
    base = data.get("baseData") if isinstance(data, dict) else None
    if not isinstance(base, dict):
        return None
    tags = item.get("tags")
    return Envelope(
        name=str(item["name"]),
        base_data=base,
        tags={str(key): str(value) for key, value in tags.items()} if isinstance(tags, dict) else {},
        path=path,
    )
