"""The Azure ``JobStore``: one Cosmos DB item per job, with ETag-guarded writes.

Each item is the job's payload (``Job.to_payload()``) with ``id`` = doc id, which is also the
partition key (path ``/id``), so every point read and write touches one logical partition.
``updated_at`` is stored as fixed-width UTC text so that string order is time order in queries.
Optimistic concurrency is Cosmos DB's own: the item's ``_etag`` is the job's ``etag``, and
``replace`` sends it with ``IfNotModified`` (412 when another writer won).

Errors go through the shared classifier, except three that Cosmos DB uses for faults worth
retrying although their status looks permanent (410 Gone, 449 Retry With, 404 sub-status 1002 "read
session not available"): those are ``TransientError``, so a lagging replica never reads as a missing
job and a partition split never ends a job.

``connect_jobs`` builds the client with azure-cosmos' retries capped (its defaults retry throttling
9 times for up to 30 s, and reads for a minute and more) and counts every retry in
``SDK_RETRIES["cosmos"]``. It never creates the database or the container: infrastructure does,
and ``CosmosJobStore.check`` fails fast when they are missing.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import UTC, datetime
from itertools import islice
from typing import Any
from urllib.parse import urlsplit

from azure.core import MatchConditions
from azure.core.credentials import TokenCredential
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.transport import HttpTransport

# RetryOptions is not re-exported by azure.cosmos; ConnectionPolicy.RetryOptions is the documented slot.
from azure.cosmos._retry_options import RetryOptions
from azure.cosmos.container import ContainerProxy
from azure.cosmos.cosmos_client import CosmosClient
from azure.cosmos.documents import ConnectionPolicy
from azure.cosmos.exceptions import (
    CosmosAccessConditionFailedError,
    CosmosHttpResponseError,
    CosmosResourceExistsError,
    CosmosResourceNotFoundError,
)
from azure.cosmos.http_constants import StatusCodes, SubStatusCodes

from ingestion.adapters.azure_errors import (
    ThrottleCountingHook,
    classify,
    retry_after_seconds,
    sdk_retry_kwargs,
    translated,
)
from ingestion.errors import ConcurrencyError, IngestionError, PermanentError, ReasonCode, TransientError
from ingestion.model import Job, JobStatus
from ingestion.ports import JobPage
from ingestion.retry import SDK_RETRIES, RetryCounts

PARTITION_KEY_PATH = "/id"
# Properties Cosmos DB adds to every item; they are not part of the job.
SYSTEM_PROPERTIES = frozenset({"_rid", "_self", "_ts", "_attachments", "_etag"})
_MANY = 100  # ids per get_many query
_MAX_PAGE = 1000  # items per query request: bounds one response however large ``limit`` is


class CosmosJobStore:
    """Jobs in a Cosmos DB container partitioned on ``/id`` (see ``connect_jobs``).

    ``page_size`` caps the items one query request returns; a listing longer than that is read
    page by page from the SDK, never materialized beyond ``limit + 1`` items.
    """

    def __init__(
        self, container: ContainerProxy, *, page_size: int = _MAX_PAGE, client: CosmosClient | None = None
    ) -> None:
        if page_size <= 0:
            raise ValueError("page_size must be positive")
        self._container = container
        self._page_size = page_size
        self._client = client  # closed by close(), when this store owns it (open_job_store)

    def close(self) -> None:
        """Release the client's connections, when this store owns its client."""
        if self._client is not None:
            self._client.close()

    def check(self) -> None:
        """Fail fast, with a message saying what to fix, when the container is missing or misconfigured."""
        name = self._container.container_link
        with _translated(f"read the properties of Cosmos DB container {name}"):
            try:
                properties = self._container.read()
            except CosmosResourceNotFoundError as error:
                raise _missing_container(name) from error
        paths = properties.get("partitionKey", {}).get("paths", [])
        if paths != [PARTITION_KEY_PATH]:
            raise PermanentError(
                ReasonCode.NOT_FOUND,
                f"Cosmos DB container {name} is partitioned on {paths}, not [{PARTITION_KEY_PATH!r}]: recreate it",
            )

    def get(self, doc_id: str) -> Job | None:
        with _translated(f"read job {doc_id}"):
            try:
                item = self._container.read_item(item=doc_id, partition_key=doc_id)
            except CosmosResourceNotFoundError as error:
                if _transient(error):
                    raise  # a lagging replica, not a missing job: _translated says so
                if _item_missing(error):
                    return None
                raise _missing_container(self._container.container_link) from error
        return _job(item)

    def create(self, job: Job) -> Job:
        lost: CosmosResourceExistsError | None = None
        with _translated(f"create job {job.doc_id}"):
            try:
                stored = self._container.create_item(body=_item(job))
            except CosmosResourceExistsError as error:
                lost = error
        if lost is not None:
            raise ConcurrencyError(f"{job.doc_id}: a job already exists") from lost
        return replace(job, etag=str(stored["_etag"]))

    def replace(self, job: Job) -> Job:
        if job.etag is None:
            raise ConcurrencyError(f"{job.doc_id}: replace needs the etag the job was read with")
        lost: CosmosAccessConditionFailedError | CosmosResourceNotFoundError | None = None
        with _translated(f"replace job {job.doc_id}"):
            try:
                stored = self._container.replace_item(
                    item=job.doc_id, body=_item(job), etag=job.etag, match_condition=MatchConditions.IfNotModified
                )
            except CosmosAccessConditionFailedError as error:
                lost = error  # another writer won
            except CosmosResourceNotFoundError as error:
                if _transient(error):
                    raise
                if not _item_missing(error):
                    raise _missing_container(self._container.container_link) from error
                lost = error  # the job is gone
        if lost is not None:
            raise ConcurrencyError(f"{job.doc_id}: the job changed (or is gone) since etag {job.etag}") from lost
        return replace(job, etag=str(stored["_etag"]))

    def get_many(self, doc_ids: Sequence[str]) -> dict[str, Job]:
        """One cross-partition query per 100 ids (``ARRAY_CONTAINS`` of a parameter): cheaper than
        a point read each once a reconciler page holds more than a handful."""
        found: dict[str, Job] = {}
        unique = sorted(set(doc_ids))
        for start in range(0, len(unique), _MANY):
            batch = unique[start : start + _MANY]
            with _translated(f"read {len(batch)} jobs"):
                items = self._container.query_items(
                    "SELECT * FROM c WHERE ARRAY_CONTAINS(@ids, c.id)",
                    parameters=[{"name": "@ids", "value": batch}],
                    enable_cross_partition_query=True,
                    max_item_count=len(batch),
                )
                found.update((job.doc_id, job) for job in map(_job, items))
        return found

    def list(
        self,
        status: JobStatus | None = None,
        *,
        updated_before: datetime | None = None,
        limit: int = 500,
        continuation: str | None = None,
    ) -> JobPage:
        if limit <= 0:
            raise ValueError("limit must be positive")
        clauses: list[str] = []
        parameters: list[dict[str, Any]] = [{"name": "@top", "value": limit + 1}]
        if status is not None:
            clauses.append("c.status = @status")
            parameters.append({"name": "@status", "value": status.value})
        if updated_before is not None:
            clauses.append("c.updated_at < @before")
            parameters.append({"name": "@before", "value": _stamp(updated_before)})
        if continuation is not None:
            # Keyset paging on the doc id: stable under concurrent writes, and unlike OFFSET its cost
            # does not grow with the page number (the emulator lacks OFFSET/LIMIT anyway).
            clauses.append("c.id > @after")
            parameters.append({"name": "@after", "value": continuation})
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        # One item more than asked says whether another page exists, so the last page ends with None.
        query = f"SELECT TOP @top * FROM c{where} ORDER BY c.id"  # noqa: S608 - fixed clauses, values are parameters
        with _translated("list jobs"):
            items = self._container.query_items(
                query,
                parameters=parameters,
                enable_cross_partition_query=True,
                max_item_count=min(limit + 1, self._page_size),
            )
            # The SDK fetches page after page lazily; islice stops asking once it has enough.
            rows = list(islice(items, limit + 1))
        jobs = [_job(row) for row in rows[:limit]]
        return JobPage(jobs, jobs[-1].doc_id if len(rows) > limit else None)

    def count_by_status(self) -> dict[JobStatus, int]:
        """How many jobs are in each status (statuses without any job are absent).

        One ``COUNT`` per status rather than one ``GROUP BY``: the Cosmos DB emulator the tests run
        against has no GROUP BY, and a dozen aggregate queries served from the index are cheap. The
        counts are not one snapshot (jobs move between the queries), as an operator's view allows.
        """
        counts: dict[JobStatus, int] = {}
        for status in JobStatus:
            with _translated(f"count {status.value} jobs"):
                # A VALUE query yields bare numbers, not the dicts the SDK's annotation promises.
                values: Iterable[Any] = self._container.query_items(
                    "SELECT VALUE COUNT(1) FROM c WHERE c.status = @status",
                    parameters=[{"name": "@status", "value": status.value}],
                    enable_cross_partition_query=True,
                )
                count = sum(int(value) for value in values)
            if count:
                counts[status] = count
        return counts


