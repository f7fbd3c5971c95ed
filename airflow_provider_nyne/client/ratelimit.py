"""What the account allows: declared rate limits, and what an answer's headers say about them.

:class:`RateLimits` are the limits a connection declares (the API's published defaults: 60
requests a minute, 1,000 an hour, 4 in flight). :class:`RateLimitInfo` reads one answer's
rate-limit headers in every documented form: ``X-RateLimit-Limit/Remaining/Reset`` (reset as
Unix time), ``RateLimit-Limit/Remaining/Reset`` (reset in seconds) and ``Retry-After``
(seconds or an HTTP date). The request budget (:mod:`airflow_provider_nyne.client.budget`)
paces requests with both.

This module does not import Airflow or an HTTP library.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

MINUTE = 60.0
HOUR = 3600.0


@dataclass(frozen=True)
class RateLimits:
    """
    The limits a request budget starts from; the server's rate-limit headers correct them.

    :param per_minute: requests per minute for the API key (``None``: no minute limit)
    :param per_hour: requests per hour (``None``: no hour limit)
    :param max_in_flight: requests in flight at once per key and process (``None``: no cap);
        published guidance for this API is up to 4 parallel polls
    :param time_scale: multiplies the window lengths; 1 for the real API (a simulator with
        windows scaled down for tests and benchmarks needs the same scale here)
    """

    per_minute: int | None = 60
    per_hour: int | None = 1000
    max_in_flight: int | None = 4
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("per_minute", "per_hour", "max_in_flight"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a whole number >= 1 or None, got {value!r}")
        if not (isinstance(self.time_scale, (int, float)) and math.isfinite(self.time_scale)):
            raise ValueError(f"time_scale must be a positive number, got {self.time_scale!r}")
        if self.time_scale <= 0:
            raise ValueError(f"time_scale must be a positive number, got {self.time_scale!r}")

    @property
    def enabled(self) -> bool:
        """Whether any limit is set (all ``None``: requests are sent as they come)."""
        return any(v is not None for v in (self.per_minute, self.per_hour, self.max_in_flight))

    def merged(self, other: RateLimits) -> RateLimits:
        """The stricter of two declarations of the same key's limits (``None`` is no limit)."""

        def low(a: int | None, b: int | None) -> int | None:
            return b if a is None else a if b is None else min(a, b)

        return RateLimits(
            per_minute=low(self.per_minute, other.per_minute),
            per_hour=low(self.per_hour, other.per_hour),
            max_in_flight=low(self.max_in_flight, other.max_in_flight),
            time_scale=min(self.time_scale, other.time_scale),
        )


#: No pacing at all: every request is sent as it comes (429s are then retried by the retry policy).
UNLIMITED = RateLimits(per_minute=None, per_hour=None, max_in_flight=None)


@dataclass(frozen=True)
class RateLimitInfo:
    """
    What one answer's headers say about the key's rate limit. Every field is optional.

    :param limit: requests allowed in the current window (``RateLimit-Limit``/``X-RateLimit-Limit``)
    :param remaining: requests left in it
    :param reset_after: seconds until the window resets (``RateLimit-Reset`` in seconds, or
        ``X-RateLimit-Reset`` as Unix time)
    :param retry_after: seconds the server asked to wait (``Retry-After``: seconds or an HTTP date)
    """

    limit: int | None = None
    remaining: int | None = None
    reset_after: float | None = None
    retry_after: float | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str], now: float | None = None) -> RateLimitInfo:
        """
        Read the rate-limit headers of an answer, in any of their documented forms.

        :param headers: the answer's headers (any mapping; names are case-insensitive)
        :param now: the current Unix time, for ``X-RateLimit-Reset`` and HTTP dates
        """
        if not hasattr(headers, "get_list"):  # httpx.Headers is case-insensitive already
            headers = {str(k).lower(): str(v) for k, v in headers.items()}
        get = headers.get
        if (
            get("retry-after") is None
            and get("ratelimit-remaining") is None
            and get("x-ratelimit-remaining") is None
            and get("ratelimit-reset") is None
            and get("x-ratelimit-reset") is None
        ):
            return _NOTHING
        wall = time.time() if now is None else now
        reset_after: float | None = None
        # Seconds first: they do not depend on the two clocks agreeing.
        for name in ("ratelimit-reset", "x-ratelimit-reset"):
            value = _number(get(name))
            if value is not None:
                # Documented as seconds (RateLimit-*) or Unix time (X-RateLimit-*); whatever the
                # header, a value only a date can be is a date, and a small one is a delay.
                reset_after = max(0.0, value - wall) if value > 1e9 else max(0.0, value)
                break
        return cls(
            limit=_whole(get("ratelimit-limit") or get("x-ratelimit-limit")),
            remaining=_whole(get("ratelimit-remaining") or get("x-ratelimit-remaining")),
            reset_after=reset_after,
            retry_after=_retry_after(get("retry-after"), wall),
        )

    def wait_hint(self) -> float | None:
        """Seconds until a request may succeed: ``Retry-After``, else the reset when nothing remains."""
        if self.retry_after is not None:
            return self.retry_after
        if self.reset_after is not None and (self.remaining is None or self.remaining <= 0):
            return self.reset_after
        return None


_NOTHING = RateLimitInfo()


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _whole(text: str | None) -> int | None:
    value = _number(text)
    return None if value is None else max(0, int(value))


def _retry_after(text: str | None, wall: float) -> float | None:
    if text is None:
        return None
    seconds = _number(text)
    if seconds is not None:
        return max(0.0, seconds)
    import datetime  # only for the rare HTTP-date form: this module loads when a DAG file is parsed
    import email.utils

    try:
        moment = email.utils.parsedate_to_datetime(text.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000" dates are UTC per RFC 5322
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, moment.timestamp() - wall)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """
    Seconds to wait from ``Retry-After`` (seconds or HTTP date), else from the reset headers when nothing remains.

    :param headers: the answer's headers
    :param now: the current Unix time
    """
    return RateLimitInfo.from_headers(headers, now).wait_hint()


__all__ = ["HOUR", "MINUTE", "UNLIMITED", "RateLimitInfo", "RateLimits", "parse_retry_after"]
