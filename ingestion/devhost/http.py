"""The devhost's HTTP server: HTTP-trigger functions under ``/<routePrefix>/`` and mounted webhooks.

Like ``func start``: ``127.0.0.1:<port>``, route templates with ``{param}``, ``{param?}``,
``{param:constraint}`` and ``{*catchall}``, literal segments matched case-insensitively, 404 for an
unknown route and 405 for a known route with another method. Auth levels are recorded but not
enforced (Core Tools does not check function keys locally either). A function that raises answers
500 with an empty body, as the host does. Durable webhooks are mounted under their own prefix.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func
from azure.functions.http import HttpRequest, HttpResponseConverter

from ingestion.devhost.functions import FunctionInfo, Invoker

log = logging.getLogger(__name__)

_PARAM = re.compile(r"\{(\*{1,2})?([A-Za-z_]\w*)(?::([^}=?]+))?(?:=[^}?]*)?(\?)?\}")
_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?:true|false)",
    "alpha": r"[A-Za-z]+",
    "guid": r"[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}",
    "double": r"-?\d+(?:\.\d+)?",
    "float": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
}  # others (minlength(n), regex(...)) match any segment: values reach the function unchecked


@dataclass(frozen=True)
class HttpReply:
    """A response to write: status, headers (repeatable), body."""

    status: int
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""


# handler(method, raw path below the mount, raw query string, headers, body) -> reply
Mount = Callable[[str, str, str, Mapping[str, str], bytes], HttpReply]


@dataclass(frozen=True)
class Route:
    """One HTTP function's compiled route template."""

    info: FunctionInfo
    template: str
    pattern: re.Pattern[str]
    methods: frozenset[str] | None  # None: every method
    precedence: tuple[int, ...]  # literal segments first, catch-alls last (ASP.NET route order)

    @classmethod
    def of(cls, info: FunctionInfo) -> Route:
        template = str(info.trigger.get("route") or info.name).strip("/")
        pattern, precedence = compile_template(template)
        methods = info.trigger.get("methods")
        allowed = frozenset(str(m).upper() for m in methods) if methods else None
        return cls(info, template, pattern, allowed, precedence)


def compile_template(template: str) -> tuple[re.Pattern[str], tuple[int, ...]]:
    """A regex matching ``"/" + path`` (``""`` for the empty path) and the template's precedence key."""
    regex, ranks = "", []
    for segment in template.split("/") if template else []:
        whole = _PARAM.fullmatch(segment)
        if whole and (whole.group(4) or whole.group(1)):  # optional or catch-all: may be absent
            regex += f"(?:/{_param_regex(whole)})?"
            ranks.append(4 if whole.group(1) else 3)
            continue
        regex += "/"
        position, rank = 0, 0
        for param in _PARAM.finditer(segment):
            regex += re.escape(segment[position : param.start()]) + _param_regex(param)
            position, rank = param.end(), max(rank, 1 if param.group(3) else 2)
        regex += re.escape(segment[position:])
        ranks.append(rank)
    return re.compile(regex + "/?" if regex else "/?", re.IGNORECASE), (*ranks, 9)


def _param_regex(param: re.Match[str]) -> str:
    if param.group(1):
        return f"(?P<{param.group(2)}>.*)"
    constraint = (param.group(3) or "").split(":")[0].split("(")[0].lower()
    return f"(?P<{param.group(2)}>{_CONSTRAINTS.get(constraint, '[^/]+')})"


