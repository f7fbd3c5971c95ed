"""Per-account rate limits: fixed windows of a minute and an hour, and their answer headers.

Windows belong to the account, not to a connection or a client, so every client of one
account (threads, processes, machines) spends from the same windows. ``rate_limit_time_scale``
multiplies the window lengths; when it is not 1 the reset times are sent with millisecond
precision, because whole seconds would be wrong by a large share of a scaled window.
"""

from __future__ import annotations

import math

from airflow_provider_nyne.testing.simulator.records import Account
from airflow_provider_nyne.testing.simulator.settings import Settings
from airflow_provider_nyne.testing.simulator.validation import ApiError

__all__ = ["count_request", "format_seconds"]


def format_seconds(value: float, *, precise: bool) -> str:
    """Format seconds (or a Unix time) rounded up, as an integer or with up to 3 decimals.

    Rounding up keeps a client that waits exactly this long from arriving early.

    :param value: seconds, or a Unix time.
    :param precise: decimals (``"0.75"``, ``"1764460800.25"``, ``"2.0"``); else an integer.
    """
    if not precise:
        return str(math.ceil(value))
    # round() first: 0.75 * 1000 is 750.0000000000001 in binary, which must not become 751.
    whole, millis = divmod(math.ceil(round(value * 1000, 3)), 1000)
    text = f"{whole}.{millis:03d}".rstrip("0")
    return f"{text}0" if text.endswith(".") else text


def _headers(limit: int, remaining: int, reset_at: float, now: float, *, precise: bool) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, remaining)),
        "X-RateLimit-Reset": format_seconds(reset_at, precise=precise),
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(max(0, remaining)),
        "RateLimit-Reset": format_seconds(max(0.0, reset_at - now), precise=precise),
    }


def count_request(account: Account, settings: Settings, now: float) -> dict[str, str]:
    """Count one request against the account's windows (call under the simulator's lock).

    A window opens with the first request after the previous one closed and keeps the length
    it opened with (a scale changed meanwhile applies from the next window). A refused
    request is not counted.

    :param account: the authenticated account; its window state is updated.
    :param settings: the limits, the windows' scale and which endpoints count.
    :param now: the Unix time of the request.
    :returns: the headers of the tightest window.
    :raises ApiError: ``429 rate_limit_exceeded`` with ``Retry-After`` when a window is spent.
    """
    precise = settings.rate_limit_time_scale != 1
    state: list[tuple[str, int, float, int]] = []
    for attr, limit, length in settings.rate_limit_windows:
        reset_at, count = getattr(account, attr)
        if now >= reset_at:
            reset_at, count = now + length, 0
        state.append((attr, limit, reset_at, count))
    if not state:
        return {}
    exhausted = [entry for entry in state if entry[3] >= entry[1]]
    if exhausted:
        reset_at = max(entry[2] for entry in exhausted)
        limit = min(entry[1] for entry in exhausted)
        headers = _headers(limit, 0, reset_at, now, precise=precise)
        minimum = 0.001 if precise else 1.0
        headers["Retry-After"] = format_seconds(max(minimum, reset_at - now), precise=precise)
        raise ApiError(
            429,
            "rate_limit_exceeded",
            f"Rate limit exceeded: {limit} requests; retry in {headers['Retry-After']} s",
            headers,
        )
    tightest: tuple[int, int, float] | None = None
    for attr, limit, reset_at, count in state:
        setattr(account, attr, (reset_at, count + 1))
        remaining = limit - count - 1
        if tightest is None or remaining < tightest[1]:
            tightest = (limit, remaining, reset_at)
    assert tightest is not None
    return _headers(*tightest, now, precise=precise)
