"""``Host``: serves one function app on this machine the way ``func start`` serves it in Azure's place.

It reads the app's registered functions once and wires each trigger to its local source: HTTP
functions and the Durable client webhooks on ``127.0.0.1:<port>``, orchestrators and activities on
the SQLite-backed ``DurableEngine``, blob and Event Grid triggers on Event Grid payloads from a
``BlobWatcher`` over a ``BlobSource``, timer triggers on their schedules.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import azure.functions as func

from ingestion.adapters.local_dead_letters import POISON_FILE
from ingestion.config import ReconcileSettings
from ingestion.devhost import functions as fn
from ingestion.devhost.engine import DurableEngine
from ingestion.devhost.events import EventDispatcher, Target, blob_of
from ingestion.devhost.http import DevHttpServer, FunctionRoutes, Mount, Route
from ingestion.devhost.rpc import PREFIX, DurableWebhooks, client_binding
from ingestion.devhost.timers import Schedule, TimerService, TimerSpec
from ingestion.devhost.watcher import BlobWatcher
from ingestion.ports import BlobSource
from ingestion.triggers import BLOB_CREATED

log = logging.getLogger(__name__)
APP_SETTING_DEFAULTS = {"INGEST_RECONCILE_SCHEDULE": ReconcileSettings().schedule}


class Host:
    """The function app's local host; ``start()``/``stop()`` (once each) or use it as a context manager.

    Run one started Host per process at a time, as Azure runs one worker per host: the Durable SDK's
    client keeps a process-wide HTTP session tied to the event loop of the Host that opened it.
    ``retry_backoff_s`` is the first delay between attempts of a failed event delivery (doubling).
    """

    def __init__(
        self,
        app: func.FunctionRegister,
        *,
        data_dir: Path,
        blob_source: BlobSource | None,
        port: int = 7071,
        activity_workers: int = 2,
        watch_interval_s: float = 1.0,
        hub_name: str | None = None,
        host_json: Path | None = None,
        retry_backoff_s: float = 0.1,
    ) -> None:
        settings = _load_host_json(host_json)
        extensions = settings.get("extensions") or {}
        self.catalog = fn.read_app(app)
        self.data_dir = data_dir
        self.poison_path = data_dir / POISON_FILE  # events whose functions kept failing (the reconciler reads it)
        data_dir.mkdir(parents=True, exist_ok=True)  # the engine opens its database when built
        self.route_prefix = str((extensions.get("http") or {}).get("routePrefix", "api")).strip("/")
        self._requested_port = port
        self._server: DevHttpServer | None = None
        self._lock = threading.Lock()
        self._started = self._stopped = False
        hub = hub_name or (extensions.get("durableTask") or {}).get("hubName") or "IngestionHub"
        self._invoker = fn.Invoker(client_binding=lambda: client_binding(self.base_url, str(hub)))
        self.engine = DurableEngine(
            data_dir / "durable.sqlite3",
            orchestrators={
                i.durable_name: fn.orchestrator_callable(i) for i in self.catalog.of("orchestrationTrigger")
            },
            activities={
                i.durable_name: fn.activity_callable(self._invoker, i) for i in self.catalog.of("activityTrigger")
            },
            activity_workers=activity_workers,
            hub_name=str(hub),
        )
        self._blob_paths = [(info, *_blob_path(info)) for info in self.catalog.of("blobTrigger")]
        max_attempts = int((extensions.get("queues") or {}).get("maxDequeueCount") or 5)
        self._events = EventDispatcher(
            self._targets,
            poison_path=self.poison_path,
            max_attempts=max_attempts,
            backoff_s=retry_backoff_s,
        )
        self._watcher = None
        if blob_source is not None:
            self._watcher = BlobWatcher(
                blob_source, self._events.submit, interval_s=watch_interval_s, state_path=data_dir / "watcher.json"
            )
        timers = self.catalog.of("timerTrigger")
        self._timers = TimerService(
            [
                TimerSpec(
                    t.name,
                    # Binding expressions name app settings that Azure requires (infrastructure sets
                    # them); locally they default to the project's, as a local.settings.json would.
                    Schedule(str(t.trigger["schedule"]), APP_SETTING_DEFAULTS),
                    bool(t.trigger.get("runOnStartup")),
                )
                for t in timers
            ],
            self._run_timer,
            state_path=data_dir / "timers.json",
        )

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bind the port, then start the event loop, engine, HTTP serving, event delivery, timers and watcher."""
        with self._lock:
            if self._started:
                raise RuntimeError("a Host starts once")
            self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()  # whatever did start (threads, the engine's database) is released
            raise

    def _start(self) -> None:
        routes = [Route.of(info) for info in self.catalog.of("httpTrigger")]
        prefix = f"/{self.route_prefix}/" if self.route_prefix else "/"
        mounts: dict[str, Mount] = {
            prefix: FunctionRoutes(routes, self._invoker, lambda: self.base_url, prefix),
            PREFIX: DurableWebhooks(self.engine, lambda: self.base_url),
        }
        # Bind first: a port in use must stop us before the engine resumes work another host may own.
        self._server = DevHttpServer(self._requested_port, mounts, debug=log.isEnabledFor(logging.DEBUG))
        self._invoker.start()
        self.engine.start()
        self._server.start()
        self._events.start()
        self._timers.start()
        if self._watcher is not None:
            self._watcher.start()
        for info, _, _ in self._blob_paths:
            connection = str(info.trigger.get("connection") or "AzureWebJobsStorage")
            if not fn.connection_defined(connection):
                log.info(
                    "app setting %s is not defined: blob trigger %s receives clients for %s",
                    connection, info.name, fn.DEVELOPMENT_STORAGE,
                )  # fmt: skip

    def stop(self) -> None:
        """Stop the watcher, event delivery, timers, HTTP server, engine and event loop, in that order."""
        with self._lock:
            if not self._started or self._stopped:
                return
            self._stopped = True
        if self._watcher is not None:
            self._watcher.stop()
        self._events.stop()
        self._timers.stop()
        if self._server is not None:
            self._server.stop()
        self.engine.stop()
        self._invoker.stop()

    def __enter__(self) -> Host:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ what tests and the CLI use

    @property
    def port(self) -> int:
        """The bound port (the OS's pick when 0 was asked for), once started."""
        return self._server.port if self._server is not None else self._requested_port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self) -> list[tuple[str, str, str]]:
        """``(function, methods, url)`` for every HTTP function, as ``func start`` lists them."""
        prefix = f"/{self.route_prefix}" if self.route_prefix else ""
        found = []
        for info in self.catalog.of("httpTrigger"):
            route = Route.of(info)
            methods = ",".join(sorted(route.methods)) if route.methods else "*"
            found.append((info.name, methods, f"{self.base_url}{prefix}/{route.template}"))
        return found

    def deliver(self, event_payload: Mapping[str, Any]) -> None:
        """Deliver one Event Grid event now, on this thread, to every function it routes to."""
        self._events.deliver(event_payload)

    def wait_for_events(self, timeout: float) -> None:
        """Block until every blob change made before this call has been delivered; ``TimeoutError`` if not."""
        deadline = _Deadline(timeout)
        if self._watcher is not None:
            self._watcher.wait_caught_up(deadline.left())
        self._events.wait_idle(deadline.left())

    # ------------------------------------------------------------------ trigger wiring

    def _targets(self, event: Mapping[str, Any]) -> Sequence[Target]:
        targets: list[Target] = []
        blob = blob_of(event)
        if event.get("eventType") == BLOB_CREATED and blob is not None:
            # A BlobDeleted event never reaches a blob trigger: the host drops it (see ARCHITECTURE.md).
            container, name = blob
            for info, wanted, pattern in self._blob_paths:
                if wanted == container and pattern.fullmatch(name):
                    targets.append(Target(info.name, partial(self._run_blob, info, container, name)))
        targets += [
            Target(info.name, partial(self._run_event_grid, info)) for info in self.catalog.of("eventGridTrigger")
        ]
        return targets

    def _run_blob(self, info: fn.FunctionInfo, container: str, name: str, event: object, attempt: int) -> None:
        retries = self._events.max_attempts - 1
        self._invoker.call(info, fn.blob_argument(info, container, name), retry_count=attempt, max_retries=retries)

    def _run_event_grid(self, info: fn.FunctionInfo, event: Mapping[str, Any], attempt: int) -> None:
        retries = self._events.max_attempts - 1
        self._invoker.call(info, fn.event_grid_argument(event), retry_count=attempt, max_retries=retries)

    def _run_timer(self, name: str, past_due: bool, status: dict[str, str | None]) -> None:
        info = next(t for t in self.catalog.of("timerTrigger") if t.name == name)
        next_run = status.get("Next") or ""
        self._invoker.call(info, fn.timer_argument(past_due, status.get("Last"), next_run, status.get("LastUpdated")))


def _blob_path(info: fn.FunctionInfo) -> tuple[str, re.Pattern[str]]:
    """The container and a regex for the blob name of a blob trigger's ``path`` (``uploads/{name}``)."""
    container, _, blob = str(info.trigger["path"]).strip("/").partition("/")
    regex, position = "", 0
    for param in re.finditer(r"\{(\w+)\}", blob):
        regex += re.escape(blob[position : param.start()]) + f"(?P<{param.group(1)}>.+)"
        position = param.end()
    return container, re.compile(regex + re.escape(blob[position:]) if blob else ".+", re.DOTALL)


def _load_host_json(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    loaded = json.loads(path.read_text(encoding="utf-8"))
    return loaded if isinstance(loaded, dict) else {}


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self._end - time.monotonic())
