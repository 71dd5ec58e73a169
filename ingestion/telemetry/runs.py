"""Trace identity of one orchestration run, derived from its instance id.

A Durable orchestrator must be deterministic, so it cannot open spans; and its activities run in
other invocations, often on other machines. What they all share is the instance id. So the run's
trace id and root span id are *derived* from it: every activity span names that root as its
(remote) parent, and the ``ingest_document`` span emitted when the outcome is recorded is created
*with* those ids (``RunIdGenerator``). One run is one trace, whichever process ran each stage.
"""

from __future__ import annotations

import hashlib
from contextvars import ContextVar

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

_FORCED: ContextVar[tuple[int, int] | None] = ContextVar("ingestion_forced_ids", default=None)


def run_ids(instance_id: str) -> tuple[int, int]:
    """(trace id, span id) of the run ``instance_id``: stable, never zero."""
    digest = hashlib.sha256(f"ingestion-run:{instance_id}".encode()).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:24], "big") or 1
    return trace_id, span_id


def run_context(instance_id: str | None) -> Context | None:
    """A context whose (remote) parent is the run's root span; ``None`` without an instance id."""
    if not instance_id:
        return None
    trace_id, span_id = run_ids(instance_id)
    parent = trace.SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED)
    )
    return trace.set_span_in_context(trace.NonRecordingSpan(parent))


def link_context(traceparent: str | None) -> trace.SpanContext | None:
    """The span context a W3C ``traceparent`` names (the Functions host's invocation), if valid."""
    parts = (traceparent or "").split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16:
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags & 1))


class RunIdGenerator(RandomIdGenerator):
    """Random ids, except for the span being created under ``forced_ids`` (the run's root)."""

    def generate_trace_id(self) -> int:
        forced = _FORCED.get()
        return forced[0] if forced else super().generate_trace_id()

    def generate_span_id(self) -> int:
        forced = _FORCED.get()
        if forced:
            _FORCED.set(None)  # only the one span: its children get ids of their own
            return forced[1]
        return super().generate_span_id()


def force_ids(instance_id: str) -> object:
    """Make the next span created in this context the run's root; returns the token to reset."""
    return _FORCED.set(run_ids(instance_id))


def reset_ids(token: object) -> None:
    _FORCED.reset(token)  # type: ignore[arg-type]
