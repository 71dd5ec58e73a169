"""OpenTelemetry traces, metrics and logs for the pipeline (ARCHITECTURE.md, "Observability").

- ``names``: every span, metric and attribute name, spelled once.
- ``runtime``: the tracer and instruments code records through (``current()``), no-op until configured.
- ``runs``: one orchestration run is one trace, its ids derived from the instance id.
- ``traced``: a client span around every port operation (``instrument(services)``).
- ``logs``: JSON log lines with the run's correlation fields, secrets masked.
- ``setup``: exporters (Azure Monitor distro, OTLP, console, none) and a bounded shutdown.
"""

from __future__ import annotations

import logging

from ingestion.config import SettingsError, TelemetrySettings
from ingestion.telemetry.runtime import (
    BACKLOG,
    JOB_COUNTS,
    StageScope,
    Telemetry,
    correlated,
    correlation,
    current,
    in_run,
    use,
)
from ingestion.telemetry.setup import configure, configure_logging, in_functions_worker, shutdown
from ingestion.telemetry.traced import instrument, untraced

__all__ = [
    "BACKLOG",
    "JOB_COUNTS",
    "StageScope",
    "Telemetry",
    "configure",
    "configure_logging",
    "correlated",
    "correlation",
    "current",
    "in_functions_worker",
    "in_run",
    "instrument",
    "shutdown",
    "start",
    "untraced",
    "use",
]


def start() -> TelemetrySettings:
    """Configure telemetry from the environment; a bad setting is logged, never raised (telemetry
    must not keep the app from starting, and the error has to reach the logs)."""
    try:
        settings = TelemetrySettings.from_env()
    except SettingsError as error:
        logging.getLogger(__name__).error("telemetry off: %s", error)
        settings = TelemetrySettings(exporter="none")
    configure(settings)
    return settings
