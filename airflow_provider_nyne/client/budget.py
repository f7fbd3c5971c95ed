"""One request budget per API key per process: every request waits for room under the account's limits.

The Nyne API allows about 60 requests a minute and 1,000 an hour per account, submissions
and polls together. A triggerer holding hundreds of waits, or a worker submitting next to it,
must not learn that limit one ``429`` at a time. Every request the client sends (submit,
status, usage) first asks the :class:`RequestBudget` of its API key for room:

* **Declared limits** (:class:`RateLimits`: per minute, per hour, in flight at once) are the
  starting point. The minute is paced evenly after a short burst, so that waits started
  together do not all poll in the same instant, and a sliding log of this process's own sends
  keeps any minute and any hour under its limit.
* **What the server says corrects them**, on every answer: ``X-RateLimit-*``/``RateLimit-*``
  (limit, remaining, reset as Unix time or seconds) and ``Retry-After`` (seconds or an HTTP
  date). When the server says nothing remains until the reset, nobody in this process sends
  before it. Several triggerers and workers sharing a key converge this way, through the
  server's own count, with no coordination service.
* **A 429 pauses the key**, not one request: the whole process waits for the window to reopen.
* **When the budget binds, the oldest due request goes first** (a heap ordered by the time
  each caller wanted to send): polls that have waited longest, the most likely to find their
  job finished, are served before newer ones, and nobody starves. When it does not bind, a
  request is granted at once and the callers' own schedules are untouched.

Callers wait with :meth:`RequestBudget.acquire` (async) or :meth:`RequestBudget.acquire_sync`
(threads), both bounded by a deadline; both drive the same non-blocking core. Each grant is
returned with :meth:`RequestBudget.settle` and the answer's headers.

This module does not import Airflow or an HTTP library.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from airflow_provider_nyne.client.errors import NyneRateLimitError
from airflow_provider_nyne.client.ratelimit import HOUR, MINUTE, RateLimitInfo, RateLimits

log = logging.getLogger(__name__)
#: Pause after a 429 that says nothing about when to come back (doubled for each one in a row).
_UNHINTED_PAUSE = 1.0
_MAX_UNHINTED_PAUSE = 60.0


class _Ticket:
    """One caller waiting for room: ordered by when it wanted to send, then by arrival."""

    __slots__ = ("cancelled", "due", "event", "future", "loop", "seq", "thread")

    def __init__(self, due: float, seq: int) -> None:
        self.due = due
        self.seq = seq
        self.cancelled = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: asyncio.Future[None] | None = None
        self.thread = 0
        self.event: threading.Event | None = None

    def __lt__(self, other: _Ticket) -> bool:
        return (self.due, self.seq) < (other.due, other.seq)

    def wake(self) -> None:
        """Make the waiter look again (from any thread)."""
        if self.event is not None:
            self.event.set()
            return
        future, loop = self.future, self.loop
        if future is None or loop is None or future.done():
            return
        if threading.get_ident() == self.thread:
            future.set_result(None)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass
class _ServerView:
    """The server's count for the current window, as of its latest answer."""

    remaining: int
    reset_at: float
    sent_since: int


class Permit:
    """Room for one request, taken from a budget; give it back with :meth:`RequestBudget.settle`."""

    __slots__ = ("counted", "granted_at")

    def __init__(self, granted_at: float, counted: bool) -> None:
        self.granted_at = granted_at
        self.counted = counted


