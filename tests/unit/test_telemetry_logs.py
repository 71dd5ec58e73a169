"""Structured logs: JSON lines with the run's correlation fields, and secrets masked on the console
and in what is exported."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from ingestion.telemetry import correlated, names
from ingestion.telemetry.logs import CorrelationFilter, JsonFormatter, ScrubbingLogProcessor, scrub

SECRETS = [
    (
        "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0a2V5PT0=;EndpointSuffix=x",
        "c2VjcmV0a2V5PT0=",
    ),
    ("https://acct.blob.core.windows.net/c/b?sv=2024&sig=AbC%2Fdef%3D&se=2026", "AbC%2Fdef%3D"),
    ("Authorization: Bearer eyJ0eXAiOiJKV1Qi.eyJzdWIiOiIx.sig-part", "eyJ0eXAiOiJKV1Qi"),
    ("request failed: api-key: 0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef"),
    ("InstrumentationKey=00000000-1111-2222-3333-444444444444;IngestionEndpoint=x", "1111-2222"),
]


@pytest.mark.parametrize(("text", "secret"), SECRETS)
def test_secret_shapes_are_masked(text: str, secret: str) -> None:
    """Account keys, SAS signatures, bearer tokens, api keys and instrumentation keys become ***."""
    masked = scrub(text)
    assert secret not in masked
    assert "***" in masked


def test_ordinary_text_is_left_alone() -> None:
    """Doc ids, reason codes and file names pass unchanged."""
    text = "a7a5ebde parse_document: permanent: corrupt (handbook v2.pdf, 3 pages)"
    assert scrub(text) == text


def _record(message: str, *args: object, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    record = logging.LogRecord("ingestion.activities", logging.WARNING, __file__, 1, message, args, exc_info)
    CorrelationFilter().filter(record)
    return record


def test_a_json_line_carries_the_run_and_masks_secrets() -> None:
    """Inside a run, a record is one JSON object with doc_id, version, stage and instance_id."""
    fields = {names.DOC_ID: "doc-1", names.VERSION: '"0x1"', names.STAGE: "embed_chunks", names.INSTANCE_ID: "doc-1-a"}
    with correlated(fields):
        line = JsonFormatter().format(_record("retrying with %s", "AccountKey=abc123;"))
    entry = json.loads(line)
    assert entry | fields == entry  # every correlation field, as given
    assert entry["level"] == "WARNING" and entry["logger"] == "ingestion.activities"
    assert "abc123" not in line and entry["message"] == "retrying with AccountKey=***;"


def test_exported_records_are_masked_body_and_exception_alike() -> None:
    """The exporter receives the masked message, exception message and stack trace."""
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(ScrubbingLogProcessor())
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    handler = LoggingHandler(logger_provider=provider)
    try:
        raise ValueError("connect failed: AccountKey=topsecret==;")
    except ValueError as error:
        handler.emit(_record("upload to %s failed", "https://x/c?sig=SIGNATURE1", exc=error))
    provider.shutdown()
    (exported,) = exporter.get_finished_logs()
    everything = f"{exported.log_record.body} {dict(exported.log_record.attributes or {})}"
    assert "SIGNATURE1" not in everything and "topsecret" not in everything
    assert "sig=***" in str(exported.log_record.body)
    assert "exception.stacktrace" in (exported.log_record.attributes or {})
