"""A started devhost over the sample app, and a small HTTP client for talking to it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from ingestion.adapters.local_blob import FolderBlobSource
from ingestion.devhost.host import Host
from tests.emulators.process import wait_until as poll
from tests.functions.devhost import sample_app


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Message  # case-insensitive, as HTTP header names are
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(method: str, url: str, body: object = None, headers: dict[str, str] | None = None) -> Reply:
    """One HTTP request; error statuses are returned, not raised."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})  # noqa: S310 - loopback http
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - a loopback URL
            return Reply(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, error.headers, error.read())


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail the test if it does not within ``timeout`` seconds."""
    poll(condition, "the condition", timeout, interval_s=0.02)


@pytest.fixture
def inbox(tmp_path: Path) -> FolderBlobSource:
    return FolderBlobSource(tmp_path / "inbox", "uploads")


@pytest.fixture
def make_host(tmp_path: Path) -> Iterator[Callable[..., Host]]:
    """Builds started hosts over the sample app (port 0, fast polling); stops them after the test."""
    started: list[Host] = []
    sample_app.reset()

    def make(**options: Any) -> Host:
        options.setdefault("data_dir", tmp_path / "data")
        options.setdefault("blob_source", None)
        options.setdefault("port", 0)
        options.setdefault("watch_interval_s", 0.05)
        options.setdefault("retry_backoff_s", 0.01)
        host = Host(sample_app.app, **options)
        host.start()
        started.append(host)
        return host

    yield make
    for host in started:
        host.stop()


@pytest.fixture
def host(make_host: Callable[..., Host]) -> Host:
    return make_host()
