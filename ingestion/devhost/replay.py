"""One orchestrator episode, host side of the Durable protocol: pure (no threads, no SQL, no clock).

An episode hands the SDK's ``handle`` the stored history plus exactly ONE new event (opened by an
OrchestratorStarted), then turns the returned state into history events, activity calls and timers.
One event per episode is what makes sequence ids easy to get right: the SDK allocates the next id
whenever a task is opened, and besides the tasks user code yields, a ``RetryAbleTask`` opens one
while the new event is processed (a retry timer when an attempt fails, the next attempt when that
timer fires). So in an episode the host-driven retry step takes the next id first, then the actions
the SDK added this time (all actions beyond ``Cursor.actions_seen``, compound ones flattened leaf by
leaf) take the following ids in order. Delivering several events at once would interleave the two.

The ``Cursor`` is the host's own bookkeeping, persisted with the instance: ids handed out, actions
seen, the retry tasks in flight (keyed by the id of their pending attempt or timer) and how many
``WaitForExternalEvent`` actions each event name has.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

Event = dict[str, Any]
Handle = Callable[[str], str]

OUT_OF_PROC_MARKER = "$OutOfProcData$:"
RUNNING, COMPLETED, FAILED, CONTINUED_AS_NEW = "Running", "Completed", "Failed", "ContinuedAsNew"


class EventType(IntEnum):
    """History event types (``azure.durable_functions.models.history.HistoryEventType``)."""

    EXECUTION_STARTED = 0
    EXECUTION_COMPLETED = 1
    EXECUTION_TERMINATED = 3
    TASK_SCHEDULED = 4
    TASK_COMPLETED = 5
    TASK_FAILED = 6
    TIMER_CREATED = 10
    TIMER_FIRED = 11
    ORCHESTRATOR_STARTED = 12
    ORCHESTRATOR_COMPLETED = 13
    EVENT_RAISED = 15


class ActionType(IntEnum):
    """The action types this engine runs (``models.actions.ActionType``); the rest fail the instance."""

    CALL_ACTIVITY = 0
    CALL_ACTIVITY_WITH_RETRY = 1
    CONTINUE_AS_NEW = 4
    CREATE_TIMER = 5
    WAIT_FOR_EXTERNAL_EVENT = 6
    WHEN_ANY = 11
    WHEN_ALL = 12


_RUNNABLE = frozenset(int(kind) for kind in ActionType)


class UnsupportedActionError(Exception):
    """The orchestrator asked for something this engine does not run (sub-orchestrations, entities, HTTP)."""


def iso(moment: datetime) -> str:
    """The one timestamp format: UTC, microseconds, ``Z`` (the SDK's own ``DATETIME_STRING_FORMAT``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def event(kind: EventType, timestamp: str, *, event_id: int = -1, **fields: Any) -> Event:
    return {"EventType": int(kind), "EventId": event_id, "IsPlayed": False, "Timestamp": timestamp, **fields}


@dataclass
class Cursor:
    """Host bookkeeping for one execution of an instance (reset by continue-as-new and overwrite)."""

    actions_seen: int = 0
    next_id: int = 0
    last_started: str | None = None
    retries: dict[str, dict[str, Any]] = field(default_factory=dict)
    waits: dict[str, int] = field(default_factory=dict)

    def take_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Cursor:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class ActivityCall:
    task_id: int
    name: str
    input: str | None


@dataclass(frozen=True)
class TimerCall:
    timer_id: int
    fire_at: str


@dataclass
class Episode:
    """What one episode decided; ``output`` is JSON text (the result, or the error message)."""

    events: list[Event]
    cursor: Cursor
    status: str = RUNNING
    activities: list[ActivityCall] = field(default_factory=list)
    timers: list[TimerCall] = field(default_factory=list)
    output: str | None = None
    custom_status: str | None = None
    new_input: str | None = None

    def schedule_activity(self, task_id: int, name: str, input_json: str | None, timestamp: str) -> None:
        self.events.append(event(EventType.TASK_SCHEDULED, timestamp, event_id=task_id, Name=name, Input=input_json))
        self.activities.append(ActivityCall(task_id, name, input_json))

    def schedule_timer(self, timer_id: int, fire_at: str, timestamp: str) -> None:
        self.events.append(event(EventType.TIMER_CREATED, timestamp, event_id=timer_id, FireAt=fire_at))
        self.timers.append(TimerCall(timer_id, fire_at))


def deliverable(message: Event, cursor: Cursor, history: Sequence[Event]) -> bool:
    """False for an external event nobody waits for yet: it stays queued until a wait is yielded.

    Delivering it early would work (the SDK defers it) but makes the SDK warn "Potential duplicate
    Task completion" and keep only the last of several early events with one name.
    """
    if message["EventType"] != EventType.EVENT_RAISED:
        return True
    name = message["Name"]
    delivered = sum(1 for e in history if e["EventType"] == EventType.EVENT_RAISED and e["Name"] == name)
    return cursor.waits.get(name, 0) > delivered


def run_episode(
    handle: Handle,
    *,
    instance_id: str,
    input_json: str | None,
    history: Sequence[Event],
    message: Event,
    cursor: Cursor,
    now: datetime,
) -> Episode:
    """Replay ``history`` + ``message`` through ``handle`` and decide what the host does next."""
    cursor = Cursor.from_json(cursor.to_json())  # the caller's copy stays as stored
    if cursor.last_started is not None:
        # current_utc_datetime only moves forward with OrchestratorStarted: keep them strictly increasing
        now = max(now, parse_iso(cursor.last_started) + timedelta(microseconds=1))
    stamp = cursor.last_started = iso(now)
    new_events = [event(EventType.ORCHESTRATOR_STARTED, stamp), message]
    episode = Episode(events=list(new_events), cursor=cursor)
    _retry_step(episode, message, now)
    context = {
        "history": [{**e, "IsPlayed": True} for e in history] + new_events,
        "input": input_json,
        "instanceId": instance_id,
        "isReplaying": bool(history),
        "parentInstanceId": None,
        "upperSchemaVersion": 1,
        "upperSchemaVersionNew": 2,
        "longRunningTimerIntervalDuration": "3.00:00:00",
        "maximumShortTimerDuration": "6.00:00:00",
    }
    try:
        state = json.loads(handle(json.dumps(context)))
    except Exception as exc:  # noqa: BLE001 -- whatever the orchestrator raised fails the instance
        text = str(exc)
        state = json.loads(text.split(OUT_OF_PROC_MARKER, 1)[1]) if OUT_OF_PROC_MARKER in text else {}
        error = state.get("error") or f"{type(exc).__name__}: {text}"
        return _finish(episode, state, FAILED, output=error, stamp=stamp)
    actions = [action for group in state.get("actions", []) for action in group]
    try:
        for action in actions[cursor.actions_seen :]:
            for leaf in _leaves(action):
                _schedule(episode, leaf, stamp)
    except UnsupportedActionError as exc:
        return _finish(episode, state, FAILED, output=str(exc), stamp=stamp)
    cursor.actions_seen = len(actions)
    cursor.waits = {}
    for action in actions:
        for leaf in _leaves(action):
            if leaf["actionType"] == ActionType.WAIT_FOR_EXTERNAL_EVENT:
                name = leaf["externalEventName"]
                cursor.waits[name] = cursor.waits.get(name, 0) + 1
    if not state.get("isDone"):
        return _finish(episode, state, RUNNING, output=None, stamp=stamp)
    if episode.new_input is not None:
        return _finish(episode, state, CONTINUED_AS_NEW, output=None, stamp=stamp)
    return _finish(episode, state, COMPLETED, output=state.get("output"), stamp=stamp)


def _finish(episode: Episode, state: dict[str, Any], status: str, *, output: Any, stamp: str) -> Episode:
    episode.status = status
    custom = state.get("customStatus")
    episode.custom_status = None if custom is None else json.dumps(custom)
    episode.events.append(event(EventType.ORCHESTRATOR_COMPLETED, stamp))
    if status in (COMPLETED, FAILED):
        episode.activities.clear()
        episode.timers.clear()
        episode.output = json.dumps(output)
        episode.events.append(
            event(EventType.EXECUTION_COMPLETED, stamp, OrchestrationStatus=status, Result=episode.output)
        )
    return episode


def _retry_step(episode: Episode, message: Event, now: datetime) -> None:
    """Advance the retry task (if any) that ``message`` belongs to, exactly as ``RetryAbleTask`` expects."""
    kind = message["EventType"]
    if kind in (EventType.TASK_COMPLETED, EventType.TASK_FAILED):
        key = str(message["TaskScheduledId"])
    elif kind == EventType.TIMER_FIRED:
        key = str(message["TimerId"])
    else:
        return
    retry = episode.cursor.retries.pop(key, None)
    if retry is None:
        return
    stamp = iso(now)
    if kind == EventType.TASK_FAILED:
        timer_id = episode.cursor.take_id()
        episode.schedule_timer(timer_id, iso(now + timedelta(milliseconds=retry["interval_ms"])), stamp)
        episode.cursor.retries[str(timer_id)] = retry
    elif kind == EventType.TIMER_FIRED and retry["attempt"] < retry["max_attempts"]:
        task_id = episode.cursor.take_id()
        retry["attempt"] += 1
        episode.schedule_activity(task_id, retry["name"], retry["input"], stamp)
        episode.cursor.retries[str(task_id)] = retry
    # A success, or the timer after the last attempt (the SDK then fails the task): the retry is over.


def _leaves(action: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if action["actionType"] in (ActionType.WHEN_ALL, ActionType.WHEN_ANY):
        for child in action["compoundActions"]:
            yield from _leaves(child)
    else:
        yield action


def _schedule(episode: Episode, leaf: dict[str, Any], stamp: str) -> None:
    kind = leaf["actionType"]
    cursor = episode.cursor
    if kind == ActionType.WAIT_FOR_EXTERNAL_EVENT:
        return  # matched by name, takes no id
    if kind not in _RUNNABLE:
        raise UnsupportedActionError(f"devhost does not run action type {kind} (sub-orchestration, entity or HTTP)")
    task_id = cursor.take_id()
    if kind == ActionType.CALL_ACTIVITY:
        episode.schedule_activity(task_id, leaf["functionName"], leaf.get("input"), stamp)
    elif kind == ActionType.CALL_ACTIVITY_WITH_RETRY:
        episode.schedule_activity(task_id, leaf["functionName"], leaf.get("input"), stamp)
        options = leaf["retryOptions"]
        cursor.retries[str(task_id)] = {
            "name": leaf["functionName"],
            "input": leaf.get("input"),
            "interval_ms": options["firstRetryIntervalInMilliseconds"],
            "max_attempts": options["maxNumberOfAttempts"],
            "attempt": 1,
        }
    elif kind == ActionType.CREATE_TIMER:
        # A cancelled timer still fires: the SDK resolves the cancelled task and nothing waits on it.
        episode.schedule_timer(task_id, iso(parse_iso(leaf["fireAt"])), stamp)
    elif kind == ActionType.CONTINUE_AS_NEW:
        episode.new_input = leaf.get("input") or "null"


_SUMMARIZED = frozenset(
    {
        EventType.EXECUTION_STARTED,
        EventType.TASK_COMPLETED,
        EventType.TASK_FAILED,
        EventType.TIMER_FIRED,
        EventType.EVENT_RAISED,
        EventType.EXECUTION_COMPLETED,
        EventType.EXECUTION_TERMINATED,
    }
)


def summarize(history: list[Event], *, show_output: bool) -> list[dict[str, Any]]:
    """History as Azure's status API shows it: outcomes only, named by function, oldest first."""
    scheduled = {e["EventId"]: e for e in history if e["EventType"] == EventType.TASK_SCHEDULED}
    summary: list[dict[str, Any]] = []
    for e in history:
        kind = e["EventType"]
        if kind not in _SUMMARIZED:
            continue  # the replay bookkeeping (episode markers, scheduling) stays internal
        item: dict[str, Any] = {"EventType": EventType(kind).name.title().replace("_", "")}
        if kind == EventType.EXECUTION_STARTED:
            item |= {"FunctionName": e["Name"]}
        elif kind in (EventType.TASK_COMPLETED, EventType.TASK_FAILED):
            task = scheduled.get(e["TaskScheduledId"], {})
            item |= {"FunctionName": task.get("Name"), "ScheduledTime": task.get("Timestamp")}
            item |= {"Result": json_or_none(e["Result"])} if kind == EventType.TASK_COMPLETED and show_output else {}
            item |= {"Reason": e["Reason"], "Details": e["Details"]} if kind == EventType.TASK_FAILED else {}
        elif kind == EventType.TIMER_FIRED:
            item |= {"FireAt": e["FireAt"]}
        elif kind == EventType.EVENT_RAISED:
            item |= {"Name": e["Name"]} | ({"Input": json_or_none(e["Input"])} if show_output else {})
        elif kind == EventType.EXECUTION_COMPLETED:
            item |= {"OrchestrationStatus": e["OrchestrationStatus"]}
            item |= {"Result": json_or_none(e["Result"])} if show_output else {}
        elif kind == EventType.EXECUTION_TERMINATED:
            item |= {"OrchestrationStatus": "Terminated", "Reason": e["Input"]}
        summary.append(item | {"Timestamp": e["Timestamp"]})
    return summary


def json_or_none(text: str | None) -> Any:
    return None if text is None else json.loads(text)
