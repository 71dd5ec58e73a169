"""CosmosJobStore specifics: the stored item, check(), SDK paging, and the faults the emulator cannot make.

Faults (429, 503, refused connections) come from a tiny Cosmos DB look-alike served by
``http.server`` on 127.0.0.1: it answers the account read the client makes when it is built, then
fails every item request the way the service would, while the real azure-cosmos client runs over
real HTTP with the retries ``connect_jobs`` configures.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from azure.cosmos import ContainerProxy

from ingestion.adapters.cosmos_jobs import CosmosJobStore, connect_jobs
from ingestion.errors import PermanentError, TransientError
from ingestion.model import JobStatus
from ingestion.retry import SDK_RETRIES
from tests.emulators.cosmos import JOBS_CONTAINER, CosmosEmulator, EmulatorTransport, fresh_database
from tests.emulators.local_http import LocalHttpServer, QuietHandler
from tests.emulators.process import HOST, free_port
from tests.integration.builders import make_job

# --------------------------------------------------------------------------- a faulty look-alike


@dataclass
class Fault:
    """What the look-alike answers to item requests, and the item requests it has seen."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    attempts: list[str] = field(default_factory=list)


class FaultServer:
    """An HTTP server speaking just enough Cosmos DB for a client to be built and then to fail."""

    def __init__(self) -> None:
        self.fault = Fault()
        self._server = LocalHttpServer(_handler(self))
        self.url = self._server.url

    def close(self) -> None:
        self._server.close()

    def account(self) -> dict[str, Any]:
        """The database account document, with this server as its only region."""
        region = [{"name": "Local", "databaseAccountEndpoint": f"{self.url}/"}]
        return {
            "id": "local",
            "_rid": "local",
            "writableLocations": region,
            "readableLocations": region,
            "enableMultipleWriteLocations": False,
            "userConsistencyPolicy": {"defaultConsistencyLevel": "Session"},
            "userReplicationPolicy": {"minReplicaSetSize": 1, "maxReplicasetSize": 4},
            "systemReplicationPolicy": {"minReplicaSetSize": 1, "maxReplicasetSize": 4},
            "readPolicy": {"primaryReadCoefficient": 1, "secondaryReadCoefficient": 1},
        }


CONTAINER = {  # the container's properties, which the client reads before its first item request
    "id": JOBS_CONTAINER,
    "_rid": "gAABAIAAAAE=",
    "_self": "dbs/gAABAA==/colls/gAABAIAAAAE=/",
    "partitionKey": {"paths": ["/id"], "kind": "Hash", "version": 2},
}


