"""A pass-through HTTP proxy in front of the Cosmos DB emulator that mends its one wrong answer.

The emulator answers a point read of a missing item with 500 where Cosmos DB answers 404 (see
``tests/emulators/cosmos.py``). In-process tests mend that with ``EmulatorTransport``; a process
configured by settings alone (the devhost on the "emulators" profile) cannot be handed a transport,
so it talks to this proxy instead, which forwards every request unchanged and rewrites exactly that
response. Requests are signed over the resource path and date, not the host, so a proxy is invisible
to the client. The emulator never throttles or fails; ``fail_next`` makes the proxy answer for it
(a 429 with ``x-ms-retry-after-ms``, a 503), as Cosmos DB does under load.
"""

from __future__ import annotations

import http.client
import threading
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from tests.emulators.cosmos import is_missing_item
from tests.emulators.local_http import LocalHttpServer, QuietHandler
from tests.emulators.process import HOST

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"})


@dataclass(frozen=True)
class Fault:
    """An answer the proxy gives instead of forwarding an item write (queries are POSTs too: never them)."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)


class CosmosProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to ``upstream`` (``http://127.0.0.1:port``)."""

    def __init__(self, upstream: str) -> None:
        target = urllib.parse.urlsplit(upstream)
        self._upstream = (target.hostname or HOST, target.port or 80)
        self._faults: deque[Fault] = deque()
        self._lock = threading.Lock()
        self.faults_served = 0
        self._server: LocalHttpServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "not started"
        return self._server.url

    def fail_next(
        self,
        times: int,
        status: int,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` item writes (POST or PUT, not queries) with ``status``."""
        fault = Fault(status, dict(headers or {}))
        with self._lock:
            self._faults.extend([fault] * times)

    def _take_fault(self, method: str, is_query: bool) -> Fault | None:
        with self._lock:
            if self._faults and method in ("POST", "PUT") and not is_query:
                self.faults_served += 1
                return self._faults.popleft()
            return None

    def start(self) -> CosmosProxy:
        self._server = LocalHttpServer(self._handler())
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        upstream, take_fault = self._upstream, self._take_fault

        class Forward(QuietHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                is_query = (self.headers.get("x-ms-documentdb-isquery") or "").lower() == "true"
                if (fault := take_fault(self.command, is_query)) is not None:
                    self._answer(fault.status, fault.headers, b'{"code": "Injected", "message": "injected fault"}')
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                connection = http.client.HTTPConnection(*upstream, timeout=60)
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    response = connection.getresponse()
                    status, reason, payload = response.status, response.reason, response.read()
                    reply_headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
                finally:
                    connection.close()
                if self.command == "GET" and status == 500 and is_missing_item(self.path, payload):
                    status, reason = 404, "Not Found"
                self._answer(status, dict(reply_headers), payload, reason)

            def _answer(self, status: int, headers: dict[str, str], payload: bytes, reason: str | None = None) -> None:
                self.send_response(status, reason)
                for name, value in headers.items():
                    if name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

        return Forward
