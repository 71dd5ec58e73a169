"""Structured logs: one JSON object a line, with the run's correlation fields and trace ids.

Log records carry what the pipeline decided (stage, outcome, reason code, counts, names), never a
document's text: no code path logs content. As a second line of defence the formatter masks the
shapes of secrets that reach messages through error texts (keys in connection strings, SAS
signatures, bearer tokens, api-key headers), and ``ScrubbingLogProcessor`` does the same for what
is exported (the body, and the exception's message and stack trace, which travel as attributes).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime

from opentelemetry import trace
from opentelemetry.sdk._logs import LogRecordProcessor, ReadWriteLogRecord

from ingestion.telemetry import names
from ingestion.telemetry.runtime import correlation

_SECRETS = re.compile(
    r"(?i)((?:AccountKey|SharedAccessKey|InstrumentationKey|api[-_]?key|password|sig)\s*[=:]\s*\"?)[^;&\s\"',]+"
    r"|(Bearer\s+)[A-Za-z0-9._~+/=-]+"
)
# LogRecord's own attributes: anything else on a record came from ``extra=`` and is logged too.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def scrub(text: str) -> str:
    """``text`` with every secret-looking value replaced by ``***``."""
    return _SECRETS.sub(lambda match: (match.group(1) or match.group(2)) + "***", text)


class CorrelationFilter(logging.Filter):
    """Puts the run's correlation fields on each record (as attributes), for any handler's use:
    the JSON formatter prints them, OpenTelemetry's log handler exports them as attributes."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in correlation().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", doc_id, version, stage, instance_id, trace_id, span_id, ...}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
        }
        for key in names.CORRELATION:
            value = getattr(record, key, None) or correlation().get(key)
            if value:
                entry[key] = value
        for key, value in record.__dict__.items():
            if key not in _RESERVED and key not in entry and not key.startswith("_"):
                entry[key] = value if isinstance(value, int | float | bool) or value is None else scrub(str(value))
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        if record.exc_info:
            entry["exception"] = scrub(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


class ScrubbingLogProcessor(LogRecordProcessor):
    """Masks secrets in an exported record's body and string attributes (exception message and
    stack trace included). Added before the exporting processor, which then sends the masked record."""

    def on_emit(self, log_record: ReadWriteLogRecord) -> None:
        record = log_record.log_record
        if isinstance(record.body, str):
            record.body = scrub(record.body)
        attributes = record.attributes
        if attributes is None:
            return
        for key, value in list(attributes.items()):
            if isinstance(value, str):
                attributes[key] = scrub(value)  # type: ignore[index] # the SDK's attributes are mutable until emitted

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
