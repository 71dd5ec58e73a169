"""The function app's registered functions, read once and made callable with their binding arguments.

``read_app`` classifies ``app.get_functions()`` by trigger type; ``Invoker`` calls user code the way
the Python worker does: ``def`` functions on a thread pool, ``async def`` functions on one long-lived
event loop (the Durable SDK's client keeps a process-wide aiohttp session bound to the loop that made
it, so one loop must serve every invocation). Trigger arguments are built by the converters the
worker uses (``azure.functions`` and ``azurefunctions-extensions-bindings-blob``), so a function sees
exactly the types it would see in Azure.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import azure.functions as func
from azure.functions import meta
from azure.functions.durable_functions import ActivityTriggerConverter
from azure.functions.eventgrid import EventGridEventInConverter
from azure.functions.timer import TimerRequestConverter
from azure.storage.blob import BlobServiceClient
from azurefunctions.extensions.base import Datum
from azurefunctions.extensions.bindings.blob import BlobClientConverter

log = logging.getLogger(__name__)

# What Azurite and the Storage emulator answer to; building a client for it touches no network.
DEVELOPMENT_STORAGE = "UseDevelopmentStorage=true"
_SERVED_TRIGGERS = frozenset(
    {"httpTrigger", "blobTrigger", "eventGridTrigger", "timerTrigger", "orchestrationTrigger", "activityTrigger"}
)
_SERVED_BINDINGS = frozenset({"http", "durableClient"})  # "http" out is the HTTP function's return value


@dataclass(frozen=True)
class FunctionInfo:
    """One registered function: its trigger binding, other bindings and the code the worker calls."""

    name: str
    trigger: Mapping[str, Any]  # as function.json spells it: type, name, route, path, schedule ...
    bindings: tuple[Mapping[str, Any], ...]
    code: Callable[..., Any]  # for a durable client function, the SDK's wrapper around the user code
    parameters: Mapping[str, inspect.Parameter]  # the user code's, annotations evaluated when possible

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])

    @property
    def trigger_name(self) -> str:
        return str(self.trigger["name"])

    @property
    def durable_name(self) -> str:
        """Name an orchestrator/activity is called by: the binding's explicit name, else the function's."""
        explicit = self.trigger.get("orchestration") or self.trigger.get("activity")
        return str(explicit) if explicit else self.name


@dataclass(frozen=True)
class Catalog:
    """An app's functions grouped by trigger type, and the ones the devhost cannot serve."""

    by_trigger: Mapping[str, tuple[FunctionInfo, ...]]
    skipped: Mapping[str, str]  # function name -> why

    def of(self, trigger_type: str) -> tuple[FunctionInfo, ...]:
        return self.by_trigger.get(trigger_type, ())


def read_app(app: func.FunctionRegister) -> Catalog:
    """Index ``app`` the way the worker does at start-up; unservable functions are logged and skipped."""
    # get_functions() records names to reject duplicates and so refuses a second call; building is
    # otherwise idempotent, and clearing the record lets a test module index the same app too.
    app.functions_bindings = None
    grouped: dict[str, list[FunctionInfo]] = {}
    skipped: dict[str, str] = {}
    for function in app.get_functions():
        trigger = function.get_trigger()
        name = str(function.get_function_name())
        if trigger is None:  # get_functions() rejects these already
            continue
        code = function.get_user_function()
        others = tuple(b.get_dict_repr() for b in function.get_bindings() if b is not trigger)
        info = FunctionInfo(name, trigger.get_dict_repr(), others, code, _parameters(code))
        problem = _problem(info)
        if problem is None:
            grouped.setdefault(info.trigger_type, []).append(info)
        else:
            skipped[name] = problem
            log.warning("devhost does not serve function %s: %s", name, problem)
    return Catalog({kind: tuple(infos) for kind, infos in grouped.items()}, skipped)


