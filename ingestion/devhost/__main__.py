"""``python -m ingestion.devhost``: serve ``function_app.py`` on 127.0.0.1, as ``func start`` would.

Runs in the app folder (``--app-dir``, default the current one): like Core Tools it loads
``local.settings.json``'s ``Values`` into the environment (variables already set win), reads
``host.json``, imports ``function_app`` and serves it until SIGINT or SIGTERM, then shuts down
cleanly. Blob events come from a watcher polling the app's blob source (``--no-watch`` turns it
off): the ``inbox/`` folder on the embedded profile, the uploads container on the azure profile
(Azure Storage, or Azurite, sends no Event Grid events to a local host).

Logs are JSON lines on stderr (``INGEST_LOG_FORMAT=text`` for plain lines). With
``OTEL_EXPORTER_OTLP_ENDPOINT`` set, traces, metrics and the project's logs also go to that
collector (``APPLICATIONINSIGHTS_CONNECTION_STRING``: to Application Insights).
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from ingestion import telemetry
from ingestion.bootstrap import shared_services
from ingestion.config import Settings, SettingsError, TelemetrySettings
from ingestion.devhost.engine import HubLocked
from ingestion.devhost.folder import load_app_module
from ingestion.devhost.host import Host
from ingestion.errors import IngestionError

log = logging.getLogger("ingestion.devhost")
_STOP_DEADLINE_S = 30.0


class _StopRequest:
    """Set by SIGINT/SIGTERM. Handlers go in first thing: a background job of a non-interactive
    shell starts with SIGINT ignored, and a signal that lands while the app loads must still count.
    The handler only flips a flag (taking a lock inside a signal handler can deadlock)."""

    def __init__(self) -> None:
        self.signal: str | None = None
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signal = signal.Signals(signum).name

    def wait(self, step_s: float = 0.2) -> str:
        while self.signal is None:
            time.sleep(step_s)  # wakes for signals between steps
        return self.signal


def main(argv: list[str] | None = None) -> int:
    stop = _StopRequest()
    parser = argparse.ArgumentParser(
        prog="python -m ingestion.devhost", description="Serve function_app.py on 127.0.0.1, as func start would."
    )
    parser.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (0: any free port; default 7071)")
    parser.add_argument("--no-watch", action="store_true", help="do not turn inbox changes into blob events")
    parser.add_argument("--app-dir", type=Path, default=Path.cwd(), help="folder holding function_app.py")
    parser.add_argument("--verbose", action="store_true", help="debug logging, one line per HTTP request")
    args = parser.parse_args(argv)
    app_dir = args.app_dir.resolve()
    os.chdir(app_dir)  # relative settings (inbox/, .ingestion/) resolve in the app folder, as under func
    sys.path.insert(0, str(app_dir))
    load_local_settings(app_dir / "local.settings.json")
    try:
        telemetry_settings = TelemetrySettings.from_env()
    except SettingsError as error:
        telemetry_settings = TelemetrySettings(exporter="none")
        print(f"telemetry off: {error}", file=sys.stderr)
    telemetry.configure_logging(telemetry_settings, logging.DEBUG if args.verbose else logging.INFO)
    telemetry.configure(telemetry_settings)  # before the app's own start(): an OTLP collector, if configured
    try:
        return _serve(args, stop, app_dir)
    finally:
        telemetry.shutdown()


def _serve(args: argparse.Namespace, stop: _StopRequest, app_dir: Path) -> int:
    settings = Settings.from_env()
    app = load_app_module(app_dir).app

    port = args.port if args.port is not None else settings.host.port
    host_json = app_dir / "host.json"
    try:  # the watcher polls the very blob source the functions read; a wrong setting stops us here
        blobs = None if args.no_watch else shared_services().blobs
    except (SettingsError, IngestionError) as error:
        log.error("cannot start: %s", error)
        return 1
    host = Host(
        app,
        data_dir=settings.data_dir,
        blob_source=blobs,
        port=port,
        activity_workers=settings.host.activity_workers,
        watch_interval_s=settings.host.watch_interval_s,
        host_json=host_json if host_json.is_file() else None,
    )

    if stop.signal is not None:
        return 0  # asked to stop while loading: nothing started yet
    try:
        host.start()
    except (HubLocked, OSError) as error:  # another host has the data directory, or the port is taken
        log.error("cannot start: %s", error)
        return 1
    try:
        log.info("listening on %s (task hub %s, data in %s)", host.base_url, host.engine.hub_name, settings.data_dir)
        for name, methods, url in host.routes():
            log.info("  %s: [%s] %s", name, methods, url)
        for name, why in host.catalog.skipped.items():
            log.warning("  %s: not served (%s)", name, why)
        if not args.no_watch:
            where = settings.inbox_dir if settings.profile == "embedded" else "the storage account"
            log.info("watching %s as container %r", where, settings.container)
        log.info("received %s, shutting down", stop.wait())
    finally:
        # Ctrl-C must never hang: if stopping takes too long, print every thread's stack (to see
        # why) and exit; the engine's SQLite state lets the next start resume whatever was cut off.
        faulthandler.dump_traceback_later(_STOP_DEADLINE_S, exit=True)
        host.stop()
        faulthandler.cancel_dump_traceback_later()
    log.info("stopped")
    return 0


def load_local_settings(path: Path) -> None:
    """Put ``Values`` of a ``local.settings.json`` into the environment, leaving set variables alone."""
    if not path.is_file():
        return
    values = json.loads(path.read_text(encoding="utf-8")).get("Values") or {}
    for name, value in values.items():
        os.environ.setdefault(str(name), str(value))


if __name__ == "__main__":
    sys.exit(main())
