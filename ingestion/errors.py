"""The project's error tree: every failure a stage can report, and what it means for the job.

    IngestionError
    ├── TransientError        may succeed later; retried with backoff, never terminal
    │                         (``retry_after`` seconds when the service said how long to wait)
    ├── PermanentError        retrying cannot help; carries a ``ReasonCode`` a person can act on
    └── Superseded            the job moved on to a newer version; the stage stops without writing
    ConcurrencyError          an ETag-guarded write lost a race (``JobStore``); re-read and retry
    InvalidTransition         a job status change that the state machine does not allow (a bug)

Adapters translate every SDK or library exception into one of these, so the core never sees a
foreign exception type. ``to_payload`` gives the small JSON envelope that crosses process and
Durable boundaries, where exception types do not survive.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ReasonCode(StrEnum):
    """Why a file cannot be ingested. Stable strings: they appear in job documents and the API."""

    UNSUPPORTED_TYPE = "unsupported_type"  # not a format we extract text from (image, audio, .doc)
    ENCRYPTED = "encrypted"  # password-protected PDF or Office file
    CORRUPT = "corrupt"  # the file is damaged or is not what its structure claims
    EMPTY = "empty"  # zero bytes, or no text at all in a format that should have some
    TOO_LARGE = "too_large"  # over the size limit (file, or an Office part when unzipped)
    TOO_MANY_PAGES = "too_many_pages"  # over the page limit
    NO_TEXT_LAYER = "no_text_layer"  # a PDF whose pages are images only (needs OCR)
    PARSE_TIMEOUT = "parse_timeout"  # the parser ran past its wall-clock limit and was killed
    PARSE_MEMORY = "parse_memory"  # the parser exceeded its memory cap and was killed
    PARSE_FAILED = "parse_failed"  # the parser raised an unexpected error (message says which)
    NOT_FOUND = "not_found"  # the blob is gone
    INDEX_REJECTED = "index_rejected"  # the search index refused a chunk (400/404 per document)
    EMBED_REJECTED = "embed_rejected"  # the embedding service refused an input
    INVALID_NAME = "invalid_name"  # a blob name that cannot be represented safely


class IngestionError(Exception):
    """Base of every error a stage reports."""

    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_payload(self) -> dict[str, Any]:
        """The JSON envelope for an expected failure (see ARCHITECTURE.md, "retry in the right layer")."""
        return {"ok": False, "kind": self.kind, "code": None, "message": self.message}


class TransientError(IngestionError):
    """A failure that may go away: throttling, timeouts, 5xx, a lost connection."""

    kind = "transient"

    def __init__(self, message: str, *, retry_after: float | None = None, code: str = "transient") -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.code = code

    def to_payload(self) -> dict[str, Any]:
        return {
            "ok": False,
            "kind": self.kind,
            "code": self.code,
            "message": self.message,
            "retry_after_s": self.retry_after,
        }


class PermanentError(IngestionError):
    """A failure that retrying cannot fix; the job ends with ``reason`` for a person to read."""

    kind = "permanent"

    def __init__(self, reason: ReasonCode, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    def to_payload(self) -> dict[str, Any]:
        return {"ok": False, "kind": self.kind, "code": self.reason.value, "message": self.message}


class Superseded(IngestionError):
    """The job's current version is no longer the one this stage was asked to work on."""

    kind = "superseded"


class ConcurrencyError(Exception):
    """An ETag-guarded write found the document changed (HTTP 412) or already existing (409)."""


class InvalidTransition(Exception):
    """A job status change outside ``model.TRANSITIONS``."""


def from_payload(payload: dict[str, Any]) -> IngestionError:
    """Rebuild an error from its envelope (the inverse of ``to_payload``)."""
    kind = payload.get("kind")
    message = str(payload.get("message", ""))
    if kind == "transient":
        retry_after = payload.get("retry_after_s")
        return TransientError(
            message,
            retry_after=float(retry_after) if retry_after is not None else None,
            code=str(payload.get("code") or "transient"),
        )
    if kind == "permanent":
        return PermanentError(ReasonCode(payload["code"]), message)
    if kind == "superseded":
        return Superseded(message)
    raise ValueError(f"not an error envelope: {payload!r}")
