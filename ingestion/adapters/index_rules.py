"""What Azure AI Search would refuse in a document, checked before sending: every index adapter
(and the test fake) refuses the same records, with the same 400, so behaviour does not depend on
which index is behind the port."""

from __future__ import annotations

import math
import re

from ingestion.model import IndexRecord

_KEY = re.compile(r"[A-Za-z0-9_\-=]{1,1024}")  # Azure AI Search's document key rule


def key_problem(key: str) -> str | None:
    """Why the service would refuse ``key`` as a document key, or ``None`` when it is valid."""
    if _KEY.fullmatch(key):
        return None
    return f"invalid key {key[:80]!r}: letters, digits, '_', '-', '=' only, 1 to 1024 of them"


def record_problem(record: IndexRecord, dimensions: int) -> str | None:
    """Why the service would refuse ``record`` (HTTP 400), or ``None`` when it is acceptable."""
    if (problem := key_problem(record.id)) is not None:
        return problem
    if len(record.vector) != dimensions:
        return f"vector has {len(record.vector)} dimensions, the index expects {dimensions}"
    if not all(math.isfinite(x) for x in record.vector):
        return "vector holds a NaN or infinite value"
    return None