class RetryCountingHook:
    """Counts every HTTP attempt azure-cosmos makes after the first of a request, per ``service``.

    azure-cosmos builds its own azure-core pipeline and ignores ``per_retry_policies``; and most of
    its retries (throttling, 503, region failover) re-run the whole pipeline from its own loop, so
    a policy's per-request context is new on each attempt. What stays the same across every retry,
    of both layers, is the ``HttpRequest`` object, so this ``raw_request_hook`` remembers those.
    """

    def __init__(self, service: str, counts: RetryCounts = SDK_RETRIES) -> None:
        self._service = service
        self._counts = counts
        self._lock = threading.Lock()
        self._sent: weakref.WeakSet[object] = weakref.WeakSet()  # forgets a request once it is done

    def __call__(self, request: PipelineRequest[Any]) -> None:
        with self._lock:
            retried = request.http_request in self._sent
            self._sent.add(request.http_request)
        if retried:
            self._counts.add(self._service)


def connect_jobs(*, database: str, container: str, **options: Any) -> ContainerProxy:
    """The jobs container, through a client whose retries are capped and counted (``_connect_client``).

    The caller cannot close that client: production code uses ``open_job_store``, which can.
    """
    return _connect_client(**options).get_database_client(database).get_container_client(container)


def open_job_store(*, database: str, container: str, page_size: int = _MAX_PAGE, **options: Any) -> CosmosJobStore:
    """A ``CosmosJobStore`` owning its client (``close()`` releases it); options as ``_connect_client``."""
    client = _connect_client(**options)
    proxy = client.get_database_client(database).get_container_client(container)
    return CosmosJobStore(proxy, page_size=page_size, client=client)