def _parameters(code: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    # signature() follows __wrapped__ to the user's code (the durable client wrapper uses
    # functools.wraps) and evaluates string annotations in that code's module.
    try:
        return inspect.signature(code, eval_str=True).parameters
    except (NameError, AttributeError, SyntaxError):  # an annotation naming a TYPE_CHECKING-only import
        return inspect.signature(code).parameters


def _problem(info: FunctionInfo) -> str | None:
    if info.trigger_type not in _SERVED_TRIGGERS:
        return f"trigger type {info.trigger_type!r} is not served locally"
    unserved = [b for b in info.bindings if b.get("type") not in _SERVED_BINDINGS]
    if unserved:
        return f"binding {unserved[0].get('name')!r} of type {unserved[0].get('type')!r} is not served locally"
    if info.trigger_type == "blobTrigger":
        annotation = _annotation(info, info.trigger_name)
        if not (isinstance(annotation, type) and BlobClientConverter.check_input_type_annotation(annotation)):
            return (
                f"blob trigger parameter {info.trigger_name!r} is annotated {annotation!r}: the devhost binds "
                "SDK types only (BlobClient, ContainerClient), which never ship the blob body to the function"
            )
    return None


def _annotation(info: FunctionInfo, parameter: str) -> Any:
    found = info.parameters.get(parameter)
    return None if found is None else found.annotation


# --------------------------------------------------------------------------- invocation


class InvocationContext(func.Context):
    """The ``context`` argument a function may declare (invocation id, name, retry count)."""

    def __init__(self, info: FunctionInfo, retry_count: int, max_retry_count: int) -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = info.name
        self._retry = _RetryContext(retry_count, max_retry_count)
        self._local = threading.local

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return self._local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return os.getcwd()

    @property
    def trace_context(self) -> func._abc.TraceContext:
        return _TraceContext()

    @property
    def retry_context(self) -> func._abc.RetryContext:
        return self._retry


class _TraceContext(func._abc.TraceContext):
    trace_state = ""
    trace_parent = ""
    attributes: dict[str, str] = {}  # noqa: RUF012 - read-only by contract; an empty mapping


class _RetryContext(func._abc.RetryContext):
    def __init__(self, retry_count: int, max_retry_count: int) -> None:
        self._count, self._max = retry_count, max_retry_count

    @property
    def retry_count(self) -> int:
        return self._count

    @property
    def max_retry_count(self) -> int:
        return self._max

    @property
    def exception(self) -> Any:  # the worker's RpcException of the previous attempt; not kept locally
        return None


class Invoker:
    """Runs user code like the Python worker: a thread pool for ``def``, one event loop for ``async def``."""

    def __init__(self, *, client_binding: Callable[[], str], max_workers: int | None = None) -> None:
        self._client_binding = client_binding
        # None = the executor's default size, which is also the worker's default thread count.
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="devhost-fn")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="devhost-loop", daemon=True)

    def start(self) -> None:
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._thread.start()

    def stop(self) -> None:
        """Wait for running invocations, close the SDK's HTTP session, then stop and close the loop."""
        self._pool.shutdown(wait=True)
        if self._loop.is_closed():
            return
        if self._thread.is_alive():
            close = _durable_session_closer()
            if close is not None:
                asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def call(self, info: FunctionInfo, trigger_value: Any, *, retry_count: int = 0, max_retries: int = 0) -> Any:
        """Call ``info``'s code with its trigger argument, client bindings and context; its result."""
        kwargs: dict[str, Any] = {info.trigger_name: trigger_value}
        for binding in info.bindings:
            if binding.get("type") == "durableClient":
                kwargs[str(binding["name"])] = self._client_binding()
        if "context" in info.parameters and "context" not in kwargs:
            kwargs["context"] = InvocationContext(info, retry_count, max_retries)
        if inspect.iscoroutinefunction(info.code):
            if not self._thread.is_alive():
                raise RuntimeError("the devhost's event loop is not running")
            return asyncio.run_coroutine_threadsafe(info.code(**kwargs), self._loop).result()
        return self._pool.submit(info.code, **kwargs).result()


def _durable_session_closer() -> Callable[[], Any] | None:
    # The SDK keeps one module-level aiohttp session and closes it only after connection errors; one
    # left open when its loop stops leaks a socket and warns, and the next loop could not use it.
    # _close_session is private API, hence the guarded lookup.
    try:
        from azure.durable_functions.models.utils import http_utils  # noqa: PLC0415 - private module, optional
    except ImportError:  # pragma: no cover - the SDK is a pinned dependency
        return None
    closer = getattr(http_utils, "_close_session", None)
    return closer if callable(closer) else None