@dataclass
class FunctionRoutes:
    """Dispatches a request below the route prefix to the HTTP function whose template matches."""

    routes: Sequence[Route]
    invoker: Invoker
    base_url: Callable[[], str]  # scheme, host and port, for the request's url
    prefix: str = "/api/"  # where the routes are mounted, for the request's url

    def __post_init__(self) -> None:
        self.routes = sorted(self.routes, key=lambda route: route.precedence)

    def __call__(self, method: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> HttpReply:
        target = "/" + path.strip("/") if path.strip("/") else ""
        matched = [(route, found) for route in self.routes if (found := route.pattern.fullmatch(target))]
        if not matched:
            return HttpReply(HTTPStatus.NOT_FOUND)
        allowed = [(r, m) for r, m in matched if r.methods is None or method in r.methods]
        if not allowed:
            methods = sorted({m for r, _ in matched for m in r.methods or ()})
            return HttpReply(HTTPStatus.METHOD_NOT_ALLOWED, [("Allow", ", ".join(methods))])
        route, found = allowed[0]
        params = {name: unquote(value) for name, value in found.groupdict().items() if value is not None}
        url = self.base_url() + self.prefix + path + (f"?{query}" if query else "")
        request = HttpRequest(
            method,
            url,
            headers=dict(headers),
            params=_joined(parse_qsl(query, keep_blank_values=True)),
            route_params=params,
            body_type="bytes",
            body=body,
        )
        try:
            result = self.invoker.call(route.info, request)
        except Exception:  # the host answers 500 with no details; the details go to the log
            log.exception("HTTP function %s failed", route.info.name)
            return HttpReply(HTTPStatus.INTERNAL_SERVER_ERROR)
        return to_reply(route.info.name, result)


def to_reply(name: str, result: Any) -> HttpReply:
    """What the host sends for a function's return value (through the worker's own converter)."""
    if result is None:
        return HttpReply(HTTPStatus.NO_CONTENT)
    if isinstance(result, (str, bytes)):
        body = result.encode() if isinstance(result, str) else result
        return HttpReply(HTTPStatus.OK, [("Content-Type", "text/plain; charset=utf-8")], body)
    if not isinstance(result, func.HttpResponse):
        log.error("HTTP function %s returned %s, not an HttpResponse", name, type(result).__name__)
        return HttpReply(HTTPStatus.INTERNAL_SERVER_ERROR)
    encoded: dict[str, Any] = HttpResponseConverter.encode(result, expected_type=None).value
    headers = [(str(n), str(v.value)) for n, v in encoded["headers"].items()]
    cookies: Iterable[SimpleCookie] = encoded.get("cookies") or ()
    headers += [("Set-Cookie", morsel.OutputString()) for cookie in cookies for morsel in cookie.values()]
    return HttpReply(int(encoded["status_code"].value), headers, bytes(encoded["body"].value or b""))


def _joined(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    joined: dict[str, str] = {}
    for key, value in pairs:  # a repeated key arrives comma-joined, as ASP.NET's query collection reads
        joined[key] = f"{joined[key]},{value}" if key in joined else value
    return joined


class DevHttpServer(ThreadingHTTPServer):
    """A threading server on 127.0.0.1 routing each path prefix to its mount."""

    daemon_threads = True

    def __init__(self, port: int, mounts: Mapping[str, Mount], *, debug: bool = False) -> None:
        self.mounts = sorted(mounts.items(), key=lambda item: -len(item[0]))
        self.debug = debug
        super().__init__(("127.0.0.1", port), _Handler)
        # serve_forever() notices shutdown() only between polls: a short poll keeps stop() quick.
        self._thread = threading.Thread(target=self.serve_forever, args=(0.1,), name="devhost-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The base class prints a traceback to stderr; a client that hangs up is not worth one.
        log.debug("connection from %s failed", client_address, exc_info=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: DevHttpServer
    protocol_version = "HTTP/1.1"  # keep-alive, as the durable client's pooled session expects
    timeout = 60  # an idle keep-alive connection releases its thread after this many seconds

    def do_any(self) -> None:
        split = urlsplit(self.path)
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        try:
            body = self._body()
        except ValueError as error:
            self._send(HttpReply(HTTPStatus.BAD_REQUEST, [("Content-Type", "text/plain")], str(error).encode()))
            return
        reply = HttpReply(HTTPStatus.NOT_FOUND)
        for prefix, mount in self.server.mounts:
            if split.path == prefix.rstrip("/") or split.path.startswith(prefix):
                try:
                    reply = mount(self.command.upper(), split.path[len(prefix) :], split.query, headers, body)
                except Exception:  # a devhost bug: answer like the host would, and say where in the log
                    log.exception("%s %s failed", self.command, split.path)
                    reply = HttpReply(HTTPStatus.INTERNAL_SERVER_ERROR)
                break
        self._send(reply)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_any

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailer lines: read off the wire and dropped (no function binding exposes them)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        return self.rfile.read(length) if length else b""

    def _send(self, reply: HttpReply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers:
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD" and reply.body:
            self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.debug:
            log.debug("%s %s", self.address_string(), format % args)
