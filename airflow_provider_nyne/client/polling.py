"""Waiting for an interactions job: the polling schedule and the wait loop, written once.

The same loop serves the trigger (async, in the triggerer) and the non-deferrable modes
(sync, in a worker). Like the HTTP clients, it is written once as a generator of steps
(:func:`_wait_steps` yields "poll now" or "sleep this long" and receives the poll's result);
:func:`wait_for_job` and :func:`wait_for_job_sync` are short drivers of it.

What the loop guarantees:

* **Backoff**: the delay before poll *n* is ``poll_interval * backoff_factor ** n``, capped
  at ``max_poll_interval`` (see :class:`PollSchedule`).
* **Rate limit**: every poll takes its turn in the API key's request budget (see
  :mod:`airflow_provider_nyne.client.budget`), which waits out a ``429`` for the whole key; a
  rate limit never fails a wait while the deadline allows, and never counts as an error.
* **Transient errors** (5xx, unreadable answers, transport failures: the errors whose
  ``retryable`` is true) are tolerated up to ``max_transient_errors`` *consecutive* ones; the
  next one is surfaced as the outcome. Any successful poll resets the count. Permanent errors
  (401, 403, 404, ...) end the wait at once.
* **Deadline**: ``deadline`` is an absolute wall-clock time (epoch seconds). The loop never
  sleeps past it: the last sleep is shortened so that the last poll happens right at the
  deadline, and if the job is still running then, the outcome is ``timeout``.

The client passed in must not retry on its own (build it with ``retry=NO_RETRY``): the
loop's tolerance is then the only retry layer. Per-poll work is small: only the state is read,
never the interactions.

This module does not import Airflow.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

from airflow_provider_nyne.client.errors import NyneError, NyneRateLimitError, NyneValidationError
from airflow_provider_nyne.client.models import JobState, JobStatus
from airflow_provider_nyne.client.retry import Sleep
from airflow_provider_nyne.client.schedule import (
    DEFAULT_BACKOFF_FACTOR,
    DEFAULT_JITTER,
    DEFAULT_MAX_POLL_INTERVAL,
    DEFAULT_MAX_TRANSIENT_ERRORS,
    DEFAULT_POLL_INTERVAL,
    PollSchedule,
)

log = logging.getLogger(__name__)

WaitStatus = Literal["success", "failed", "error", "timeout"]


@dataclass(frozen=True)
class WaitOutcome:
    """
    How a wait ended. Plain values only, so that it can travel in a trigger event.

    :param status: ``success`` (job completed), ``failed`` (job failed), ``error`` (the API
        or the network failed permanently, or too many transient errors in a row),
        ``timeout`` (the deadline passed while the job was still running)
    :param request_id: the request waited for
    :param total_count: the result's total count (``success`` only)
    :param message: what happened, naming the cause (the API's reason for ``failed``)
    :param error_code: the API's error code (``request_not_found``, ``invalid_api_key``, ...)
    :param http_status: the HTTP status of the error answer, when there was one
    :param polls: how many status polls this wait made
    :param error_type: the client error's class name, so the task raises the same error
        (``error`` and ``timeout``; see :func:`~airflow_provider_nyne.client.errors.error_from_event`)
    """

    status: WaitStatus
    request_id: str
    total_count: int | None = None
    message: str | None = None
    error_code: str | None = None
    http_status: int | None = None
    polls: int = 0
    error_type: str | None = None

    def to_event(self) -> dict[str, Any]:
        """The outcome as a trigger event payload (a plain dict)."""
        return asdict(self)


class AsyncStatusClient(Protocol):
    """What :func:`wait_for_job` needs from a client."""

    def get_status(self, request_id: str, *, deadline: float | None = None) -> Awaitable[JobStatus]:
        """Poll a request once, waiting for room under the rate limit until ``deadline`` at most."""
        ...


class SyncStatusClient(Protocol):
    """What :func:`wait_for_job_sync` needs from a client."""

    def get_status(self, request_id: str, *, deadline: float | None = None) -> JobStatus:
        """Poll a request once, waiting for room under the rate limit until ``deadline`` at most."""
        ...


@dataclass(frozen=True)
class _Poll:
    pass


_POLL = _Poll()
_Step = _Poll | Sleep
_PollResult = JobStatus | NyneError


def error_outcome(request_id: str, error: NyneError, polls: int = 0, note: str = "") -> WaitOutcome:
    """
    The ``error`` outcome for a client error, keeping its code and HTTP status.

    :param request_id: the request waited for
    :param error: the error that ended the wait
    :param polls: status requests made so far
    :param note: appended to the message
    """
    code = error.code
    if code is None and isinstance(error, NyneValidationError) and error.field:
        # A local check failed before any request (e.g. the connection does not exist).
        code = f"invalid_{error.field}"
    return WaitOutcome(
        status="error",
        request_id=request_id,
        message=f"{error.message}{note}",
        error_code=code,
        http_status=error.status_code,
        polls=polls,
        error_type=type(error).__name__,
    )


def _wait_steps(
    request_id: str,
    *,
    deadline: float,
    schedule: PollSchedule,
    max_transient_errors: int,
    clock: Callable[[], float],
    rng: Callable[[float, float], float],
    logger: Any,
) -> Generator[_Step, _PollResult, WaitOutcome]:
    """The wait loop, once for both drivers: yields steps, receives poll results, returns the outcome."""
    polls = 0
    consecutive = 0
    last_state: JobState | None = None
    last_error: NyneError | None = None
    n = 0
    while True:
        remaining = deadline - clock()
        if remaining <= 0 and polls:
            break
        delay = schedule.delay(n, rng)
        if isinstance(last_error, NyneRateLimitError) and last_error.retry_after is not None:
            delay = max(delay, last_error.retry_after)
        if remaining > 0:
            # Never sleep past the deadline: the last poll happens right at it.
            yield Sleep(min(delay, remaining))
        n += 1
        result = yield _POLL
        polls += 1
        if isinstance(result, NyneRateLimitError):
            # The key's budget found no room before the deadline (or, with the budget off, the
            # API said 429): never a failure while time is left, and not an error in a row.
            last_error = result
            continue
        if isinstance(result, NyneError):
            if not result.retryable:
                return error_outcome(request_id, result, polls)
            consecutive += 1
            last_error = result
            if consecutive > max_transient_errors:
                return error_outcome(request_id, result, polls, f" ({consecutive} failed polls in a row)")
            logger.warning(
                "Polling Nyne request %s failed (%s); %d/%d transient errors in a row tolerated",
                request_id,
                result,
                consecutive,
                max_transient_errors,
            )
            continue
        consecutive = 0
        last_error = None
        state = result.state
        if state is JobState.COMPLETED:
            total = result.total_count
            logger.info("Nyne request %s completed: %s interactions (%d polls)", request_id, total, polls)
            return WaitOutcome(
                status="success",
                request_id=request_id,
                total_count=total,
                message=f"request {request_id} completed",
                polls=polls,
            )
        if state is JobState.FAILED:
            reason = result.error or "no reason given"
            logger.info("Nyne request %s failed: %s (%d polls)", request_id, reason, polls)
            return WaitOutcome(
                status="failed",
                request_id=request_id,
                message=f"request {request_id} failed: {reason}",
                polls=polls,
            )
        if state is not last_state:
            logger.info("Nyne request %s is %s", request_id, result.status)
            last_state = state
    detail = f" (last poll failed: {last_error})" if last_error is not None else ""
    state_text = last_state.value if last_state is not None else "unknown"
    return WaitOutcome(
        status="timeout",
        request_id=request_id,
        message=f"request {request_id} still {state_text} at the deadline after {polls} polls{detail}",
        error_code=last_error.code if last_error is not None else None,
        http_status=last_error.status_code if last_error is not None else None,
        polls=polls,
        error_type=type(last_error).__name__ if last_error is not None else None,
    )


async def wait_for_job(
    client: AsyncStatusClient,
    request_id: str,
    *,
    deadline: float,
    schedule: PollSchedule | None = None,
    max_transient_errors: int = DEFAULT_MAX_TRANSIENT_ERRORS,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    rng: Callable[[float, float], float] = random.uniform,
    logger: Any = log,
) -> WaitOutcome:
    """
    Poll ``request_id`` until it completes, fails, errors or the deadline passes; never blocks the loop.

    :param client: an async client (``AsyncNyneClient``) built with ``retry=NO_RETRY``
    :param request_id: the request to wait for
    :param deadline: absolute wall-clock deadline, epoch seconds
    :param schedule: the :class:`PollSchedule` (defaults: 2 s first, x1.5, 60 s cap)
    :param max_transient_errors: consecutive transient failures tolerated
    :param clock: wall clock (tests pass a fake one)
    :param sleep: async sleep (tests pass a fake one)
    :param rng: ``uniform(a, b)`` for jitter
    :param logger: where status changes are logged (``logging`` or structlog style)
    """
    steps = _wait_steps(
        request_id,
        deadline=deadline,
        schedule=schedule or PollSchedule(),
        max_transient_errors=max_transient_errors,
        clock=clock,
        rng=rng,
        logger=logger,
    )
    step = next(steps)
    try:
        while True:
            if isinstance(step, Sleep):
                await sleep(step.seconds)
                step = next(steps)
                continue
            result: _PollResult
            try:
                result = await client.get_status(request_id, deadline=deadline)
            except NyneError as err:
                result = err
            step = steps.send(result)
    except StopIteration as done:
        outcome: WaitOutcome = done.value
        return outcome


def wait_for_job_sync(
    client: SyncStatusClient,
    request_id: str,
    *,
    deadline: float,
    schedule: PollSchedule | None = None,
    max_transient_errors: int = DEFAULT_MAX_TRANSIENT_ERRORS,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Any] = time.sleep,
    rng: Callable[[float, float], float] = random.uniform,
    logger: Any = log,
) -> WaitOutcome:
    """
    Blocking twin of :func:`wait_for_job`, for workers without a triggerer.

    :param client: a sync client (``NyneClient``) built without retries
    :param request_id: the request to wait for
    :param deadline: absolute wall-clock deadline, epoch seconds
    :param schedule: the :class:`PollSchedule`
    :param max_transient_errors: consecutive transient failures tolerated
    :param clock: wall clock
    :param sleep: blocking sleep
    :param rng: ``uniform(a, b)`` for jitter
    :param logger: where status changes are logged
    """
    steps = _wait_steps(
        request_id,
        deadline=deadline,
        schedule=schedule or PollSchedule(),
        max_transient_errors=max_transient_errors,
        clock=clock,
        rng=rng,
        logger=logger,
    )
    step = next(steps)
    try:
        while True:
            if isinstance(step, Sleep):
                sleep(step.seconds)
                step = next(steps)
                continue
            result: _PollResult
            try:
                result = client.get_status(request_id, deadline=deadline)
            except NyneError as err:
                result = err
            step = steps.send(result)
    except StopIteration as done:
        outcome: WaitOutcome = done.value
        return outcome


__all__ = [
    "DEFAULT_BACKOFF_FACTOR",
    "DEFAULT_JITTER",
    "DEFAULT_MAX_POLL_INTERVAL",
    "DEFAULT_MAX_TRANSIENT_ERRORS",
    "DEFAULT_POLL_INTERVAL",
    "PollSchedule",
    "WaitOutcome",
    "error_outcome",
    "wait_for_job",
    "wait_for_job_sync",
]
