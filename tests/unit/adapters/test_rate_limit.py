"""RateLimiter: pacing to tokens and requests per minute, penalties, long waits refused; fake time only."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from ingestion.adapters.rate_limit import RateLimiter
from ingestion.errors import TransientError


class FakeTime:
    """A clock that only moves when ``sleep`` is called (or ``advance``), recording every sleep."""

    def __init__(self, *, sleeping_moves_time: bool = True) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.during_next_sleep: Callable[[], None] | None = None  # runs once, as a sleep begins
        self._moves = sleeping_moves_time
        self._lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        hook, self.during_next_sleep = self.during_next_sleep, None
        if hook is not None:
            hook()
        with self._lock:
            self.sleeps.append(seconds)
            if self._moves:
                self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limiter(time: FakeTime, tpm: float = 6000, rpm: float = 6000, **options: float) -> RateLimiter:
    """A limiter on fake time; 6,000 tokens per minute is 100 tokens per second."""
    return RateLimiter(tpm, rpm, clock=time.clock, sleep=time.sleep, **options)


def test_a_request_within_the_bucket_goes_at_once() -> None:
    """A fresh limiter lets the first request through without sleeping."""
    time = FakeTime()
    limiter(time).acquire(80)
    assert time.sleeps == []


def test_tokens_are_paced_to_the_quota() -> None:
    """Ten requests of one second's tokens take nine seconds: the first is free, then one per second."""
    time = FakeTime()
    paced = limiter(time)
    for _ in range(10):
        paced.acquire(100)
    assert time.sleeps == pytest.approx([1.0] * 9)
    assert time.now == pytest.approx(1009.0)


def test_requests_are_paced_to_the_quota() -> None:
    """With 60 requests per minute, tiny requests still go one per second (no burst of a minute's calls)."""
    time = FakeTime()
    paced = limiter(time, rpm=60)
    for _ in range(5):
        paced.acquire(1)
    assert time.sleeps == pytest.approx([1.0] * 4)


def test_the_tighter_budget_decides() -> None:
    """When tokens and requests both constrain, each request waits for the later of the two."""
    time = FakeTime()
    paced = limiter(time, tpm=600, rpm=30)  # 10 tokens/s, one request per 2 s
    paced.acquire(10)
    paced.acquire(50)  # tokens are ready after 1 s, the next request slot after 2 s: 2 s; 40 tokens owed
    paced.acquire(10)  # the next request slot is 2 s away, but the debt needs 5 s: 5 s
    assert time.sleeps == pytest.approx([2.0, 5.0])


def test_an_idle_limiter_refills_only_its_small_capacity() -> None:
    """After a long idle spell only one second's tokens are banked, never a minute's burst."""
    time = FakeTime()
    paced = limiter(time)
    time.advance(600)
    for _ in range(3):
        paced.acquire(100)
    assert time.sleeps == pytest.approx([1.0, 1.0])


def test_a_request_larger_than_the_bucket_goes_when_it_is_full_and_leaves_a_debt() -> None:
    """A request costing more than the capacity waits for a full bucket, then the debt delays the next."""
    time = FakeTime()
    paced = limiter(time)  # capacity: 100 tokens
    paced.acquire(30)
    paced.acquire(500)  # waits until the bucket is full again (0.3 s), then leaves 400 owed
    paced.acquire(100)  # the debt (400) and its own 100 take 5 s to refill
    assert time.sleeps == pytest.approx([0.3, 5.0])


def test_a_wait_longer_than_max_wait_raises_with_retry_after_and_reserves_nothing() -> None:
    """A long wait is not slept: TransientError carries it, and the refused request takes no budget."""
    time = FakeTime(sleeping_moves_time=False)
    paced = limiter(time, max_wait_s=3.0)
    for _ in range(4):
        paced.acquire(100)  # slots at 0, 1, 2 and 3 s
    with pytest.raises(TransientError) as caught:
        paced.acquire(100)
    assert caught.value.retry_after == pytest.approx(4.0)
    assert caught.value.code == "throttled"
    assert time.sleeps == pytest.approx([1.0, 2.0, 3.0])
    time.advance(4.0)
    paced.acquire(100)  # the slot at 4 s is still free: the refused request never took it
    assert time.sleeps == pytest.approx([1.0, 2.0, 3.0])


