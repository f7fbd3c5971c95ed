"""RequestBudget: pacing under declared limits, correction by the server, pauses, order, deadlines.

The pacing tests drive the budget's non-blocking core with fake clocks, so that an hour of
traffic is checked in milliseconds; the waiting drivers (async and threads) are tested with
real, short waits.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections import deque

import pytest

from airflow_provider_nyne.client.budget import Permit, RequestBudget
from airflow_provider_nyne.client.errors import NyneRateLimitError
from airflow_provider_nyne.client.ratelimit import UNLIMITED, RateLimits

WALL0 = 1_700_000_000.0


class Clock:
    """A fake monotonic clock, and the matching wall clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL0 + self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds


def make(clock: Clock, **limits: int | float | None) -> RequestBudget:
    return RequestBudget(RateLimits(**limits), clock=clock, wall=clock.wall)  # type: ignore[arg-type]


def grant(budget: RequestBudget, clock: Clock, due: float | None = None) -> Permit:
    """Acquire on the fake clock, advancing it as the budget says."""
    entry = budget._enqueue(clock() if due is None else due)
    while not isinstance(entry, Permit):
        step = budget._try(entry)
        if isinstance(step, Permit):
            return step
        assert step != math.inf, "nothing would ever wake this waiter"
        clock.advance(step)
    return entry


def take(
    budget: RequestBudget, clock: Clock, status: int = 200, headers: dict[str, str] | None = None
) -> float:
    """Acquire on the fake clock, then settle with ``status`` and ``headers``; return the grant time."""
    permit = grant(budget, clock)
    budget.settle(permit, status=status, headers=headers or {})
    return permit.granted_at


def max_in_any_window(times: list[float], length: float) -> int:
    window: deque[float] = deque()
    best = 0
    for t in times:
        window.append(t)
        while window[0] <= t - length + 1e-9:  # float sums of tiny spacings
            window.popleft()
        best = max(best, len(window))
    return best


# --- declared limits -------------------------------------------------------------------------


def test_a_short_burst_then_even_pacing_never_more_than_the_minute_limit() -> None:
    clock = Clock()
    budget = make(clock, per_minute=60, per_hour=None, max_in_flight=4)
    times = [take(budget, clock) for _ in range(300)]
    start = times[0]
    assert times[:10] == [start] * 10  # a burst of 60 // 6 at once
    assert times[10:15] == [start + 1, start + 2, start + 3, start + 4, start + 5]  # then one a second
    assert max_in_any_window(times, 60.0) == 60
    assert max_in_any_window(times, 0.5) <= 10  # never more than the burst at once
    # And it is not slower than the limit: 300 requests in (300 - 10) seconds after the burst.
    assert times[-1] - start == pytest.approx(290.0)


def test_the_hour_limit_holds_for_any_hour() -> None:
    clock = Clock()
    budget = make(clock, per_minute=60, per_hour=100, max_in_flight=None)
    times = [take(budget, clock) for _ in range(250)]
    assert max_in_any_window(times, 3600.0) == 100
    # The 101st waits until the first leaves the hour window.
    assert times[100] == pytest.approx(times[0] + 3600.0)


def test_time_scale_shrinks_the_windows() -> None:
    clock = Clock()
    budget = make(clock, per_minute=60, per_hour=1000, max_in_flight=None, time_scale=0.01)
    times = [take(budget, clock) for _ in range(1200)]
    assert max_in_any_window(times, 0.6) <= 60
    assert max_in_any_window(times, 36.0) <= 1000
    assert times[1000] >= times[0] + 36.0 - 1e-9


def test_in_flight_cap_blocks_until_an_answer_comes_back() -> None:
    clock = Clock()
    budget = make(clock, per_minute=None, per_hour=None, max_in_flight=2)
    first, second = budget._enqueue(clock()), budget._enqueue(clock())
    assert isinstance(first, Permit)
    assert isinstance(second, Permit)
    third = budget._enqueue(clock())
    assert not isinstance(third, Permit)
    assert budget._try(third) == math.inf  # woken by an answer, not by time
    budget.settle(first, status=200, headers=None)
    assert isinstance(budget._try(third), Permit)


def test_unlimited_budget_never_waits() -> None:
    budget = RequestBudget(UNLIMITED)
    assert not budget.enabled
    permits = [budget.acquire_sync() for _ in range(1000)]
    assert all(not p.counted for p in permits)
    assert budget.sent == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"per_minute": 0}, "per_minute"),
        ({"per_hour": -1}, "per_hour"),
        ({"max_in_flight": 2.5}, "max_in_flight"),
        ({"per_minute": True}, "per_minute"),
        ({"time_scale": 0}, "time_scale"),
        ({"time_scale": float("nan")}, "time_scale"),
    ],
    ids=["zero-minute", "negative-hour", "fractional-flight", "bool", "zero-scale", "nan-scale"],
)
def test_nonsense_limits_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimits(**kwargs)  # type: ignore[arg-type]


# --- what the server says -----------------------------------------------------------------------


def test_nothing_remaining_waits_for_the_reset() -> None:
    clock = Clock()
    budget = make(clock, per_minute=60, per_hour=1000)
    take(budget, clock, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(clock.wall() + 30)})
    assert take(budget, clock) == pytest.approx(1030.0)


def test_a_few_remaining_are_spent_then_the_key_waits_for_the_reset() -> None:
    # Another process spent most of the window: the server's count, not ours, decides.
    clock = Clock()
    budget = make(clock, per_minute=60, per_hour=None, max_in_flight=None)
    take(budget, clock, headers={"RateLimit-Remaining": "3", "RateLimit-Reset": "20"})
    times = [take(budget, clock) for _ in range(4)]
    assert times[:3] == [1000.0, 1000.0, 1000.0]
    assert times[3] == pytest.approx(1020.0)