class RequestBudget:
    """
    The request budget of one API key in this process. Thread-safe; usable from any event loop.

    :param limits: the declared :class:`RateLimits`
    :param clock: monotonic clock (tests pass a fake one)
    :param wall: Unix-time clock, for reset times given as dates
    """

    def __init__(
        self,
        limits: RateLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._wall = wall
        self._declared = limits if limits is not None else RateLimits()
        self._learned_minute: int | None = None
        self._learned_hour: int | None = None
        self._sends: deque[float] = deque()
        self._tat = -math.inf
        self._paused_until = -math.inf
        self._server: _ServerView | None = None
        self._in_flight = 0
        self._queue: list[_Ticket] = []
        self._seq = itertools.count()
        self._rejected_in_a_row = 0
        #: Requests sent through this budget, and answers that were 429 (for logs and benchmarks).
        self.sent = 0
        self.rate_limited = 0

    def __repr__(self) -> str:
        return (
            f"RequestBudget(limits={self.limits!r}, in_flight={self._in_flight}, waiting={len(self._queue)})"
        )

    # Limits ----------------------------------------------------------------------------------

    @property
    def limits(self) -> RateLimits:
        """The limits in force: the declared ones, corrected by the limits the server reported."""
        declared = self._declared
        return replace(
            declared,
            per_minute=self._learned_minute or declared.per_minute,
            per_hour=self._learned_hour or declared.per_hour,
        )

    @property
    def enabled(self) -> bool:
        """Whether requests are paced at all."""
        return self._declared.enabled

    def declare(self, limits: RateLimits) -> None:
        """
        Add a declaration of the key's limits (another connection for the same key): the stricter wins.

        :param limits: the limits that connection declares
        """
        with self._lock:
            self._declared = self._declared.merged(limits) if self._declared.enabled else limits

    def _windows(self) -> tuple[tuple[int | None, float], tuple[int | None, float]]:
        declared = self._declared
        scale = declared.time_scale
        return (
            (self._learned_minute or declared.per_minute, MINUTE * scale),
            (self._learned_hour or declared.per_hour, HOUR * scale),
        )

    # The core: when may the next request go? -------------------------------------------------

    def _next_open(self, now: float) -> float:
        """The earliest time a request may be sent, from the limits, the server's count and any pause."""
        t = max(now, self._paused_until)
        (per_minute, minute), (per_hour, hour) = self._windows()
        sends = self._sends
        for limit, length in ((per_minute, minute), (per_hour, hour)):
            if limit is not None and len(sends) >= limit:
                # The limit-th most recent send must leave the window first.
                t = max(t, sends[-limit] + length)
        if per_minute is not None:
            # Even pacing after a short burst: waits started together do not all poll at once.
            spacing = minute / per_minute
            burst = max(self._declared.max_in_flight or 1, per_minute // 6, 1)
            t = max(t, self._tat - (burst - 1) * spacing)
        server = self._server
        if server is not None:
            if now >= server.reset_at:
                self._server = None  # the window reset: the next answer says what is left
            elif server.remaining - server.sent_since <= 0:
                t = max(t, server.reset_at)
        return t

    def _grant(self, now: float) -> Permit:
        (per_minute, minute), (per_hour, _) = self._windows()
        keep = max(per_minute or 0, per_hour or 0)
        sends = self._sends
        sends.append(now)
        while len(sends) > keep:
            sends.popleft()
        if per_minute is not None:
            self._tat = max(self._tat, now) + minute / per_minute
        if self._server is not None:
            self._server.sent_since += 1
        self._in_flight += 1
        self.sent += 1
        return Permit(now, True)

    def _head(self) -> _Ticket | None:
        queue = self._queue
        while queue and queue[0].cancelled:
            heapq.heappop(queue)
        return queue[0] if queue else None

    def _wake_head(self) -> None:
        head = self._head()
        if head is not None:
            head.wake()

    def _blocked_by_flight(self) -> bool:
        cap = self._declared.max_in_flight
        return cap is not None and self._in_flight >= cap

    def _enqueue(self, due: float) -> _Ticket | Permit:
        """Grant at once when nobody waits and there is room; otherwise queue a ticket."""
        with self._lock:
            now = self._clock()
            if self._head() is None and not self._blocked_by_flight() and self._next_open(now) <= now:
                return self._grant(now)
            ticket = _Ticket(due, next(self._seq))
            heapq.heappush(self._queue, ticket)
            return ticket

    def _try(self, ticket: _Ticket) -> float | Permit:
        """A permit when ``ticket`` may send now, else how long to wait (``inf``: until woken)."""
        with self._lock:
            if self._head() is not ticket or self._blocked_by_flight():
                return math.inf
            now = self._clock()
            t = self._next_open(now)
            if t > now:
                return t - now
            heapq.heappop(self._queue)
            permit = self._grant(now)
            self._wake_head()
            return permit

    def _cancel(self, ticket: _Ticket) -> None:
        with self._lock:
            ticket.cancelled = True
            self._wake_head()

    def _exhausted(self, ticket: _Ticket) -> NyneRateLimitError:
        """The error for a caller whose deadline came before room did; estimates when room comes."""
        with self._lock:
            now = self._clock()
            ahead = sum(1 for other in self._queue if not other.cancelled and other < ticket)
            per_minute, minute = self._windows()[0]
            spacing = minute / per_minute if per_minute else 0.0
            wait = max(0.0, self._next_open(now) - now) + ahead * spacing
            limits = self.limits
        return NyneRateLimitError(
            f"the Nyne API rate limit leaves no room for this request before its deadline (limits: "
            f"{limits.per_minute}/minute, {limits.per_hour}/hour, {limits.max_in_flight} in flight; "
            f"{ahead} requests of this process are ahead); room again in about {wait:.1f}s",
            retry_after=wait,
            code="rate_limit_exceeded",
        )

    # Waiting: two thin drivers of the core ------------------------------------------------------

    async def acquire(self, *, due: float | None = None, deadline: float | None = None) -> Permit:
        """
        Wait (without blocking the event loop) until a request may be sent; return its permit.

        :param due: when the caller wanted to send, on the budget's clock (default: now); the
            earliest due goes first when the budget binds
        :param deadline: Unix time after which to give up (default: wait as long as needed)
        :raises NyneRateLimitError: when there is no room before ``deadline``
        """
        if not self.enabled:
            return _FREE
        entry = self._enqueue(self._clock() if due is None else due)
        if isinstance(entry, Permit):
            return entry
        ticket = entry
        loop = asyncio.get_running_loop()
        ticket.loop, ticket.thread = loop, threading.get_ident()
        try:
            while True:
                ticket.future = future = loop.create_future()
                step = self._try(ticket)
                if isinstance(step, Permit):
                    return step
                timeout = self._timeout(step, deadline)
                if timeout is None:
                    raise self._exhausted(ticket)
                timer = loop.call_later(timeout, _resolve, future) if timeout != math.inf else None
                try:
                    await future
                finally:
                    if timer is not None:
                        timer.cancel()
        except BaseException:
            self._cancel(ticket)
            raise

    def acquire_sync(self, *, due: float | None = None, deadline: float | None = None) -> Permit:
        """
        Blocking twin of :meth:`acquire`, for workers and threads.

        :param due: when the caller wanted to send, on the budget's clock (default: now)
        :param deadline: Unix time after which to give up
        :raises NyneRateLimitError: when there is no room before ``deadline``
        """
        if not self.enabled:
            return _FREE
        entry = self._enqueue(self._clock() if due is None else due)
        if isinstance(entry, Permit):
            return entry
        ticket = entry
        ticket.event = event = threading.Event()
        try:
            while True:
                event.clear()
                step = self._try(ticket)
                if isinstance(step, Permit):
                    return step
                timeout = self._timeout(step, deadline)
                if timeout is None:
                    raise self._exhausted(ticket)
                event.wait(None if timeout == math.inf else timeout)
        except BaseException:
            self._cancel(ticket)
            raise

    def _timeout(self, wait: float, deadline: float | None) -> float | None:
        """How long to sleep before looking again, or ``None`` when the deadline leaves no time."""
        if deadline is None:
            return wait
        left = deadline - self._wall()
        if left <= 0 or (wait != math.inf and wait > left):
            return None  # room comes after the deadline: say so now rather than at the deadline
        return min(wait, left)

    # Learning from answers -----------------------------------------------------------------------

    def settle(self, permit: Permit, *, status: int | None, headers: Mapping[str, str] | None) -> None:
        """
        Give a permit back with what the answer said (``status=None``: no answer arrived).

        :param permit: what :meth:`acquire` returned
        :param status: the answer's HTTP status
        :param headers: the answer's headers
        """
        if not permit.counted:
            return
        info = RateLimitInfo.from_headers(headers, self._wall()) if headers else RateLimitInfo()
        with self._lock:
            now = self._clock()
            self._in_flight -= 1
            self._learn(info, now)
            if status == 429:
                self._pause(info, now)
            elif status is not None:
                self._rejected_in_a_row = 0
            self._wake_head()

    def _learn(self, info: RateLimitInfo, now: float) -> None:
        if info.limit and info.reset_after is not None:
            # The window the server counts in is the one its reset falls within; a limit as high as
            # the hour's can only be the hour's, whenever its reset comes.
            (_, minute), (per_hour, hour) = self._windows()
            if info.reset_after <= minute * 1.05 and (per_hour is None or info.limit < per_hour):
                self._learned_minute = info.limit
            elif info.reset_after <= hour * 1.05:
                self._learned_hour = info.limit
        if info.remaining is not None and info.reset_after is not None:
            # Requests still in flight may not be counted by the server yet: assume they were not.
            self._server = _ServerView(info.remaining, now + info.reset_after, self._in_flight)

    def _pause(self, info: RateLimitInfo, now: float) -> None:
        self.rate_limited += 1
        self._rejected_in_a_row += 1
        wait = info.wait_hint()
        if wait is None:
            wait = min(_MAX_UNHINTED_PAUSE, _UNHINTED_PAUSE * 2 ** (self._rejected_in_a_row - 1))
        until = now + wait
        if until > self._paused_until:
            if self._paused_until < now:  # one line per pause, not per request
                log.info(
                    "Nyne API rate limit reached for this API key: all its requests from this process "
                    "wait %.1fs for the window to reopen",
                    wait,
                )
            self._paused_until = until


_FREE = Permit(0.0, False)

__all__ = ["Permit", "RequestBudget"]
