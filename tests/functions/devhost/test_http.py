"""The devhost's HTTP server: routes, methods, request and response round-trips, sync and async handlers."""

from __future__ import annotations

import pytest

from ingestion.devhost.host import Host
from ingestion.devhost.http import compile_template
from tests.functions.devhost.conftest import call

pytestmark = pytest.mark.timeout(60)


def test_route_params_query_body_and_headers_reach_the_function(host: Host) -> None:
    """Route values, query, body and headers arrive; status, headers and body come back."""
    reply = call("POST", f"{host.base_url}/api/items/42/more?q=a%20b&n=1", b"payload", {"X-Echo": "hi"})
    assert reply.status == 201
    assert reply.headers["X-Reply"] == "yes"
    assert reply.headers["Content-Type"] == "application/json"
    assert reply.json() == {
        "method": "POST",
        "url": f"{host.base_url}/api/items/42/more?q=a%20b&n=1",
        "route": {"item_id": "42", "extra": "more"},
        "query": {"q": "a b", "n": "1"},
        "body": "payload",
        "header": "hi",
    }


def test_optional_route_parameter_may_be_absent(host: Host) -> None:
    """``{extra?}`` matches with and without the segment; literals match case-insensitively."""
    assert call("GET", f"{host.base_url}/api/items/7").json()["route"] == {"item_id": "7"}
    assert call("GET", f"{host.base_url}/api/ITEMS/7/").json()["route"] == {"item_id": "7"}


def test_unknown_route_is_404_and_wrong_method_is_405(host: Host) -> None:
    """A path no template matches is 404; a matching path with another method is 405 with Allow."""
    assert call("GET", f"{host.base_url}/api/nothing/here").status == 404
    assert call("GET", f"{host.base_url}/elsewhere").status == 404
    wrong = call("DELETE", f"{host.base_url}/api/items/7")
    assert wrong.status == 405
    assert wrong.headers["Allow"] == "GET, POST"


def test_async_handler_and_route_constraint(host: Host) -> None:
    """An ``async def`` handler answers from the event loop; ``{name:alpha}`` refuses digits."""
    reply = call("GET", f"{host.base_url}/api/greet/ada")
    assert (reply.status, reply.body, reply.headers["X-Handler"]) == (200, b"hello ada", "async")
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert call("GET", f"{host.base_url}/api/greet/123").status == 404


def test_a_raising_handler_answers_500(host: Host) -> None:
    """The host hides the exception from the caller: 500 with an empty body."""
    reply = call("GET", f"{host.base_url}/api/boom")
    assert (reply.status, reply.body) == (500, b"")


def test_route_list_names_every_http_function(host: Host) -> None:
    """``routes()`` is what the CLI prints: function, methods and URL template."""
    routes = {name: (methods, url) for name, methods, url in host.routes()}
    assert routes["items"] == ("GET,POST", f"{host.base_url}/api/items/{{item_id}}/{{extra?}}")
    assert routes["boom"] == ("*", f"{host.base_url}/api/boom")


def test_templates_rank_literals_before_parameters_before_catch_alls() -> None:
    """Precedence follows ASP.NET: a literal segment wins over a parameter, a catch-all comes last."""
    literal, _ = compile_template("files/latest")
    param, _ = compile_template("files/{name}")
    rest, _ = compile_template("files/{*path}")
    assert sorted(["files/{*path}", "files/{name}", "files/latest"], key=lambda t: compile_template(t)[1]) == [
        "files/latest",
        "files/{name}",
        "files/{*path}",
    ]
    assert literal.fullmatch("/files/latest")
    assert param.fullmatch("/files/x.pdf")
    assert not param.fullmatch("/files/a/b")
    found = rest.fullmatch("/files/a/b")
    assert found is not None
    assert found.group("path") == "a/b"


def test_file_name_template_splits_a_segment() -> None:
    """Parameters may share a segment with literals (``{name}.{ext}``)."""
    pattern, _ = compile_template("docs/{name}.{ext}")
    found = pattern.fullmatch("/docs/report.final.pdf")
    assert found is not None
    assert found.groupdict() == {"name": "report.final", "ext": "pdf"}
