"""One orchestrator episode, host side of the Durable protocol: pure (no threads, no SQL, no clock).

An episode hands the SDK's ``handle`` the stored history plus a batch of new messages (opened by an
OrchestratorStarted), then turns the returned state into history events, activity calls and timers.

Ids: the SDK gives the next sequence id to each task it opens, in the order it processes events.
User code opens the tasks of the actions it yields (action and ids together, leaf by leaf), and a
``RetryAbleTask`` opens one task without an action while processing its own message: a retry timer
when an attempt failed, the next attempt when a non-final retry timer fired; such a message never
resumes user code. So ``plan_batch`` delivers retry messages first (one id each, in order), and the
new action leaves (beyond ``Cursor.leaf_ids``) take the following ids in order. Every replayed leaf
is checked against the history event at its recorded id: a changed orchestrator fails its instance
as a "nondeterministic orchestration", as on Azure, instead of handing a result to the wrong task.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

Event = dict[str, Any]
Handle = Callable[[str], str]

OUT_OF_PROC_MARKER = "$OutOfProcData$:"
RUNNING, COMPLETED, FAILED, CONTINUED_AS_NEW = "Running", "Completed", "Failed", "ContinuedAsNew"
MAX_BATCH = 1000  # messages per episode


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
_CONTEXT: dict[str, Any] = {"parentInstanceId": None, "upperSchemaVersion": 1, "upperSchemaVersionNew": 2}
_CONTEXT |= {"longRunningTimerIntervalDuration": "3.00:00:00", "maximumShortTimerDuration": "6.00:00:00"}
# what a replayed leaf must find in history at its id
_RECORDED_AS = {
    ActionType.CALL_ACTIVITY: EventType.TASK_SCHEDULED,
    ActionType.CALL_ACTIVITY_WITH_RETRY: EventType.TASK_SCHEDULED,
    ActionType.CREATE_TIMER: EventType.TIMER_CREATED,
}


class UnsupportedActionError(Exception):
    """The orchestrator asked for something this engine does not run (sub-orchestrations, entities, HTTP)."""


class NondeterminismError(Exception):
    """A replayed action differs from the one history recorded at its sequence id."""


def iso(moment: datetime) -> str:
    """The one timestamp format: UTC, microseconds, ``Z`` (the SDK's own ``DATETIME_STRING_FORMAT``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def event(kind: EventType, timestamp: str, *, event_id: int = -1, **fields: Any) -> Event:
    return {"EventType": int(kind), "EventId": event_id, "IsPlayed": False, "Timestamp": timestamp, **fields}


@dataclass
class Cursor:
    """The host's bookkeeping for one execution, persisted with the instance.

    Ids handed out, the id of each action leaf that took one (-1: recorded by an older devhost that
    kept only ``actions_seen``; None until such a cursor is upgraded), the retry tasks in flight (by
    the id of their pending attempt or timer) and how many waits each external event name has.
    """

    next_id: int = 0
    last_started: str | None = None
    retries: dict[str, dict[str, Any]] = field(default_factory=dict)
    waits: dict[str, int] = field(default_factory=dict)
    leaf_ids: list[int] | None = field(default_factory=list)
    actions_seen: int = 0

    def take_id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Cursor:
        return cls(**{"leaf_ids": None} | json.loads(text))


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


def plan_batch(messages: Sequence[Event], cursor: Cursor, history: Sequence[Event]) -> list[int]:
    """Indexes of the queued ``messages`` to deliver in one episode, in delivery order.

    Retry messages first (see module doc), then the others in queue order. An external event nobody
    waits for yet stays queued until a wait is yielded: delivered early, the SDK would warn "Potential
    duplicate Task completion" and keep only the last of several early events with one name.
    """
    if messages and messages[0]["EventType"] == EventType.EXECUTION_STARTED:
        return [0]  # an execution starts alone: nothing can be scheduled before it
    raised = Counter(e["Name"] for e in history if e["EventType"] == EventType.EVENT_RAISED)
    retry_steps: list[int] = []
    others: list[int] = []
    for index, message in enumerate(messages[:MAX_BATCH]):
        kind, retry = message["EventType"], cursor.retries.get(_retry_key(message))
        if kind == EventType.EVENT_RAISED:
            if cursor.waits.get(message["Name"], 0) <= raised[message["Name"]]:
                continue
            raised[message["Name"]] += 1
        last_timer = kind == EventType.TIMER_FIRED and retry is not None and retry["attempt"] >= retry["max_attempts"]
        takes_id = retry is not None and kind in (EventType.TASK_FAILED, EventType.TIMER_FIRED) and not last_timer
        (retry_steps if takes_id else others).append(index)
    return retry_steps + others


def run_episode(
    handle: Handle,
    *,
    instance_id: str,
    input_json: str | None,
    history: Sequence[Event],
    messages: Sequence[Event],
    cursor: Cursor,
    now: datetime,
    custom_status: str | None = None,
) -> Episode:
    """Replay ``history`` + ``messages`` (as ``plan_batch`` ordered them) and decide what the host does next.

    ``custom_status`` (the stored one) stays when the orchestrator fails without reporting its state.
    """
    cursor = Cursor.from_json(cursor.to_json())  # the caller's copy stays as stored
    if cursor.last_started is not None:
        # current_utc_datetime only moves forward with OrchestratorStarted: keep them strictly increasing
        now = max(now, parse_iso(cursor.last_started) + timedelta(microseconds=1))
    stamp = cursor.last_started = iso(now)
    new_events = [event(EventType.ORCHESTRATOR_STARTED, stamp), *messages]
    episode = Episode(events=list(new_events), cursor=cursor, custom_status=custom_status)
    for message in messages:
        _retry_step(episode, message, now)
    played = [{**e, "IsPlayed": True} for e in history]
    context = {"history": played + new_events, "input": input_json, "instanceId": instance_id, **_CONTEXT}
    context["isReplaying"] = bool(history)
    try:
        state = json.loads(handle(json.dumps(context)))
    except BaseException as exc:  # noqa: BLE001 -- whatever the orchestrator raised (SystemExit too) fails it
        text = str(exc)
        error = f"{type(exc).__name__}: {text}"
        if OUT_OF_PROC_MARKER not in text:
            return _finish(episode, None, FAILED, output=error, stamp=stamp)
        state = json.loads(text.split(OUT_OF_PROC_MARKER, 1)[1])
        return _finish(episode, state, FAILED, output=state.get("error") or error, stamp=stamp)
    try:
        _apply_actions(episode, [a for group in state.get("actions", []) for a in group], history, stamp)
    except (UnsupportedActionError, NondeterminismError) as exc:
        return _finish(episode, state, FAILED, output=str(exc), stamp=stamp)
    if not state.get("isDone"):
        return _finish(episode, state, RUNNING, output=None, stamp=stamp)
    if episode.new_input is not None:
        return _finish(episode, state, CONTINUED_AS_NEW, output=None, stamp=stamp)
    return _finish(episode, state, COMPLETED, output=state.get("output"), stamp=stamp)


def _apply_actions(episode: Episode, actions: list[dict[str, Any]], history: Sequence[Event], stamp: str) -> None:
    """Check the leaves replayed against history, schedule the new ones, count the waits."""
    cursor = episode.cursor
    leaves = [leaf for action in actions for leaf in _leaves(action)]
    waits = [leaf["externalEventName"] for leaf in leaves if leaf["actionType"] == ActionType.WAIT_FOR_EXTERNAL_EVENT]
    if cursor.leaf_ids is None:  # an older devhost's cursor: the leaves it saw keep unchecked ids
        seen = [leaf for action in actions[: cursor.actions_seen] for leaf in _leaves(action)]
        cursor.leaf_ids = [-1 for leaf in seen if leaf["actionType"] != ActionType.WAIT_FOR_EXTERNAL_EVENT]
    leaf_ids = cursor.leaf_ids
    kinds = (EventType.TASK_SCHEDULED, EventType.TIMER_CREATED)
    recorded = {e["EventId"]: e for e in history if e["EventType"] in kinds}
    taking_ids = [leaf for leaf in leaves if leaf["actionType"] != ActionType.WAIT_FOR_EXTERNAL_EVENT]
    for position, leaf in enumerate(taking_ids):
        if position < len(leaf_ids):
            _check_replayed(leaf, leaf_ids[position], recorded)
        else:
            leaf_ids.append(_schedule(episode, leaf, stamp))
    cursor.waits = dict(Counter(waits))


def _finish(episode: Episode, state: dict[str, Any] | None, status: str, *, output: Any, stamp: str) -> Episode:
    """``state`` None: the orchestrator failed without reporting its state, so its custom status stays."""
    episode.status = status
    if state is not None:
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


def _retry_key(message: Event) -> str:
    """The id a completion points back to ("None" for other messages)."""
    return str(message.get("TaskScheduledId", message.get("TimerId")))


def _retry_step(episode: Episode, message: Event, now: datetime) -> None:
    """Advance the retry task (if any) that ``message`` belongs to, exactly as ``RetryAbleTask`` expects."""
    kind = message["EventType"]
    if kind not in (EventType.TASK_COMPLETED, EventType.TASK_FAILED, EventType.TIMER_FIRED):
        return
    retry = episode.cursor.retries.pop(_retry_key(message), None)
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


def _check_replayed(leaf: dict[str, Any], task_id: int, recorded: dict[int, Event]) -> None:
    """Raise NondeterminismError unless history recorded this leaf at ``task_id`` (-1: unknown, not checked)."""
    found, kind = recorded.get(task_id), leaf["actionType"]
    if task_id < 0 or (
        found is not None
        and found["EventType"] == _RECORDED_AS.get(kind)
        and found.get("Name") == leaf.get("functionName")
    ):
        return
    was = "nothing" if found is None else _named(EventType(found["EventType"]).name, found.get("Name"))
    now = _named(ActionType(kind).name if kind in _RUNNABLE else f"action type {kind}", leaf.get("functionName"))
    raise NondeterminismError(
        f"nondeterministic orchestration: history has {was} at sequence id {task_id}, but the replay"
        f" scheduled {now} there. Was the orchestrator code changed while this instance was running?"
    )


def _named(kind: str, name: str | None) -> str:
    """``TASK_SCHEDULED``, ``"echo"`` -> ``TaskScheduled 'echo'``."""
    pascal = kind.title().replace("_", "") if kind.isupper() else kind
    return pascal if name is None else f"{pascal} {name!r}"


def _schedule(episode: Episode, leaf: dict[str, Any], stamp: str) -> int:
    """Schedule a new leaf (one that takes an id); its id."""
    kind = leaf["actionType"]
    cursor = episode.cursor
    if kind not in _RUNNABLE:
        raise UnsupportedActionError(f"devhost does not run action type {kind} (sub-orchestration, entity or HTTP)")
    task_id = cursor.take_id()
    if kind in (ActionType.CALL_ACTIVITY, ActionType.CALL_ACTIVITY_WITH_RETRY):
        episode.schedule_activity(task_id, leaf["functionName"], leaf.get("input"), stamp)
    if kind == ActionType.CALL_ACTIVITY_WITH_RETRY:
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
    return task_id