def test_penalize_pauses_every_caller_until_the_retry_after() -> None:
    """After a 429 the next caller sleeps out the service's retry-after, even with budget left."""
    time = FakeTime()
    paced = limiter(time)
    paced.penalize(4.0)
    assert paced.paused_for() == pytest.approx(4.0)
    paced.acquire(10)
    assert time.sleeps == pytest.approx([4.0])
    assert paced.penalties == 1
    assert paced.paused_for() == 0.0


def test_a_penalty_longer_than_max_wait_is_handed_back() -> None:
    """A retry-after beyond max_wait_s makes acquire raise with the remaining pause as retry_after."""
    time = FakeTime()
    paced = limiter(time, max_wait_s=30.0)
    paced.penalize(45.0)
    time.advance(5.0)
    with pytest.raises(TransientError) as caught:
        paced.acquire(10)
    assert caught.value.retry_after == pytest.approx(40.0)


def test_penalties_never_shorten_a_pause() -> None:
    """A shorter retry-after arriving later does not cut an earlier, longer pause."""
    time = FakeTime()
    paced = limiter(time)
    paced.penalize(10.0)
    paced.penalize(2.0)
    assert paced.paused_for() == pytest.approx(10.0)


def test_a_429_while_a_caller_sleeps_holds_that_caller_too() -> None:
    """A caller whose slot was reserved before a 429 does not go inside the pause: it queues after it."""
    time = FakeTime()
    paced = limiter(time)
    paced.acquire(100)  # goes at once; the next slot is at +1 s
    time.during_next_sleep = lambda: paced.penalize(5.0)  # another thread's request is throttled meanwhile
    paced.acquire(100)
    assert time.now >= 1005.0  # never inside the pause that began while it slept
    assert paced.paused_for() == 0.0


def test_fractional_quotas_are_kept() -> None:
    """1.9 requests per minute is not rounded down to 1: slots come every 60/1.9 s."""
    time = FakeTime()
    paced = limiter(time, rpm=1.9, max_wait_s=60.0)
    paced.acquire(1)
    paced.acquire(1)
    assert paced.requests_per_minute == pytest.approx(1.9)
    assert time.sleeps == pytest.approx([60 / 1.9])


def test_requests_reserved_during_a_pause_are_charged_at_its_end() -> None:
    """Callers queued behind a penalty are spaced out after it, not released as one burst."""
    time = FakeTime(sleeping_moves_time=False)
    paced = limiter(time)
    paced.penalize(5.0)
    for _ in range(3):
        paced.acquire(100)
    assert time.sleeps == pytest.approx([5.0, 6.0, 7.0])


def test_concurrent_callers_are_queued_one_slot_each() -> None:
    """Eight threads asking at the same moment get eight distinct slots, one second apart."""
    time = FakeTime(sleeping_moves_time=False)
    paced = limiter(time)
    threads = [threading.Thread(target=paced.acquire, args=(100,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(time.sleeps) == pytest.approx([1.0 * n for n in range(1, 8)])  # the first went at once


def test_a_short_minute_compresses_time() -> None:
    """minute_s=6 makes 6,000 tokens per minute 1,000 tokens per second."""
    time = FakeTime()
    paced = limiter(time, minute_s=6.0)  # capacity: a tenth of a second's tokens (one quota-second)
    paced.acquire(100)
    paced.acquire(1000)  # goes when the bucket is full again (0.1 s), leaving 900 owed
    paced.acquire(100)
    assert time.sleeps == pytest.approx([0.1, 1.0])


def test_the_quota_must_be_positive() -> None:
    """A zero quota is a configuration error, not an endless wait."""
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0, 10)
