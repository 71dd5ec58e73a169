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

from ingestion.errors import IngestionError
from ingestion.model import DocumentRef
from ingestion.ports import DeadLetter
from ingestion.reconcile import Action, Rule
from ingestion.reconcile_apply import Orchestrations, note_on_trail, outcome_of, start_run
from ingestion.services import Services
from ingestion.triggers import BLOB_DELETED, blob_from_subject, plan_ingestion, remove_blob

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
        # A fault or a bug with one letter fails it alone: it is kept for the next pass.
        outcome = await outcome_of(action, _handle(services, orchestrations, letter, container, action))
        (kept if outcome.startswith("failed") else done).add(letter.key)
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
        outcome = "nothing to start" if plan is None else await start_run(orchestrations, plan)
    # A letter's reason quotes the event's own, which may be long: the trail keeps its head.
    await asyncio.to_thread(note_on_trail, services, action.doc_id, action.note[:500])
    return outcome


def _reason(letter: DeadLetter) -> str:
    kind = letter.event_type.rsplit(".", 1)[-1] or "event"
    return f"{kind} dead-lettered after {letter.attempts} attempts: {letter.reason}"
