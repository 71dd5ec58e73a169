"""A throwaway HTTP server on 127.0.0.1, for the faults no emulator makes (429, 503, cut bodies...).

``LocalHttpServer`` serves a test's handler class from a daemon thread on a free port until
``close()``; handlers derive from ``QuietHandler`` so pytest's output holds no access log.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.emulators.process import HOST


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that writes no access log: the tests read what the server recorded."""

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class LocalHttpServer:
    """``handler`` served on 127.0.0.1 from the moment it is built: on ``port`` (0: one the OS picks).
    ``owner`` is what the handler reaches as ``self.server.owner`` (the object whose requests it serves)."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0, owner: object = None) -> None:
        self._server = ThreadingHTTPServer((HOST, port), handler)
        self._server.daemon_threads = True
        self._server.owner = owner  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def close(self) -> None:
        """Stop serving and release the port (again: nothing to do)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