def _handler(server: FaultServer) -> type[BaseHTTPRequestHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            self._answer()

        def do_POST(self) -> None:
            self._answer()

        def do_PUT(self) -> None:
            self._answer()

        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            if self.path.rstrip("/") == "":
                self._send(200, server.account())
            elif self.path.rstrip("/") == f"/dbs/db/colls/{JOBS_CONTAINER}":
                self._send(200, CONTAINER)
            elif "/docs" in self.path:
                fault = server.fault
                fault.attempts.append(f"{self.command} {self.path}")
                self._send(fault.status, {"code": "Fault", "message": "injected"}, fault.headers)
            else:
                self._send(404, {"code": "NotFound", "message": "not served here"})

        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for name, value in {"content-type": "application/json", **(headers or {})}.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer()
    yield server
    server.close()


def store_on(server: FaultServer, *, retries: int = 2, endpoint_discovery: bool = True) -> CosmosJobStore:
    """A store whose client is built by ``connect_jobs`` against the look-alike."""
    container = connect_jobs(
        endpoint=server.url,
        database="db",
        container=JOBS_CONTAINER,
        key="a2V5",
        retries=retries,
        timeout_s=5,
        endpoint_discovery=endpoint_discovery,
    )
    return CosmosJobStore(container)


def sdk_retries() -> int:
    return SDK_RETRIES.snapshot().get("cosmos", 0)


# --------------------------------------------------------------------------- faults


def test_throttling_is_retried_up_to_the_cap_then_transient_with_the_services_wait(fault_server: FaultServer) -> None:
    """429 is retried `retries` times (counted in SDK_RETRIES), then TransientError carries x-ms-retry-after-ms."""
    fault_server.fault = Fault(429, {"x-ms-retry-after-ms": "20", "x-ms-substatus": "3200"})
    store = store_on(fault_server, retries=2)
    before = sdk_retries()
    with pytest.raises(TransientError) as raised:
        store.get("doc-1")
    assert len(fault_server.fault.attempts) == 3
    assert sdk_retries() - before == 2
    assert raised.value.code == "http_429"
    assert raised.value.retry_after == pytest.approx(0.02)


def test_zero_retries_means_one_attempt(fault_server: FaultServer) -> None:
    """retries=0 is honoured for throttling too (azure-cosmos would read a 0 retry_total as 'default: 9')."""
    fault_server.fault = Fault(429, {"x-ms-retry-after-ms": "20"})
    store = store_on(fault_server, retries=0)
    with pytest.raises(TransientError):
        store.create(make_job("doc-1"))
    assert len(fault_server.fault.attempts) == 1


def test_service_unavailable_is_transient_and_its_region_retry_is_counted(fault_server: FaultServer) -> None:
    """503 becomes TransientError; the SDK's own retry of a read in a one-region account is counted."""
    fault_server.fault = Fault(503)
    store = store_on(fault_server)
    before = sdk_retries()
    with pytest.raises(TransientError) as raised:
        store.get("doc-1")
    assert raised.value.code == "http_503"
    # azure-cosmos retries a 503 once per extra region, plus once (_service_unavailable_retry_policy.py),
    # whatever retry_total says: 2 attempts for a one-region account.
    assert len(fault_server.fault.attempts) == 2
    assert sdk_retries() - before == 1


def test_a_read_the_session_cannot_serve_yet_is_transient_not_a_missing_job(fault_server: FaultServer) -> None:
    """404 sub-status 1002 (the replica lags the session) is TransientError: the job exists, get() never says None."""
    # A None here would stop a running stage as Superseded ("no job document") and let a starter
    # create a job that exists. azure-cosmos retries it itself first (_session_retry_policy.py).
    fault_server.fault = Fault(404, {"x-ms-substatus": "1002"})
    with pytest.raises(TransientError) as raised:
        store_on(fault_server).get("doc-1")
    assert raised.value.code == "http_404"


@pytest.mark.parametrize(
    ("status", "substatus", "operation"),
    [(449, "0", "replace"), (449, "0", "get"), (410, "1007", "get"), (410, "1008", "replace")],
)
def test_retry_with_and_gone_are_transient(
    fault_server: FaultServer, status: int, substatus: str, operation: str
) -> None:
    """449 (Retry With) and 410 (Gone: a partition splitting or moving) are worth a retry, not a permanent failure."""
    fault_server.fault = Fault(status, {"x-ms-substatus": substatus, "x-ms-retry-after-ms": "50"})
    store = store_on(fault_server)
    calls: dict[str, Callable[[], object]] = {
        "get": partial(store.get, "doc-1"),
        "replace": partial(store.replace, replace(make_job("doc-1"), etag='"e"')),
    }
    with pytest.raises(TransientError) as raised:
        calls[operation]()
    assert raised.value.code == f"http_{status}"
    assert raised.value.retry_after == pytest.approx(0.05)


def test_a_refused_connection_is_transient(fault_server: FaultServer) -> None:
    """A server that went away: an operation raises TransientError (code connection), not an SDK error."""
    store = store_on(fault_server, retries=1)
    fault_server.close()
    with pytest.raises(TransientError) as raised:
        store.get("doc-1")
    assert raised.value.code == "connection"


def test_connecting_to_no_server_is_transient() -> None:
    """Building the client reads the account, so an endpoint nobody serves fails there, as TransientError."""
    with pytest.raises(TransientError) as raised:
        connect_jobs(endpoint=f"http://{HOST}:{free_port()}", database="db", container="jobs", key="a2V5", retries=0)
    assert raised.value.code == "connection"


def test_connect_needs_a_key_or_a_credential() -> None:
    """Without a key or a TokenCredential, connect_jobs refuses before any request."""
    with pytest.raises(ValueError, match="key or a TokenCredential"):
        connect_jobs(endpoint="http://127.0.0.1:1", database="db", container="jobs", credential="not a credential")


# --------------------------------------------------------------------------- against the emulator


@pytest.fixture
def emulator_container(cosmos_emulator: CosmosEmulator) -> Iterator[ContainerProxy]:
    with fresh_database(cosmos_emulator) as database, EmulatorTransport() as transport:
        yield cosmos_emulator.jobs(database, transport=transport)


def test_the_item_is_the_payload_keyed_and_partitioned_by_doc_id(emulator_container: ContainerProxy) -> None:
    """One item per job: id = doc id = partition key, status and a fixed-width UTC updated_at on top."""
    store = CosmosJobStore(emulator_container)
    created = store.create(make_job("doc-1", JobStatus.RETRY_LATER, minutes=90))
    item = emulator_container.read_item("doc-1", partition_key="doc-1")
    assert item["id"] == "doc-1"
    assert item["status"] == "retry_later"
    assert item["updated_at"] == "2026-01-01T01:30:00.000000Z"
    assert item["_etag"] == created.etag
    assert emulator_container.read()["partitionKey"]["paths"] == ["/id"]


def test_system_properties_stay_out_of_the_job(emulator_container: ContainerProxy) -> None:
    """_rid, _self, _ts and _etag never reach the Job: the etag is its own field, the payload has none."""
    store = CosmosJobStore(emulator_container)
    store.create(make_job("doc-1"))
    read = store.get("doc-1")
    listed = store.list().jobs
    assert read is not None
    assert listed == [read]
    assert read.etag == emulator_container.read_item("doc-1", partition_key="doc-1")["_etag"]
    assert not [name for name in read.to_payload() if name.startswith("_")]


def test_a_listing_longer_than_one_sdk_page_is_fetched_page_by_page(cosmos_emulator: CosmosEmulator) -> None:
    """With 2 items per request, a 5-job page takes 3 query requests and stops there; the rest follow."""
    with fresh_database(cosmos_emulator) as database, CountingTransport() as transport:
        store = CosmosJobStore(cosmos_emulator.jobs(database, transport=transport), page_size=2)
        for n in range(9):
            store.create(make_job(f"doc-{n}"))
        transport.queries, before = 0, sdk_retries()
        first = store.list(limit=5)
        assert [job.doc_id for job in first.jobs] == [f"doc-{n}" for n in range(5)]
        assert first.continuation == "doc-4"
        assert transport.queries == 3  # 6 items (limit + 1), 2 per request; the 4th request is never made
        assert sdk_retries() == before  # each page is a request of its own, not a retry
        rest = store.list(limit=5, continuation=first.continuation)
        assert [job.doc_id for job in rest.jobs] == [f"doc-{n}" for n in range(5, 9)]
        assert rest.continuation is None


class CountingTransport(EmulatorTransport):
    """Counts the query requests (POSTs to a container's docs) the client sends."""

    queries = 0

    def send(self, request: Any, **kwargs: Any) -> Any:
        if request.method == "POST" and request.url.rstrip("/").endswith("/docs"):
            self.queries += 1
        return super().send(request, **kwargs)


def test_check_passes_on_the_container_infrastructure_creates(emulator_container: ContainerProxy) -> None:
    """check() reads the properties of an existing container partitioned on /id and returns."""
    CosmosJobStore(emulator_container).check()


def test_a_missing_container_is_named_not_taken_for_a_missing_job(cosmos_emulator: CosmosEmulator) -> None:
    """check(), get() and replace() raise PermanentError naming a missing container or database, never None."""
    with fresh_database(cosmos_emulator) as database:
        for db, name in ((database, "no-such-container"), ("no-such-database", JOBS_CONTAINER)):
            store = CosmosJobStore(cosmos_emulator.jobs(db, name))
            for call in (
                store.check,
                partial(store.get, "doc-1"),
                partial(store.replace, replace(make_job("doc-1"), etag="x")),
            ):
                with pytest.raises(PermanentError, match=f"dbs/{db}/colls/{name} does not exist"):
                    call()


def test_check_refuses_a_container_partitioned_on_another_path(cosmos_emulator: CosmosEmulator) -> None:
    """A container partitioned on something else than /id is refused with the path it has."""
    with (
        fresh_database(cosmos_emulator, partition_key="/path") as database,
        pytest.raises(PermanentError, match="partitioned on"),
    ):
        CosmosJobStore(cosmos_emulator.jobs(database)).check()


def test_replace_keeps_the_other_jobs_untouched(emulator_container: ContainerProxy) -> None:
    """A replace writes its own item only (point write in its own partition)."""
    store = CosmosJobStore(emulator_container)
    other = store.create(make_job("doc-2"))
    created = store.create(make_job("doc-1"))
    store.replace(replace(created, attempts=5))
    assert store.get("doc-2") == other
