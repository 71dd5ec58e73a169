"""The devhost durable engine's lifecycle: crash resume, terminate, overwrite, status shapes, purge."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import azure.durable_functions as df
import pytest
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus
from azure.durable_functions.models.OrchestrationRuntimeStatus import OrchestrationRuntimeStatus

from ingestion.devhost.engine import DurableEngine, InstanceExists
from tests.unit.devhost.test_engine import ORCHESTRATORS, WAIT_S, EngineFactory, Flaky, add_one, engine_factory, run

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.filterwarnings("ignore:azure.functions df_loads was called without expected_type:DeprecationWarning"),
]

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def make_engine(tmp_path: Path) -> Iterator[EngineFactory]:
    """Engines on ``tmp_path/hub.db``, stopped at teardown."""
    with engine_factory(tmp_path / "hub.db", {"add_one": add_one, "flaky": Flaky()}) as make:
        yield make


class Recorder:
    """``add_one`` that records every input it ran on, and can hold the run whose input is ``block_on``."""

    def __init__(self, block_on: int | None = None) -> None:
        self.inputs: list[int] = []
        self.block_on = block_on
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.returned = threading.Event()

    def __call__(self, input_json: str) -> str:
        self.inputs.append(json.loads(input_json))
        if json.loads(input_json) == self.block_on:
            self.entered.set()
            self.gate.wait(WAIT_S)
            self.returned.set()
        return add_one(input_json)


def test_a_new_engine_resumes_an_abandoned_run_and_reruns_the_activity(make_engine: EngineFactory) -> None:
    """Given an engine stopped while an activity hangs, a second engine on the file finishes the instance."""
    stuck = Recorder(block_on=2)
    first = make_engine({"add_one": stuck})
    instance_id = first.start_new("sequence", "resume-me", json.dumps(1))
    assert stuck.entered.wait(WAIT_S)
    first.stop(timeout=0.1)  # the hung activity thread is abandoned, as if the process died

    again = Recorder()
    second = make_engine({"add_one": again})
    status = second.wait_for(instance_id, WAIT_S)
    assert status["output"] == 4
    assert stuck.inputs == [1, 2]
    assert again.inputs == [2, 3]  # the unfinished activity ran again: at least once

    stuck.gate.set()  # the abandoned thread's late result must not reach the hub
    assert stuck.returned.wait(WAIT_S)
    second.wait_until_idle(WAIT_S)
    assert len([e for e in second.history(instance_id) if e["EventType"] == 5]) == 3


CHILD = """
import json, sys, time
from pathlib import Path
import azure.durable_functions as df
from ingestion.devhost.engine import DurableEngine
from tests.unit.devhost.test_engine import sequence

marks = Path(sys.argv[2])

def add_one(input_json):
    with marks.open("a") as out:
        out.write(input_json + "\\n")
    if json.loads(input_json) == 2:
        time.sleep(120)  # killed here
    return json.dumps(json.loads(input_json) + 1)

engine = DurableEngine(Path(sys.argv[1]), orchestrators={"sequence": df.Orchestrator.create(sequence)},
                       activities={"add_one": add_one})
