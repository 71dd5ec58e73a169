"""Client-side pacing to an embeddings deployment's quota: one ``RateLimiter`` per process, every thread.

Azure OpenAI meters a deployment in tokens per minute (a running count of the tokens of accepted
requests, reset every minute) and requests per minute (evaluated over short periods, typically 1 or
10 seconds, so a burst is refused even when the minute's total would fit), and answers 429 with
``retry-after-ms`` / ``retry-after`` once over. Activities run concurrently in one worker process;
left alone they burst, collect 429s, and each SDK retry adds to the storm.

So every call first ``acquire``s its tokens here. Two token buckets, one for tokens and one for
requests, refill continuously at the quota's rate. Capacity is small on purpose: one quota-second
of tokens and a single request, so the limiter paces rather than bursts (a bucket holding a minute's
budget would spend it in the first instant, which the service's short evaluation periods punish).
A request costlier than the bucket still goes when the bucket is full, leaving it in debt, else it
could never run. Each caller *reserves* its start time under the lock and sleeps outside it: callers
are served in arrival order and nobody wakes up just to find the budget taken.

Waits longer than ``max_wait_s`` are not slept: ``acquire`` raises ``TransientError(retry_after=...)``
so the long wait happens in the orchestrator's durable timer, not in a worker. After a 429,
``penalize`` holds every thread until the service's ``retry-after`` has passed, including callers
already asleep on a slot reserved before the 429: they wake, see the pause, and queue again behind
it (their first reservation stays charged; after a 429 the client's picture was wrong anyway, and
erring slow is what the service asked for).

``minute_s`` is the length of the quota's minute: 60 in production; tests and benchmarks shorten it
to compress time, and the bucket capacities shrink with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from ingestion.errors import TransientError


class _Bucket:
    """A continuously refilled bucket, kept as the moment it is full again (reservations included).

    Keeping a time instead of a level (the "generic cell rate algorithm") makes reservations exact:
    a reservation for a later start, say after a penalty, is charged at that start, and the refill
    cap cannot quietly forgive it while the caller sleeps.
    """

    def __init__(self, rate_per_s: float, capacity: float, now: float) -> None:
        self.rate = rate_per_s
        self.capacity = capacity
        self.full_at = now  # a fresh process may start at once, but only with a small burst

    def ready_at(self, cost: float) -> float:
        """When the bucket holds enough for ``cost`` (a full bucket is enough for any cost)."""
        return self.full_at - (self.capacity - min(cost, self.capacity)) / self.rate

    def reserve(self, cost: float, start: float) -> None:
        self.full_at = max(self.full_at, start) + cost / self.rate


class RateLimiter:
    """Paces callers so that both ``tokens_per_minute`` and ``requests_per_minute`` hold; thread-safe."""

    def __init__(
        self,
        tokens_per_minute: float,
        requests_per_minute: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_wait_s: float = 30.0,
        minute_s: float = 60.0,
    ) -> None:
        if tokens_per_minute <= 0 or requests_per_minute <= 0:
            raise ValueError("the quota must be positive (tokens and requests per minute)")
        if minute_s <= 0 or max_wait_s < 0:
            raise ValueError("minute_s must be positive and max_wait_s not negative")
        self._clock = clock
        self._sleep = sleep
        self._max_wait_s = max_wait_s
        self._lock = threading.Lock()
        self._quota = (float(tokens_per_minute), float(requests_per_minute))
        now = clock()
        token_rate = tokens_per_minute / minute_s
        self._tokens = _Bucket(token_rate, token_rate * minute_s / 60.0, now)
        self._requests = _Bucket(requests_per_minute / minute_s, 1.0, now)
        self._paused_until = now
        self.penalties = 0  # penalize() calls (each 429 seen; the embedder may report one twice)

    @property
    def max_wait_s(self) -> float:
        return self._max_wait_s

    @property
    def tokens_per_minute(self) -> float:
        return self._quota[0]

    @property
    def requests_per_minute(self) -> float:
        return self._quota[1]

    def acquire(self, tokens: int) -> None:
        """Block until a request of ``tokens`` may be sent, or raise ``TransientError`` for a long wait."""
        cost = float(max(tokens, 0))
        while True:
            with self._lock:
                now = self._clock()
                start = max(now, self._paused_until, self._tokens.ready_at(cost), self._requests.ready_at(1.0))
                wait = start - now
                if wait > self._max_wait_s:
                    # Nothing is reserved: the caller gives the work back to the orchestrator.
                    raise TransientError(
                        f"embedding quota: the next slot is {wait:.1f} s away (this process waits at most "
                        f"{self._max_wait_s:.0f} s)",
                        retry_after=wait,
                        code="throttled",
                    )
                # Reserve now, in arrival order: later callers queue behind this start.
                self._tokens.reserve(cost, start)
                self._requests.reserve(1.0, start)
                penalties = self.penalties
            if wait > 0:
                self._sleep(wait)
            with self._lock:
                # A 429 that arrived while this caller slept, with a pause reaching past its slot: the
                # slot was chosen without knowing it, so going now would add to the storm. Queue again.
                if self.penalties == penalties or self._paused_until <= start:
                    return

    def penalize(self, retry_after_s: float) -> None:
        """The service answered 429: every thread holds off for ``retry_after_s`` from now."""
        with self._lock:
            self._paused_until = max(self._paused_until, self._clock() + max(retry_after_s, 0.0))
            self.penalties += 1

    def paused_for(self) -> float:
        """Seconds until a penalty ends (0 when none is in force)."""
        with self._lock:
            return max(0.0, self._paused_until - self._clock())
