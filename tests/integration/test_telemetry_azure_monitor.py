"""The Azure Monitor path (``INGEST_TELEMETRY=azure_monitor``) against a local ingestion endpoint.

A child process (``azure_monitor_child.py``; OpenTelemetry's providers are set once per process)
runs one document through the real activities on the embedded profile with the distro on, once
as the Functions worker (whose root-logger handler forwards every record to the host's
Application Insights) and once as the local host. ``tests/emulators/appinsights_ingest.py``
records what the exporter sends: every project record must arrive once, the run must be one
operation rooted at its ``ingest_document`` request, and the worker must not get the project's
records too.

The exporter's other destinations are switched off through the variables it reads (statsbeat,
remote configuration), the Azure VM metadata probe is left out, and its offline storage goes to
the test's ``TMPDIR``: nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ingestion.workflow import RECORD_OUTCOME, STAGE_ACTIVITIES
from tests.conftest import REPO
from tests.emulators.appinsights_ingest import (
    DEPENDENCY,
    INSTRUMENTATION_KEY,
    MESSAGE,
    METRIC,
    REQUEST,
    AppInsightsIngest,
    Envelope,
)
from tests.emulators.process import environment_without

pytestmark = pytest.mark.timeout(180)
CHILD_TIMEOUT_S = 120  # a guard against a hang (an exporter that never returns), not a timing assertion
ACTIVITIES = (*STAGE_ACTIVITIES, RECORD_OUTCOME)
IN_PROC = "InProc"  # the dependency type the exporter gives INTERNAL spans
# What the Functions host sets for its worker (the VM resource detector then skips its metadata probe).
FUNCTIONS_ENV = {"FUNCTIONS_WORKER_RUNTIME": "python", "WEBSITE_SITE_NAME": "func-ingest", "REGION_NAME": "westeurope"}
_INHERITED = ("INGEST_", "OTEL_", "APPLICATIONINSIGHTS_", "APPINSIGHTS_", "FUNCTIONS_", "WEBSITE_", "PYTHON_")


@dataclass(frozen=True)
class Run:
    report: dict[str, Any]  # what the child printed (azure_monitor_child.py)
    envelopes: list[Envelope]  # what the ingestion endpoint received
    rejected: list[str]

    def of_type(self, name: str) -> list[Envelope]:
        return [envelope for envelope in self.envelopes if envelope.name == name]

    def messages(self) -> Counter[str]:
        return Counter(str(envelope.base_data.get("message")) for envelope in self.of_type(MESSAGE))

    def metrics(self) -> dict[str, list[Envelope]]:
        found: dict[str, list[Envelope]] = {}
        for envelope in self.of_type(METRIC):
            for point in envelope.base_data.get("metrics", []):
                found.setdefault(point["name"], []).append(envelope)
        return found

    def activity(self, name: str) -> Envelope:
        """The activity span ``name`` (INTERNAL: an in-process dependency); exactly one."""
        (found,) = [
            e for e in self.of_type(DEPENDENCY) if e.base_data["name"] == name and e.base_data["type"] == IN_PROC
        ]
        return found


def run_child(mode: str, root: Path) -> Run:
    """The child in ``mode`` ("worker" or "devhost"), exporting to a fresh local endpoint."""
    with AppInsightsIngest() as ingest:
        env = environment_without(*_INHERITED) | {
            "APPLICATIONINSIGHTS_CONNECTION_STRING": ingest.connection_string,
            "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",  # else: Microsoft's statsbeat endpoints
            "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",  # else: settings.sdk.monitor.azure.com
            "TMPDIR": str(root / "tmp"),  # the exporter's offline storage: one per run
            "INGEST_PROFILE": "embedded",
            "INGEST_DATA_DIR": str(root / "data"),
            "INGEST_INBOX_DIR": str(root / "inbox"),
            "INGEST_PARSE_ISOLATION": "inline",
            "TIKTOKEN_CACHE_DIR": str(root / "tiktoken"),
        }
        if mode == "worker":
            env |= FUNCTIONS_ENV
        else:  # a developer's machine: no probe of the Azure VM metadata service from a test
            env["OTEL_EXPERIMENTAL_RESOURCE_DETECTORS"] = "azure_app_service"
        (root / "tmp").mkdir(parents=True)
        done = subprocess.run(
            [sys.executable, "-m", "tests.integration.azure_monitor_child", mode],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        return Run(report, ingest.envelopes, ingest.rejected)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_child("worker", tmp_path_factory.mktemp("worker"))


@pytest.fixture(scope="module")
def devhost(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_child("devhost", tmp_path_factory.mktemp("devhost"))


def test_the_worker_run_exported_through_the_distro_and_flushed_on_shutdown(worker: Run) -> None:
    """The child saw itself in the worker, chose azure_monitor, and shutdown flushed within its deadline."""
    assert worker.report["exporter"] == "azure_monitor"
    assert worker.report["in_worker"] is True
    assert worker.report["shutdown"] is True
    assert worker.rejected == []
    assert {envelope.path.lstrip("/") for envelope in worker.envelopes} == {"v2.1/track"}


def test_each_project_record_arrives_once_as_a_message(worker: Run) -> None:
    """Every record of the ``ingestion`` loggers is one Message envelope; nothing else is."""
    emitted = Counter(record["message"] for record in worker.report["project_records"])
    assert emitted["outside any run"] == 1
    assert worker.messages() == emitted
    for envelope in worker.of_type(MESSAGE):
        assert envelope.properties["logger_name"].startswith("ingestion")


def test_inside_the_worker_the_root_logger_gets_no_project_record(worker: Run) -> None:
    """The worker's handler sees other loggers' records, none of the project's, none of the exporter's own."""
    received = worker.report["root_received"]
    assert worker.report["propagate"] is False
    assert not [record for record in received if record["logger"].split(".")[0] == "ingestion"]
    assert {"logger": "other", "level": "WARNING", "message": "a record of another logger"} in received
    assert not [record for record in received if record["logger"].startswith("azure")]  # no trace per export


def test_records_of_other_loggers_are_left_to_the_worker(worker: Run) -> None:
    """The distro is scoped to the project's logger: a record of another logger is not exported."""
    assert "a record of another logger" not in worker.messages()


