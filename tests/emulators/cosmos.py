"""The Cosmos DB emulator from npm (``@vercel/cosmosdb-server``) for the Azure ``JobStore`` tests.

``cosmos_emulator`` starts one server per session over plain HTTP on 127.0.0.1; ``cosmos_job_store``
gives each test a fresh database and container (partition key ``/id``, as the infrastructure
creates it), built and deleted here: production code never creates them.

Where the emulator differs from Cosmos DB (checked against version 1.0.1):
- a point read of a missing item (or with another partition key) answers 500 ``Cannot read
  properties of undefined (reading 'id')`` (its handler dereferences the missing document) where
  Cosmos DB answers 404. ``EmulatorTransport`` rewrites exactly that response into a 404, so ``get``
  of an unknown job is tested as in Azure; every other 500 passes through unchanged.
- no GROUP BY, DISTINCT or OFFSET/LIMIT (400 parse errors); and a query's partition key is taken
  from its WHERE clause, not from the request's partition-key header (a scoped query without
  ``c.id = ...`` fails with 400 "missing partition keys"). The adapter needs none of these: it
  counts per status and pages by id, cross-partition.
- it never throttles or fails on purpose: the adapter's fault paths are tested against a local
  HTTP server in ``tests/unit/adapters/test_cosmos_jobs.py``.
- its ETags are bare UUIDs; If-Match is honoured (412), as are 409 on create and 404 on replace.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from azure.core.pipeline.transport import HttpRequest, HttpResponse, HttpTransport, RequestsTransport
from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey

from ingestion.adapters.cosmos_jobs import PARTITION_KEY_PATH, CosmosJobStore, connect_jobs
from ingestion.ports import JobStore
from tests.emulators.process import HOST, ServerProcess, ServerUnavailable, free_port, node_bin, unavailable

# The emulator's well-known account key (published by Microsoft for every emulator): not a secret.
EMULATOR_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
JOBS_CONTAINER = "jobs"
_ITEM_PATH = re.compile(r"/dbs/[^/]+/colls/[^/]+/docs/[^/]+/?$")
_MISSING_ITEM_MESSAGE = "Cannot read properties of undefined (reading 'id')"


@dataclass(frozen=True)
class CosmosEmulator:
    """Where the running emulator answers, and the key it accepts."""

    endpoint: str
    key: str = EMULATOR_KEY

    def admin(self) -> CosmosClient:
        """A plain client for test set-up (creating and deleting databases); close it after use."""
        return CosmosClient(self.endpoint, self.key, enable_endpoint_discovery=False)

    def jobs(
        self, database: str, container: str = JOBS_CONTAINER, transport: HttpTransport[Any, Any] | None = None
    ) -> ContainerProxy:
        """A jobs container on the emulator, connected as production connects (``connect_jobs``)."""
        return connect_jobs(
            endpoint=self.endpoint,
            database=database,
            container=container,
            key=self.key,
            endpoint_discovery=False,
            transport=transport,
        )


class EmulatorTransport(RequestsTransport):
    """The default transport, with the emulator's 500 for a missing item turned into Cosmos DB's 404."""

    def send(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:  # type: ignore[override]
        response = super().send(request, **kwargs)
        if request.method == "GET" and response.status_code == 500 and is_missing_item(request.url, response.body()):
            response.status_code = 404
            response.reason = "Not Found"
        return response


def is_missing_item(url: str, body: bytes) -> bool:
    """Whether a 500 to a GET of ``url`` is the emulator's answer for an item that does not exist."""
    if not _ITEM_PATH.search(urllib.parse.urlsplit(url).path):
        return False
    try:
        parsed = json.loads(body)
    except ValueError:
        return False
    return isinstance(parsed, dict) and parsed.get("message") == _MISSING_ITEM_MESSAGE


def _answers(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - a fixed http://127.0.0.1 URL
        return bool(response.status == 200)


@pytest.fixture(scope="session")
def cosmos_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CosmosEmulator]:
    """The npm Cosmos DB emulator, on a free port of 127.0.0.1, for the whole session."""
    port = free_port()
    try:
        command = [node_bin("cosmosdb-server"), "--no-ssl", "--host", HOST, "-p", str(port)]
        server = ServerProcess("cosmosdb-server", command, port, tmp_path_factory.mktemp("cosmos"))
        server.start(ready=lambda: _answers(server.url))
    except ServerUnavailable as error:
        unavailable("Cosmos DB emulator", str(error))
    try:
        yield CosmosEmulator(server.url)
    finally:
        server.stop()


@contextmanager
def fresh_database(emulator: CosmosEmulator, *, partition_key: str = PARTITION_KEY_PATH) -> Iterator[str]:
    """A new database holding an empty ``jobs`` container, deleted afterwards; yields its name.

    Names are unique because the emulator keeps its state for the whole session.
    """
    database = f"test-{uuid.uuid4().hex[:12]}"
    with emulator.admin() as admin:
        admin.create_database(database).create_container(JOBS_CONTAINER, partition_key=PartitionKey(partition_key))
        try:
            yield database
        finally:
            admin.delete_database(database)


def cosmos_job_store(request: pytest.FixtureRequest) -> Iterator[JobStore]:
    """A ``CosmosJobStore`` on a fresh container, built as production builds it (``connect_jobs``)."""
    emulator: CosmosEmulator = request.getfixturevalue("cosmos_emulator")
    with fresh_database(emulator) as database, EmulatorTransport() as transport:
        store = CosmosJobStore(emulator.jobs(database, transport=transport))
        store.check()
        yield store
