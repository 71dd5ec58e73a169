"""The retry policy for transient failures, shared by the Durable orchestrator and the local runner.

Exponential backoff with "equal jitter" (between half and all of each exponential step), never less
than the service's ``retry_after``. When the attempts are spent, or the wait asked for is longer than
``max_delay_s``, the job goes to ``retry_later`` (never a terminal state) and a re-drive picks it up
after ``retry_later_s``. The jitter is an argument, not a random draw, because an orchestrator must
be deterministic: it derives the jitter from its instance id and the attempt number (``jitter_for``).

The Azure SDKs also retry inside one call (capped where their clients are built); ``SDK_RETRIES``
counts those retries per service, so the retry figures include them.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from ingestion.model import stable_hash


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4  # per stage, the first try included (INGEST_RETRY_ATTEMPTS)
    first_delay_s: float = 2.0  # INGEST_RETRY_FIRST_DELAY_S
    max_delay_s: float = 60.0  # longest wait between attempts; longer ones go to retry_later (INGEST_RETRY_MAX_DELAY_S)
    retry_later_s: float = 300.0  # when a re-drive may pick the job up again, at the soonest (INGEST_RETRY_LATER_S)

    def delay(self, attempt: int, jitter: float) -> float:
        """The wait after failed attempt ``attempt`` (1-based), for ``jitter`` in [0, 1)."""
        step = min(self.max_delay_s, self.first_delay_s * float(2 ** (attempt - 1)))
        return step / 2 + jitter * step / 2

    def next_delay(self, attempt: int, retry_after: float | None, jitter: float) -> float | None:
        """How long to wait before attempt ``attempt + 1``, or ``None`` to give up to ``retry_later``."""
        wait = max(self.delay(attempt, jitter), retry_after or 0.0)
        if attempt >= self.attempts or wait > self.max_delay_s:
            return None
        return wait

    def retry_later_delay(self, retry_after: float | None) -> float:
        return max(self.retry_later_s, retry_after or 0.0)

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> RetryPolicy:
        return cls(
            attempts=int(data["attempts"]),
            first_delay_s=float(data["first_delay_s"]),
            max_delay_s=float(data["max_delay_s"]),
            retry_later_s=float(data["retry_later_s"]),
        )


def jitter_for(*parts: str) -> float:
    """A number in [0, 1) that depends only on ``parts``: reproducible jitter."""
    return int(stable_hash(*parts, length=8), 16) / float(16**8)


class RetryCounts:
    """Thread-safe counts by name: the retries each SDK made (``SDK_RETRIES``), the reconciler's actions."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, service: str, retries: int = 1) -> None:
        with self._lock:
            self._counts[service] += retries

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


SDK_RETRIES = RetryCounts()
THROTTLED = RetryCounts()  # 429 responses seen, by service (each SDK retry or our own retry follows one)