def test_a_record_inside_a_run_carries_its_correlation_and_its_span(worker: Run) -> None:
    """The "run finished" record has the run's fields as customDimensions and sits under record_outcome."""
    report = worker.report
    (record,) = [e for e in worker.of_type(MESSAGE) if e.base_data["message"].endswith("run finished: indexed")]
    assert record.properties == {
        "doc_id": report["doc_id"],
        "version": report["etag"],
        "stage": RECORD_OUTCOME,
        "instance_id": report["instance_id"],
        "logger_name": "ingestion.activities",
    }
    assert record.operation_id == report["trace_id"]
    assert record.parent_id == worker.activity(RECORD_OUTCOME).base_data["id"]


def test_the_run_is_one_operation_rooted_at_its_ingest_document_request(worker: Run) -> None:
    """ingest_document (a CONSUMER span) is the Request at the root, with the ids derived from the instance id."""
    report = worker.report
    (root,) = worker.of_type(REQUEST)
    assert root.base_data["name"] == "ingest_document"
    assert root.base_data["id"] == report["root_span_id"]
    assert root.operation_id == report["trace_id"]
    assert root.parent_id is None
    assert root.base_data["success"] is True
    assert {key: root.properties[key] for key in ("doc_id", "version", "instance_id", "outcome")} == {
        "doc_id": report["doc_id"],
        "version": report["etag"],
        "instance_id": report["instance_id"],
        "outcome": "indexed",
    }
    assert root.tags["ai.cloud.role"] == "ingestion"


def test_each_activity_is_one_in_process_dependency_under_the_run(worker: Run) -> None:
    """Activity spans (INTERNAL) are InProc dependencies, once each, children of the root, linked to the host."""
    report = worker.report
    for stage in ACTIVITIES:
        activity = worker.activity(stage)
        assert activity.operation_id == report["trace_id"]
        assert activity.parent_id == report["root_span_id"]
        assert activity.base_data["success"] is True
        assert {key: activity.properties[key] for key in ("doc_id", "version", "stage", "instance_id", "outcome")} == {
            "doc_id": report["doc_id"],
            "version": report["etag"],
            "stage": stage,
            "instance_id": report["instance_id"],
            "outcome": "ok",
        }
        links = json.loads(activity.properties["_MS.links"])
        assert [link["operation_Id"] for link in links] == [report["host_trace_id"]]


