"""When to retry a failed call, and how long to wait first.

Whether an error may be retried at all is the error's own rule
(:meth:`~airflow_provider_nyne.client.errors.NyneError.may_retry`); this module only adds how
many times and after which delay. A ``429`` is not retried here when the request budget is on:
the budget pauses the whole API key and the call waits for the window to reopen instead (see
:mod:`airflow_provider_nyne.client.budget`).

This module does not import Airflow.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from airflow_provider_nyne.client.errors import NyneError, NyneRateLimitError


@dataclass(frozen=True)
class Sleep:
    """A step of a generator-driven loop: "wait this long, then go on" (the drivers sleep their own way)."""

    seconds: float


@dataclass(frozen=True)
class RetryPolicy:
    """
    When and how long to wait before retrying a failed call.

    :param max_retries: retries after the first attempt (0 disables retrying)
    :param backoff_base: first delay in seconds; doubles each retry
    :param backoff_max: cap of one delay in seconds
    :param jitter: random fraction added to each delay (0.1 = up to +10%)
    :param max_retry_after: longest ``Retry-After`` honoured in place; a longer one is raised
        to the caller as :class:`NyneRateLimitError` instead of blocking
    """

    max_retries: int = 3
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    jitter: float = 0.1
    max_retry_after: float = 120.0

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt + 1`` (``attempt`` counts from 0)."""
        delay: float = min(self.backoff_max, self.backoff_base * (2**attempt))
        return delay * (1.0 + random.uniform(0, self.jitter)) if self.jitter else delay

    def delay_for(self, error: NyneError, attempt: int, *, idempotent: bool) -> float | None:
        """Seconds to wait before retrying after ``error``, or ``None`` to give up and raise it."""
        if attempt >= self.max_retries or not error.may_retry(idempotent=idempotent):
            return None
        delay = self.backoff(attempt)
        if isinstance(error, NyneRateLimitError) and error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            delay = max(delay, error.retry_after)
        return delay


#: No retries: the caller's own loop (the wait loop) is the only retry layer.
NO_RETRY = RetryPolicy(max_retries=0)


__all__ = ["NO_RETRY", "RetryPolicy", "Sleep"]