def test_the_servers_limit_corrects_the_declared_one() -> None:
    clock = Clock()
    budget = make(clock, per_minute=60, per_hour=1000, max_in_flight=None)
    take(
        budget, clock, headers={"RateLimit-Limit": "10", "RateLimit-Remaining": "9", "RateLimit-Reset": "60"}
    )
    assert budget.limits.per_minute == 10
    assert budget.limits.per_hour == 1000
    headers = {
        "X-RateLimit-Limit": "500",
        "X-RateLimit-Remaining": "400",
        "X-RateLimit-Reset": str(clock.wall() + 1800),
    }
    take(budget, clock, headers=headers)
    assert budget.limits.per_hour == 500
    # An hour window about to reset looks like a minute's, but its limit gives it away.
    take(
        budget,
        clock,
        headers={"RateLimit-Limit": "500", "RateLimit-Remaining": "80", "RateLimit-Reset": "20"},
    )
    assert (budget.limits.per_minute, budget.limits.per_hour) == (10, 500)
    # Paced at the learned rate: one every 6 s.
    times = [take(budget, clock) for _ in range(3)]
    assert [b - a for a, b in itertools.pairwise(times)] == pytest.approx([6.0, 6.0])


def test_a_429_pauses_every_caller_of_the_key_for_its_retry_after() -> None:
    clock = Clock()
    budget = make(clock)
    take(budget, clock, status=429, headers={"Retry-After": "7"})
    assert budget.rate_limited == 1
    assert take(budget, clock) == pytest.approx(1007.0)


def test_a_429_without_any_hint_backs_off_exponentially() -> None:
    clock = Clock()
    budget = make(clock, per_minute=None, per_hour=None, max_in_flight=4)
    pauses = []
    for _ in range(4):
        before = clock.now
        take(budget, clock, status=429)
        pauses.append(clock.now - before)
    assert pauses == [0.0, 1.0, 2.0, 4.0]


def test_a_success_after_429s_resets_the_backoff() -> None:
    clock = Clock()
    budget = make(clock, per_minute=None, per_hour=None)
    for status in (429, 429, 200, 429):
        take(budget, clock, status=status)
    before = clock.now
    take(budget, clock)
    assert clock.now - before == pytest.approx(1.0)


# --- order and deadlines -------------------------------------------------------------------------


def test_when_the_budget_binds_the_oldest_due_goes_first() -> None:
    clock = Clock()
    budget = make(clock, per_minute=None, per_hour=None, max_in_flight=1)
    holder = budget._enqueue(clock())
    assert isinstance(holder, Permit)
    late, early, middle = budget._enqueue(30.0), budget._enqueue(10.0), budget._enqueue(20.0)
    order = []
    permit = holder
    for _ in range(3):
        budget.settle(permit, status=200, headers=None)
        granted = [t for t in (late, early, middle) if t not in order and isinstance(budget._try(t), Permit)]  # type: ignore[arg-type]
        assert len(granted) == 1
        order.append(granted[0])
        permit = Permit(clock(), True)
    assert [t.due for t in order] == [10.0, 20.0, 30.0]  # type: ignore[attr-defined]


def test_no_room_before_the_deadline_raises_with_an_estimate() -> None:
    clock = Clock()
    budget = make(clock)
    take(budget, clock, status=429, headers={"Retry-After": "45"})
    with pytest.raises(NyneRateLimitError) as info:
        budget.acquire_sync(deadline=clock.wall() + 5)
    assert info.value.retry_after == pytest.approx(45.0)
    assert info.value.status_code is None  # nothing was sent
    assert "45.0s" in info.value.message
    assert budget._head() is None  # the caller left the line


# --- the waiting drivers, for real ---------------------------------------------------------------


async def test_async_waiters_are_woken_in_order_and_a_cancelled_one_leaves_the_line() -> None:
    budget = RequestBudget(RateLimits(per_minute=None, per_hour=None, max_in_flight=1))
    held = await budget.acquire()
    order: list[str] = []

    async def waiter(name: str, due: float) -> None:
        permit = await budget.acquire(due=due)
        order.append(name)
        budget.settle(permit, status=200, headers=None)

    second = asyncio.create_task(waiter("second", 2.0))
    cancelled = asyncio.create_task(waiter("cancelled", 0.5))
    first = asyncio.create_task(waiter("first", 1.0))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    await asyncio.sleep(0.01)
    budget.settle(held, status=200, headers=None)
    await asyncio.wait_for(asyncio.gather(first, second), timeout=5)
    assert order == ["first", "second"]
    assert budget._head() is None


async def test_async_acquire_waits_out_a_pause_without_blocking_the_loop() -> None:
    budget = RequestBudget(RateLimits())
    budget.settle(await budget.acquire(), status=429, headers={"Retry-After": "0.2"})
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    budget.settle(await budget.acquire(), status=200, headers=None)
    task.cancel()
    assert time.monotonic() - started >= 0.19
    assert ticks >= 5  # the loop kept running while the budget waited


def test_threads_share_one_budget() -> None:
    budget = RequestBudget(RateLimits(per_minute=None, per_hour=None, max_in_flight=2))
    in_flight = 0
    peak = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal in_flight, peak
        for _ in range(5):
            permit = budget.acquire_sync()
            with lock:
                in_flight += 1
                peak = max(peak, in_flight)
            time.sleep(0.005)
            with lock:
                in_flight -= 1
            budget.settle(permit, status=200, headers=None)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert peak == 2
    assert budget.sent == 30
