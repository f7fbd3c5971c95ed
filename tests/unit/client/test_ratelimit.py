"""RateLimitInfo: every documented form of the rate-limit headers, read the same way."""

from __future__ import annotations

import email.utils

import httpx
import pytest

from airflow_provider_nyne.client.ratelimit import RateLimitInfo, RateLimits

NOW = 1_764_460_800.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, RateLimitInfo()),
        (
            {
                "X-RateLimit-Limit": "60",
                "X-RateLimit-Remaining": "12",
                "X-RateLimit-Reset": str(int(NOW + 40)),
            },
            RateLimitInfo(limit=60, remaining=12, reset_after=40.0),
        ),
        (
            {"RateLimit-Limit": "60", "RateLimit-Remaining": "12", "RateLimit-Reset": "40"},
            RateLimitInfo(limit=60, remaining=12, reset_after=40.0),
        ),
        (
            {"ratelimit-limit": "60", "ratelimit-remaining": "0", "ratelimit-reset": "0.75"},
            RateLimitInfo(limit=60, remaining=0, reset_after=0.75),
        ),
        (
            {"X-RateLimit-Remaining": "3", "X-RateLimit-Reset": f"{NOW + 2.25:.2f}"},
            RateLimitInfo(remaining=3, reset_after=2.25),
        ),
        (
            # Both forms: the delay in seconds wins (it does not depend on the clocks agreeing).
            {"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": str(int(NOW + 99)), "RateLimit-Reset": "30"},
            RateLimitInfo(remaining=5, reset_after=30.0),
        ),
        (
            {"X-RateLimit-Remaining": "5", "X-RateLimit-Reset": "30"},
            RateLimitInfo(remaining=5, reset_after=30.0),
        ),
        ({"Retry-After": "17"}, RateLimitInfo(retry_after=17.0)),
        ({"Retry-After": "0.5"}, RateLimitInfo(retry_after=0.5)),
        ({"Retry-After": email.utils.formatdate(NOW + 60, usegmt=True)}, RateLimitInfo(retry_after=60.0)),
        ({"Retry-After": email.utils.formatdate(NOW - 60, usegmt=True)}, RateLimitInfo(retry_after=0.0)),
        ({"Retry-After": "soon", "RateLimit-Remaining": "many"}, RateLimitInfo()),
        ({"RateLimit-Reset": "-5", "RateLimit-Remaining": "-1"}, RateLimitInfo(remaining=0, reset_after=0.0)),
        ({"RateLimit-Reset": "nan", "RateLimit-Remaining": "2"}, RateLimitInfo(remaining=2)),
    ],
    ids=[
        "none",
        "x-ratelimit-unix-time",
        "ratelimit-seconds",
        "lower-case-decimal",
        "decimal-unix-time",
        "seconds-win-over-unix-time",
        "small-x-reset-is-seconds",
        "retry-after-seconds",
        "retry-after-decimal",
        "retry-after-http-date",
        "retry-after-date-in-the-past",
        "garbage",
        "negative",
        "not-finite",
    ],
)
def test_headers(headers: dict[str, str], expected: RateLimitInfo) -> None:
    assert RateLimitInfo.from_headers(headers, NOW) == expected
    assert RateLimitInfo.from_headers(httpx.Headers(headers), NOW) == expected


@pytest.mark.parametrize(
    ("info", "hint"),
    [
        (RateLimitInfo(retry_after=3.0, remaining=0, reset_after=9.0), 3.0),
        (RateLimitInfo(remaining=0, reset_after=9.0), 9.0),
        (RateLimitInfo(reset_after=9.0), 9.0),
        (RateLimitInfo(remaining=4, reset_after=9.0), None),
        (RateLimitInfo(), None),
    ],
    ids=["retry-after-first", "nothing-left", "reset-only", "some-left", "nothing-said"],
)
def test_wait_hint(info: RateLimitInfo, hint: float | None) -> None:
    assert info.wait_hint() == hint


def test_merged_declarations_take_the_stricter_limit() -> None:
    a = RateLimits(per_minute=60, per_hour=None, max_in_flight=4)
    b = RateLimits(per_minute=30, per_hour=500, max_in_flight=None, time_scale=0.5)
    assert a.merged(b) == RateLimits(per_minute=30, per_hour=500, max_in_flight=4, time_scale=0.5)
