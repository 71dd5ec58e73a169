"""One document through the real activities with the Azure Monitor distro on: the child process of
``test_telemetry_azure_monitor.py`` (OpenTelemetry's global providers can be set once per process).

``python -m tests.integration.azure_monitor_child worker|devhost``. The environment carries the
settings (the embedded profile, ``APPLICATIONINSIGHTS_CONNECTION_STRING`` of the local endpoint).
"worker" stands in for the Functions Python worker as ``setup.in_functions_worker`` recognizes it:
a module named ``azure_functions_worker`` is loaded, and a handler on the root logger at INFO
receives what the worker would forward to the host's Application Insights. "devhost" configures
console logging as the local host does, the same handler standing for its console.

Prints one JSON object: the run's ids, the records of the project's loggers and those the root
handler received, the OpenTelemetry instrumentations that are on, whether shutdown finished.
"""

from __future__ import annotations

import json
import logging
import sys
import types
from importlib.metadata import entry_points

from azure.core.settings import settings as azure_settings

from ingestion import activities, telemetry
from ingestion.bootstrap import build_services
from ingestion.config import Settings, TelemetrySettings
from ingestion.telemetry.runs import run_ids
from ingestion.telemetry.traced import untraced
from ingestion.triggers import plan_ingestion
from ingestion.workflow import INSTANCE_KEY, PERSIST_CHUNKS, STAGE_ACTIVITIES

PATH = "notes/observability.txt"
TEXT = "\n\n".join(f"Paragraph {n}: the lantern in the harbour, the copper violin, the meadow." for n in range(40))
HOST_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"  # the Functions host's invocation, linked from each activity
HOST_TRACEPARENT = f"00-{HOST_TRACE_ID}-00f067aa0ba902b7-01"


class Received(logging.Handler):
    """Every record reaching the root logger: what the worker forwards, or what the console prints."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.records: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append({"logger": record.name, "level": record.levelname, "message": record.getMessage()})


def instrumented() -> list[str]:
    """The OpenTelemetry instrumentations (entry points) that are on in this process."""
    found = []
    for entry_point in entry_points(group="opentelemetry_instrumentor"):
        try:
            instrumentor = entry_point.load()()
        except ImportError:  # its library is not installed: it cannot be on
            continue
        if getattr(instrumentor, "is_instrumented_by_opentelemetry", False):
            found.append(entry_point.name)
    return sorted(found)


def main(mode: str) -> None:
    received = Received()
    root = logging.getLogger()
    if mode == "worker":
        sys.modules["azure_functions_worker"] = types.ModuleType("azure_functions_worker")
        root.setLevel(logging.INFO)  # as the worker's dispatcher sets it
    else:
        telemetry.configure_logging(TelemetrySettings.from_env())
    root.addHandler(received)
    project = Received()  # every record of the project's loggers, propagating or not
    logging.getLogger("ingestion").addHandler(project)

    settings = telemetry.start()
    services = build_services(Settings.from_env())
    try:
        untraced(services.blobs).put(PATH, TEXT.encode())
        plan = plan_ingestion(services, services.blobs.container, PATH)
        assert plan is not None
        request = plan.input["request"] | {INSTANCE_KEY: plan.instance_id}
        result = None
        for stage in STAGE_ACTIVITIES:
            envelope = activities.run_stage(services, stage, request, HOST_TRACEPARENT)
            assert envelope["ok"], envelope
            result = envelope["result"]
        outcome = {"request": request, "stage": PERSIST_CHUNKS, "outcome": "indexed", "result": result, "error": None}
        recorded = activities.record_outcome(services, outcome, HOST_TRACEPARENT)
        assert recorded["ok"], recorded
        logging.getLogger("ingestion.child").info("outside any run")
        logging.getLogger("other").warning("a record of another logger")
    finally:
        services.close()
    finished = telemetry.shutdown()
    trace_id, root_span_id = run_ids(plan.instance_id)
    report = {
        "exporter": settings.exporter,
        "in_worker": telemetry.in_functions_worker(),
        "shutdown": finished,
        "doc_id": request["doc_id"],
        "etag": request["etag"],
        "instance_id": plan.instance_id,
        "trace_id": format(trace_id, "032x"),
        "root_span_id": format(root_span_id, "016x"),
        "host_trace_id": HOST_TRACE_ID,
        "propagate": logging.getLogger("ingestion").propagate,
        "root_received": received.records,
        "project_records": project.records,
        "instrumented": instrumented(),
        "azure_sdk_traced": azure_settings.tracing_implementation() is not None,
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