def test_port_calls_are_dependencies_under_their_activity(worker: Run) -> None:
    """Each port call of a stage (a CLIENT span) is a dependency of that stage's activity, with its fields."""
    report = worker.report
    activities = {worker.activity(stage).base_data["id"]: stage for stage in ACTIVITIES}
    calls = [e for e in worker.of_type(DEPENDENCY) if e.operation_id == report["trace_id"] and "port" in e.properties]
    assert {"blob.read", "embedder.embed", "index.upsert", "jobs.replace"} <= {e.base_data["name"] for e in calls}
    for call in calls:
        assert call.parent_id in activities
        assert call.properties["stage"] == activities[call.parent_id]
        assert call.properties["doc_id"] == report["doc_id"]
        assert call.base_data["name"] == f"{call.properties['port']}.{call.properties['operation']}"


def test_the_pipeline_metrics_arrive(worker: Run) -> None:
    """Documents finished by outcome, stage durations by stage, embedding and index counts."""
    metrics = worker.metrics()
    (finished,) = metrics["ingestion.documents.finished"]
    assert finished.properties == {"outcome": "indexed", "reason": "none"}
    assert finished.base_data["metrics"][0]["value"] == 1
    assert {e.properties["stage"] for e in metrics["ingestion.stage.duration"]} == set(ACTIVITIES)
    for name in ("ingestion.embedding.tokens", "ingestion.embedding.requests", "ingestion.index.batch_size"):
        assert name in metrics


def test_the_distro_adds_no_performance_counters_and_no_second_instrumentation(worker: Run) -> None:
    """Only the Azure SDK instrumentation is on, no process counters are sent, and the resource says Functions."""
    assert worker.report["instrumented"] == []
    assert worker.report["azure_sdk_traced"] is True
    assert not [name for name in worker.metrics() if name.startswith("\\")]  # "\Processor(_Total)\% Processor Time"
    resources = worker.metrics()["_OTELRESOURCE_"]
    assert {e.properties["cloud.platform"] for e in resources} == {"azure_functions"}
    assert {e.properties["service.name"] for e in resources} == {"ingestion"}


def test_outside_the_worker_project_records_reach_the_console_and_are_exported_once(devhost: Run) -> None:
    """On the local host the ``ingestion`` logger keeps propagating (its console), and each record is sent once."""
    report = devhost.report
    assert report["in_worker"] is False
    assert report["propagate"] is True
    assert report["shutdown"] is True
    project = report["project_records"]
    assert [record for record in report["root_received"] if record["logger"].startswith("ingestion")] == project
    assert devhost.messages() == Counter(record["message"] for record in project)
    assert "a record of another logger" not in devhost.messages()
    (root,) = devhost.of_type(REQUEST)
    assert root.operation_id == report["trace_id"]


def test_the_local_endpoint_answers_like_the_service() -> None:
    """A gzip body of envelopes is counted and accepted; an invalid envelope is a 206 error; other routes 404."""
    item = {
        "name": MESSAGE,
        "time": "2026-01-01T00:00:00.000Z",
        "iKey": INSTRUMENTATION_KEY,
        "tags": {"ai.operation.id": "ab" * 16},
        "data": {"baseType": "MessageData", "baseData": {"ver": 2, "message": "hello", "properties": {"k": "v"}}},
    }
    with AppInsightsIngest() as ingest:
        track = ingest.url + "v2.1/track"
        zipped = post(track, gzip.compress(json.dumps([item]).encode()), {"Content-Encoding": "gzip"})
        partial = post(track, json.dumps([item, {"name": MESSAGE}]).encode())
        elsewhere = post(ingest.url + "v2/elsewhere", b"[]")
        received = [(e.name, e.properties, e.operation_id) for e in ingest.envelopes]
    assert zipped == (200, {"itemsReceived": 1, "itemsAccepted": 1, "errors": []})
    invalid = {"index": 1, "statusCode": 400, "message": "invalid envelope"}
    assert partial == (206, {"itemsReceived": 2, "itemsAccepted": 1, "errors": [invalid]})
    assert elsewhere[0] == 404
    assert received == [(MESSAGE, {"k": "v"}, "ab" * 16)] * 2


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 -- a fixed http URL on 127.0.0.1
        url, data=body, method="POST", headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 -- as above
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