# --------------------------------------------------------------------------- trigger arguments


def activity_callable(invoker: Invoker, info: FunctionInfo) -> Callable[[str], str]:
    """An activity as the engine calls it: input JSON text in, result JSON text out (raising = failed)."""

    def run(input_json: str) -> str:
        value = ActivityTriggerConverter.decode(meta.Datum(input_json, "json"), trigger_metadata=None)
        result = invoker.call(info, value)
        return str(ActivityTriggerConverter.encode(result, expected_type=None).value)

    return run


def orchestrator_callable(info: FunctionInfo) -> Callable[[str], str]:
    """An orchestrator as the engine calls it: the SDK's ``handle(context_json) -> state_json``."""

    # Runs on the engine's thread, not the pool: an episode is deterministic replay without I/O,
    # the engine already serializes episodes per instance, and a hop would only add latency.
    def run(context_json: str) -> str:
        return str(info.code(context_json))

    return run


def event_grid_argument(payload: Mapping[str, Any]) -> Any:
    """The ``EventGridEvent`` (or ``CloudEvent``) the worker decodes from one delivered event."""
    return EventGridEventInConverter.decode(meta.Datum(json.dumps(payload), "json"), trigger_metadata=None)


def timer_argument(past_due: bool, last: str | None, next_: str, updated: str | None) -> func.TimerRequest:
    """The ``TimerRequest`` the worker decodes from the timer trigger's JSON (times ISO 8601)."""
    status = {"Last": last, "Next": next_, "LastUpdated": updated}
    raw = {"Schedule": {"AdjustForDST": True}, "ScheduleStatus": status, "IsPastDue": past_due}
    datum = meta.Datum(json.dumps(raw), "json")
    request: func.TimerRequest = TimerRequestConverter.decode(datum, trigger_metadata=None)
    return request


@dataclass(frozen=True)
class _ModelBindingData:
    """The fields of the worker's ``ModelBindingData`` message that the blob extension reads."""

    content: str
    version: str = "1.0"
    source: str = "AzureStorageBlobs"
    content_type: str = "application/json"


@dataclass(frozen=True)
class NameOnlyBlobClient:
    """Stands in for a BlobClient whose name the SDK cannot encode (local files only)."""

    container_name: str
    blob_name: str


def blob_argument(info: FunctionInfo, container: str, blob_name: str) -> Any:
    """The SDK client a blob-trigger parameter receives (never the blob's content).

    Built by the extension's own converter when the trigger's connection setting is defined (as
    ``func start`` requires); else a client for development storage, built without any request.
    """
    connection = str(info.trigger.get("connection") or "AzureWebJobsStorage")
    pytype = _annotation(info, info.trigger_name)
    try:
        blob_name.encode()
    except UnicodeEncodeError:
        # A local file name that is not UTF-8 cannot be a blob name, so no SDK client can hold it;
        # the function still gets the names (all a starter reads) and the file ends with a reason.
        log.warning("blob name %r is not UTF-8: passing a name-only client", blob_name)
        return NameOnlyBlobClient(container, blob_name)
    if connection_defined(connection):
        content = json.dumps({"Connection": connection, "ContainerName": container, "BlobName": blob_name})
        datum = Datum(value=_ModelBindingData(content), type="model_binding_data")
        return BlobClientConverter.decode(datum, trigger_metadata=None, pytype=pytype)
    service = BlobServiceClient.from_connection_string(DEVELOPMENT_STORAGE)
    if getattr(pytype, "__name__", "") == "ContainerClient":
        return service.get_container_client(container)
    return service.get_blob_client(container, blob_name)


def connection_defined(name: str) -> bool:
    """Whether app setting ``name`` (or a managed-identity form of it) is defined, as the extension looks."""
    suffixes = ("", "__serviceUri", "__blobServiceUri", "__accountName")  # the extension's lookup order
    return any(os.environ.get(name + suffix) for suffix in suffixes)
