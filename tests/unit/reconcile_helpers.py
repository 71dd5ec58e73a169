"""Helpers for the reconciler tests: an in-process ``Orchestrations`` and typed access to the settings.

``InProcessOrchestrations`` answers what the reconciler asks of Durable without a host: ``start``
runs the whole pipeline for the plan's request (``pipeline.run_document``, in a worker thread, so a
pass's event loop keeps turning as it would while Durable runs the orchestration elsewhere);
``state`` answers what happened to each instance unless the test says otherwise; ``terminate`` ends
a running instance after a number of polls the test chooses (or never), because terminating is
asynchronous in Durable; ``purge_ended`` forgets instances that ended before the cutoff.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections import Counter
from datetime import datetime
from typing import Any

from ingestion.pipeline import run_document
from ingestion.reconcile import ACTIVE, ENDED, Orchestration
from ingestion.services import Services
from ingestion.stages import StageRequest
from ingestion.triggers import StartPlan


class InProcessOrchestrations:
    """``reconcile_apply.Orchestrations`` in process: records starts, terminations and purges."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.started: list[str] = []  # instance ids, in order (lost starts included)
        self.lost: list[str] = []  # starts that never ran: the instance stays missing
        self.terminated: list[tuple[str, str]] = []  # (instance id, reason)
        self.purged_before: list[datetime] = []
        self.polls: Counter[str] = Counter()  # state() calls per instance
        self.states: dict[str, Orchestration] = {}  # what the test says an instance is doing
        self.lose: set[str] = set()  # doc ids whose starts are lost
        self.fail_start: dict[str, BaseException] = {}  # doc id -> what its next start raises
        self.polls_to_end: int | None = 0  # after terminate: polls still Running (None: never ends)
        self._lock = threading.Lock()
        self._happened: dict[str, str] = {}  # instance id -> runtime status
        self._ended_at: dict[str, datetime] = {}
        self._ending: dict[str, int | None] = {}  # terminating instance -> polls left

    def hang(self, instance_id: str, since: datetime) -> None:
        """The instance is Running, with no progress since ``since``."""
        self.states[instance_id] = Orchestration(instance_id, "Running", since)

    def end(self, instance_id: str, status: str = "Terminated") -> None:
        """The instance ended (e.g. a termination took effect between passes)."""
        with self._lock:
            self.states.pop(instance_id, None)
            self._ending.pop(instance_id, None)
            self._finish(instance_id, status)

    def starts_for(self, doc_id: str) -> list[str]:
        return [instance_id for instance_id in self.started if instance_id.startswith(f"{doc_id}-")]

    async def state(self, instance_id: str) -> Orchestration:
        with self._lock:
            self.polls[instance_id] += 1
            if instance_id in self._ending:
                left = self._ending[instance_id]
                if left is not None and left <= 0:
                    self.states.pop(instance_id, None)
                    del self._ending[instance_id]
                    self._finish(instance_id, "Terminated")
                elif left is not None:
                    self._ending[instance_id] = left - 1
            return self._current(instance_id)

    async def start(self, plan: StartPlan) -> bool:
        request = StageRequest.from_payload(plan.input["request"])
        with self._lock:
            if self._current(plan.instance_id).status in ACTIVE:
                return False  # start_new refuses an instance that is pending or running
            failure = self.fail_start.pop(request.doc_id, None)
            if failure is not None:
                raise failure
            self.states.pop(plan.instance_id, None)
            self.started.append(plan.instance_id)
            if request.doc_id in self.lose:
                self.lost.append(plan.instance_id)
                return True  # accepted, then lost: the instance never appears
            self._happened[plan.instance_id] = "Running"
        try:
            await asyncio.to_thread(run_document, self.services, request)
        finally:
            with self._lock:
                self._finish(plan.instance_id, "Completed")
        return True

    async def terminate(self, instance_id: str, reason: str) -> None:
        with self._lock:
            self.terminated.append((instance_id, reason))
            if self._current(instance_id).status in ACTIVE:  # an ended instance: nothing to do (410)
                self._ending[instance_id] = self.polls_to_end

    async def purge_ended(self, before: datetime) -> int:
        with self._lock:
            self.purged_before.append(before)
            doomed = [instance_id for instance_id, at in self._ended_at.items() if at < before]
            for instance_id in doomed:
                del self._ended_at[instance_id]
                del self._happened[instance_id]
        return len(doomed)

    def _current(self, instance_id: str) -> Orchestration:
        if instance_id in self.states:
            return self.states[instance_id]
        return Orchestration(instance_id, self._happened.get(instance_id), self._ended_at.get(instance_id))

    def _finish(self, instance_id: str, status: str) -> None:
        assert status in ENDED
        self._happened[instance_id] = status
        self._ended_at[instance_id] = self.services.clock()


def with_reconcile(services: Services, **changes: Any) -> Services:
    """``services`` with reconciler settings changed (``max_redrives`` is a top-level setting)."""
    settings = services.settings
    top = {key: changes.pop(key) for key in ("max_redrives",) if key in changes}
    return dataclasses.replace(
        services,
        settings=dataclasses.replace(settings, reconcile=dataclasses.replace(settings.reconcile, **changes), **top),
    )
