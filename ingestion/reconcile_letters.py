"""The reconciler's dead-letter rule: events that never reached (or kept failing in) the app.

Event Grid dead-letters an event it could not deliver; the local host records one whose function
kept failing. Either way the file may be unknown to its job document. Each letter is handled as
its event would have been (a created blob registered and started, a deleted one removed), then
forgotten; a letter whose handling fails stays for the next pass. A file whose very properties
cannot be read ends ``needs_review`` with the reason (``plan_ingestion`` records it): that is the
flag for a file that is itself the poison. The blob and job sweeps would find these files anyway;
this rule handles them first and empties the dead-letter store, so operators see what is left.
A letter is removed only once it was handled (a planned or failed one stays), and a store that
cannot be read or written leaves the letters for the next pass without stopping this one.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from ingestion.errors import IngestionError
from ingestion.model import DocumentRef
from ingestion.ports import DeadLetter
from ingestion.reconcile import Action, Rule, noted
from ingestion.services import Services
from ingestion.stages.common import rewrite_job
from ingestion.triggers import BLOB_DELETED, blob_from_subject, plan_ingestion, remove_blob

if TYPE_CHECKING:
    from ingestion.reconcile_apply import Orchestrations

log = logging.getLogger(__name__)


async def redrive_dead_letters(
    services: Services, orchestrations: Orchestrations | None, *, dry_run: bool, limit: int
) -> list[tuple[Action, str]]:
    """Handle up to ``limit`` dead letters; ``(action, outcome)`` for each. Never raises for a fault:
    an unreachable dead-letter store must not stop the pass's sweeps (they find these files anyway)."""
    store = services.dead_letters
    if store is None:
        return []
    try:
        letters = await asyncio.to_thread(store.list, limit)
    except IngestionError as error:
        log.warning("dead letters unreadable, left for the next pass: %s", error.message)
        return []
    results: list[tuple[Action, str]] = []
    done: set[str] = set()
    kept: set[str] = set()  # a stored letter may hold several events: it goes only when all are handled
    for letter in letters:
        try:
            container, path = blob_from_subject(letter.subject)
        except ValueError:
            log.warning("dead letter %s is not about a blob (%r): dropped", letter.key, letter.subject)
            done.add(letter.key)
            continue
        action = Action(Rule.DEAD_LETTER, DocumentRef(container, path).doc_id, path, _reason(letter))
        if dry_run or orchestrations is None:
            kept.add(letter.key)  # planned, not handled
            results.append((action, "planned"))
            continue
        try:
            outcome = await _handle(services, orchestrations, letter, container, action)
        except IngestionError as error:
            outcome = f"failed: {error.kind}: {error.message}"
            kept.add(letter.key)
        except Exception as error:  # a bug with one letter must not stop the others, nor the pass
            log.exception("reconcile %s failed unexpectedly", action.describe())
            outcome = f"failed: unexpected {type(error).__name__}: {error}"
            kept.add(letter.key)
        else:
            done.add(letter.key)
        log.info("reconcile %s -> %s", action.describe(), outcome)
        results.append((action, outcome))
    if not dry_run and (handled := done - kept):
        try:
            await asyncio.to_thread(store.remove, handled)
        except IngestionError as error:  # handling is idempotent: the next pass finds the work done
            log.warning("handled dead letters not removed, left for the next pass: %s", error.message)
    return results


async def _handle(
    services: Services, orchestrations: Orchestrations, letter: DeadLetter, container: str, action: Action
) -> str:
    if letter.event_type == BLOB_DELETED:
        outcome = await asyncio.to_thread(remove_blob, services, container, action.path)
    else:
        plan = await asyncio.to_thread(plan_ingestion, services, container, action.path)
        if plan is None:
            outcome = "nothing to start"
        else:
            started = await orchestrations.start(plan)
            outcome = f"started {plan.instance_id}" if started else f"{plan.instance_id} already running"
    await asyncio.to_thread(_note, services, action)
    return outcome


def _reason(letter: DeadLetter) -> str:
    kind = letter.event_type.rsplit(".", 1)[-1] or "event"
    return f"{kind} dead-lettered after {letter.attempts} attempts: {letter.reason}"


def _note(services: Services, action: Action) -> None:
    """Put the rule on the job's trail (when there is a job), so an operator sees why it moved. A note,
    not a transition: a transition to the same status would move its stage time, and with it the
    instance id a duplicate event derives, which would then start a second run of the same version."""
    note = f"reconcile: {action.rule}: {action.reason}"[:500]
    rewrite_job(services, action.doc_id, lambda job: None if job is None else noted(job, services.clock(), note))