def _connect_client(
    *,
    endpoint: str,
    key: str | None = None,
    credential: object | None = None,
    retries: int = 2,
    timeout_s: float = 30.0,
    endpoint_discovery: bool = True,
    transport: HttpTransport[Any, Any] | None = None,
) -> CosmosClient:
    """A client whose retries are capped and counted.

    Authenticates with ``key`` when given, else with ``credential`` (the ``DefaultAzureCredential``
    bootstrap builds). ``endpoint_discovery=False`` for the emulator, which advertises regional
    endpoints it does not serve. ``transport`` lets tests put a fake network under the real client.
    """
    auth: str | TokenCredential
    if key is not None:
        auth = key
    elif isinstance(credential, TokenCredential):
        auth = credential
    else:
        raise ValueError("connect_jobs needs a key or a TokenCredential")
    options: dict[str, Any] = sdk_retry_kwargs(retries, timeout_s)
    # Throttling (429) is retried by azure-cosmos' own loop, not azure-core's: RetryOptions caps the
    # attempts and the summed x-ms-retry-after-ms waits (the SDK honours each wait in full while the
    # sum is under the cap, so the last one can overshoot it). retry_total / retry_backoff_max
    # override them only when truthy (cosmos_client.py), so 0 retries has to come through here.
    # With endpoint discovery on, 503 (and 5xx/408 on reads) also get one more attempt per region.
    policy = ConnectionPolicy()
    policy.RetryOptions = RetryOptions(
        max_retry_attempt_count=retries, max_wait_time_in_seconds=int(options["retry_backoff_max"])
    )
    if transport is not None:
        options["transport"] = transport
    with translated(f"connect to Cosmos DB at {endpoint}"):
        # The constructor already reads the account (regions, consistency), so it can fail too.
        return CosmosClient(
            endpoint,
            credential=auth,
            connection_policy=policy,
            enable_endpoint_discovery=endpoint_discovery,
            raw_request_hook=RetryCountingHook("cosmos"),
            raw_response_hook=ThrottleCountingHook("cosmos"),
            **options,
        )