engine.start()
engine.start_new("sequence", "killed", "1")
time.sleep(120)
"""


def test_a_sigkilled_process_resumes_on_restart(tmp_path: Path) -> None:
    """Given a process killed with SIGKILL mid-activity, a new engine completes its instance."""
    db, marks = tmp_path / "hub.db", tmp_path / "marks.txt"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(db), str(marks)], cwd=REPO)
    try:
        deadline = time.monotonic() + WAIT_S
        while not (marks.exists() and marks.read_text().splitlines() == ["1", "2"]):
            assert time.monotonic() < deadline, "the child never reached its second activity"
            assert child.poll() is None, "the child exited early"
            time.sleep(0.05)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()

    recorder = Recorder()
    engine = DurableEngine(
        db,
        orchestrators={"sequence": df.Orchestrator.create(ORCHESTRATORS["sequence"])},
        activities={"add_one": recorder},
    )
    engine.start()
    try:
        assert engine.wait_for("killed", WAIT_S)["output"] == 4
    finally:
        engine.stop()
    assert recorder.inputs == [2, 3]


def test_terminate_ends_a_running_instance_and_discards_its_late_result(make_engine: EngineFactory) -> None:
    """A terminated instance stays Terminated even when its running activity finishes afterwards."""
    stuck = Recorder(block_on=1)
    engine = make_engine({"add_one": stuck})
    instance_id = engine.start_new("sequence", "stop-me", json.dumps(1))
    assert stuck.entered.wait(WAIT_S)
    assert engine.terminate(instance_id, "operator said so") == "terminated"
    stuck.gate.set()
    assert stuck.returned.wait(WAIT_S)
    engine.wait_until_idle(WAIT_S)
    status = engine.get_status(instance_id)
    assert status is not None
    assert (status["runtimeStatus"], status["output"]) == ("Terminated", "operator said so")
    assert stuck.inputs == [1]
    assert engine.terminate(instance_id, "again") == "finished"
    assert engine.terminate("nobody", "x") == "not_found"


def test_start_new_refuses_a_running_id_and_overwrites_a_finished_one(make_engine: EngineFactory) -> None:
    """InstanceExists while Pending/Running; once finished, the same id starts afresh."""
    engine = make_engine()
    engine.start_new("approval", "same-id", None)
    with pytest.raises(InstanceExists):
        engine.start_new("sequence", "same-id", json.dumps(1))
    engine.terminate("same-id", "make room")
    engine.start_new("sequence", "same-id", json.dumps(10))
    status = engine.wait_for("same-id", WAIT_S)
    assert (status["name"], status["output"]) == ("sequence", 13)
    assert [e["EventType"] for e in engine.history("same-id")].count(0) == 1


def test_status_shape_is_what_the_sdk_parses(make_engine: EngineFactory) -> None:
    """get_status output loads into the SDK's DurableOrchestrationStatus, history included."""
    engine = make_engine()
    done = run(engine, "retried", 1)
    raw = engine.get_status(done["instanceId"], show_history=True, show_history_output=True)
    assert raw is not None
    status = DurableOrchestrationStatus.from_json(raw)
    assert status.runtime_status is OrchestrationRuntimeStatus.Completed
    assert status.output == "default ok on attempt 2"
    assert status.input_ == 1
    assert status.created_time is not None
    assert status.created_time <= status.last_updated_time
    kinds = [item["EventType"] for item in status.history]
    assert kinds == ["ExecutionStarted", "TaskFailed", "TimerFired", "TaskCompleted", "ExecutionCompleted"]
    assert status.history[3]["Result"] == "default ok on attempt 2"
    assert status.history[3]["FunctionName"] == "flaky"
    hidden = engine.get_status(done["instanceId"], show_input=False)
    assert hidden is not None
    assert hidden["input"] is None
    assert engine.get_status("unknown") is None


def test_query_filters_by_status_prefix_and_creation_time(make_engine: EngineFactory) -> None:
    """query() narrows instances by runtime status, id prefix and creation window."""
    engine = make_engine()
    run(engine, "sequence", 1)
    engine.start_new("approval", "wait-1", None)
    engine.start_new("approval", "wait-2", None)
    assert {s["instanceId"] for s in engine.query(prefix="wait-")} == {"wait-1", "wait-2"}
    assert len(engine.query(runtime_status=["Completed"])) == 1
    later = datetime.now(UTC) + timedelta(hours=1)
    assert engine.query(created_from=later) == []


def test_purge_deletes_only_finished_instances(make_engine: EngineFactory) -> None:
    """purge and purge_by remove finished instances with their history and keep running ones."""
    engine = make_engine()
    first = run(engine, "sequence", 1)["instanceId"]
    second = run(engine, "sequence", 2)["instanceId"]
    failed = run(engine, "broken")["instanceId"]
    engine.start_new("approval", "running", None)
    assert engine.purge("running") == 0
    assert engine.purge(first) == 1
    assert (engine.get_status(first), engine.history(first)) == (None, [])
    assert engine.purge(first) == 0
    since = datetime.now(UTC) - timedelta(hours=1)
    assert engine.purge_by(created_from=since, runtime_status=["Failed"]) == 1
    assert engine.get_status(failed) is None
    assert engine.purge_by(created_from=since) == 1
    assert engine.get_status(second) is None
    assert engine.get_status("running") is not None


def test_stop_is_idempotent_and_work_queued_while_stopped_runs_on_start(tmp_path: Path) -> None:
    """An instance started on a stopped engine is Pending, and runs once the engine starts."""
    engine = DurableEngine(
        tmp_path / "hub.db",
        orchestrators={"sequence": df.Orchestrator.create(ORCHESTRATORS["sequence"])},
        activities={"add_one": add_one},
    )
    instance_id = engine.start_new("sequence", None, json.dumps(0))
    assert engine.get_status(instance_id)["runtimeStatus"] == "Pending"  # type: ignore[index]
    with pytest.raises(TimeoutError):
        engine.wait_until_idle(0.05)
    engine.start()
    try:
        assert engine.wait_for(instance_id, WAIT_S)["output"] == 3
    finally:
        engine.stop()
        engine.stop()
    engine.start()  # a stopped engine starts again on the same file
    try:
        assert run(engine, "sequence", 5)["output"] == 8
    finally:
        engine.stop()
