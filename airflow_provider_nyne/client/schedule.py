"""When to poll: the backoff schedule and its defaults.

Kept apart from the wait loop (:mod:`airflow_provider_nyne.client.polling`) and free of
other imports, because operators check their polling arguments with :class:`PollSchedule`
when a DAG file is parsed.

This module does not import Airflow.
"""

from __future__ import annotations

import random
from collections.abc import Callable

#: Delay before the first poll. Most lookups take seconds: the first answer comes quickly.
DEFAULT_POLL_INTERVAL = 2.0
#: Longest delay between two polls. One waiting task then makes at most ~60 polls an hour,
#: 6% of the API's 1,000 requests/hour budget, and a long job is seen at most a minute late.
DEFAULT_MAX_POLL_INTERVAL = 60.0
#: Growth of the delay per poll. With 1.5 a job is noticed at most ~50% of its run time late
#: until the cap is reached (2.0 would allow up to 100% late for the same number of polls saved).
DEFAULT_BACKOFF_FACTOR = 1.5
#: Random spread of each delay (+/- 10%), so that tasks started together do not poll together.
DEFAULT_JITTER = 0.1
#: Consecutive transient failures tolerated before the wait gives up with the last one.
DEFAULT_MAX_TRANSIENT_ERRORS = 10


class PollSchedule:
    """
    When to poll: fast at first, exponentially slower, capped.

    The delay before poll ``n`` (counting from 0) is
    ``min(max_poll_interval, poll_interval * backoff_factor ** n)``, then spread by
    ``jitter``. With the defaults: 2, 3, 4.5, 6.8, 10.1, 15.2, 22.8, 34.2, 51.3, 60, 60, ...
    seconds, i.e. polls at 2, 5, 9.5, 16.3, 26.4, 41.6, 64.4, 98.6, 149.9, 209.9 s, then every
    60 s.

    :param poll_interval: delay before the first poll, in seconds (> 0)
    :param max_poll_interval: cap of one delay, in seconds (>= ``poll_interval``)
    :param backoff_factor: growth of the delay per poll (>= 1; 1 polls at a fixed interval)
    :param jitter: random spread of each delay, as a fraction (0.1 = +/- 10%; 0 = exact)
    """

    # A plain class, not a dataclass: operators build one when a DAG file is parsed, and
    # generating a dataclass's methods costs about 1 ms in every parsing process.
    __slots__ = ("backoff_factor", "jitter", "max_poll_interval", "poll_interval")

    def __init__(
        self,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        max_poll_interval: float = DEFAULT_MAX_POLL_INTERVAL,
        backoff_factor: float = DEFAULT_BACKOFF_FACTOR,
        jitter: float = DEFAULT_JITTER,
    ) -> None:
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval!r}")
        if not max_poll_interval >= poll_interval:
            raise ValueError(
                f"max_poll_interval ({max_poll_interval!r}) must be >= poll_interval ({poll_interval!r})"
            )
        if not backoff_factor >= 1:
            raise ValueError(f"backoff_factor must be >= 1, got {backoff_factor!r}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter!r}")
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.backoff_factor = backoff_factor
        self.jitter = jitter

    def _values(self) -> tuple[float, float, float, float]:
        return (self.poll_interval, self.max_poll_interval, self.backoff_factor, self.jitter)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PollSchedule) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        return (
            f"PollSchedule(poll_interval={self.poll_interval!r}, max_poll_interval={self.max_poll_interval!r}, "
            f"backoff_factor={self.backoff_factor!r}, jitter={self.jitter!r})"
        )

    def base_delay(self, n: int) -> float:
        """The delay before poll ``n`` (from 0), without jitter."""
        if n <= 0 or self.backoff_factor == 1:
            return min(self.poll_interval, self.max_poll_interval)
        # Avoid float overflow for large n: past the cap the answer is the cap.
        delay = self.poll_interval
        for _ in range(n):
            delay *= self.backoff_factor
            if delay >= self.max_poll_interval:
                return self.max_poll_interval
        return delay

    def delay(self, n: int, rng: Callable[[float, float], float] = random.uniform) -> float:
        """
        The delay before poll ``n`` (from 0), with jitter applied.

        :param n: index of the poll about to be made
        :param rng: ``uniform(a, b)`` source (tests pass a fixed one)
        """
        base = self.base_delay(n)
        if not self.jitter:
            return base
        return base * rng(1.0 - self.jitter, 1.0 + self.jitter)

    def poll_times(self, until: float) -> list[float]:
        """Elapsed times (seconds after the wait starts) of every poll up to ``until``, without jitter."""
        times: list[float] = []
        elapsed = 0.0
        n = 0
        while True:
            elapsed += self.base_delay(n)
            if elapsed > until:
                return times
            times.append(elapsed)
            n += 1

    def delay_after(self, elapsed: float) -> float:
        """
        The delay to use when ``elapsed`` seconds have passed since the wait started.

        For callers that do not keep a poll counter across polls (Airflow's reschedule mode
        starts a fresh process for each poke): the delay of the poll the schedule would be at.

        :param elapsed: seconds since the wait started
        """
        total = 0.0
        n = 0
        while True:
            step = self.base_delay(n)
            if total + step > elapsed or step >= self.max_poll_interval:
                return step
            total += step
            n += 1


__all__ = [
    "DEFAULT_BACKOFF_FACTOR",
    "DEFAULT_JITTER",
    "DEFAULT_MAX_POLL_INTERVAL",
    "DEFAULT_MAX_TRANSIENT_ERRORS",
    "DEFAULT_POLL_INTERVAL",
    "PollSchedule",
]