def _translated(what: str) -> AbstractContextManager[None]:
    """``translated``, plus the statuses Cosmos DB uses for faults worth retrying that look permanent."""
    return translated(what, classifier=_cosmos_error)


def _cosmos_error(error: Exception, what: str, **reasons: ReasonCode) -> IngestionError:
    problem = classify(error, what, **reasons)
    if isinstance(error, CosmosHttpResponseError) and _transient(error):
        return TransientError(
            problem.message, retry_after=retry_after_seconds(error.headers), code=f"http_{error.status_code}"
        )
    return problem


def _transient(error: CosmosHttpResponseError) -> bool:
    """410 Gone (a partition splitting or moving), 449 Retry With (a conflicting write in flight), and
    404 sub-status 1002 (a replica not yet at the session's writes): Cosmos DB asks for a retry with
    each, and azure-cosmos gives up on them after a try or two (``_retry_utility.py``)."""
    if error.status_code in (StatusCodes.GONE, StatusCodes.RETRY_WITH):
        return True
    return error.status_code == StatusCodes.NOT_FOUND and error.sub_status == SubStatusCodes.READ_SESSION_NOTAVAILABLE


def _item_missing(error: CosmosResourceNotFoundError) -> bool:
    """Whether a 404 means "no such item", rather than a missing container or database.

    Cosmos DB marks an item request whose container is gone with sub-status 1003; and the SDK's own
    read of the container's properties, which precedes the first item request, fails on the
    container's URL rather than on the item's.
    """
    if error.sub_status == SubStatusCodes.OWNER_RESOURCE_NOT_FOUND:
        return False
    request = getattr(error.response, "request", None)
    return request is None or "/docs/" in urlsplit(str(request.url)).path


def _missing_container(link: str) -> PermanentError:
    return PermanentError(
        ReasonCode.NOT_FOUND,
        f"Cosmos DB container {link} does not exist (or its database does not): the infrastructure "
        f"deployment creates it, with partition key {PARTITION_KEY_PATH}; the app never does",
    )


def _stamp(moment: datetime) -> str:
    """Fixed-width UTC text, so string order is time order in queries."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _item(job: Job) -> dict[str, Any]:
    return {**job.to_payload(), "updated_at": _stamp(job.updated_at)}


def _job(item: dict[str, Any]) -> Job:
    data = {name: value for name, value in item.items() if name not in SYSTEM_PROPERTIES}
    return Job.from_payload(data, etag=str(item["_etag"]))
