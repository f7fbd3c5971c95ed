"""Simulated accounts: who may call what, and the per-account rate-limit windows.

Windows belong to the account, not to a connection, so every client of one account (threads,
processes) spends from the same windows; docs/simulator.md says how they open and are announced.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_nyne.testing.simulator.settings import Settings
from airflow_provider_nyne.testing.simulator.validation import ApiError

DEFAULT_PERMISSIONS = frozenset({"interactions", "usage"})
_FIELDS = (
    "api_key",
    "api_secret",
    "credits",
    "subscription_active",
    "disabled",
    "permissions",
    "allowed_ips",
)


def _strings(value: Any, name: str) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a list of strings")
    return frozenset(str(item) for item in value)


def format_seconds(value: float, *, precise: bool) -> str:
    """Seconds (or a Unix time) rounded up, so that a client waiting exactly this long is never early.

    :param value: seconds, or a Unix time.
    :param precise: up to 3 decimals (``"0.75"``, ``"2.0"``); else an integer.
    """
    if not precise:
        return str(math.ceil(value))
    # round() first: 0.75 * 1000 is 750.0000000000001 in binary, which must not become 751.
    whole, millis = divmod(math.ceil(round(value * 1000, 3)), 1000)
    text = f"{whole}.{millis:03d}".rstrip("0")
    return f"{text}0" if text.endswith(".") else text


def _headers(limit: int, remaining: int, reset_at: float, now: float, precise: bool) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, remaining)),
        "X-RateLimit-Reset": format_seconds(reset_at, precise=precise),
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(max(0, remaining)),
        "RateLimit-Reset": format_seconds(max(0.0, reset_at - now), precise=precise),
    }


@dataclass
class Account:
    """A simulated API account and its live counters."""

    api_key: str
    api_secret: str = field(repr=False)
    credits: int = 1000
    subscription_active: bool = True
    disabled: bool = False
    permissions: frozenset[str] = DEFAULT_PERMISSIONS
    allowed_ips: frozenset[str] | None = None
    credits_used: int = 0
    submissions: int = 0
    #: (reset time, count) of the current rate-limit windows.
    minute_window: tuple[float, int] = (0.0, 0)
    hour_window: tuple[float, int] = (0.0, 0)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Account:
        """Build an account from the JSON fields of ``POST /_simulator/accounts``.

        :param data: ``api_key`` and ``api_secret`` (required), and the other constructor fields.
        """
        if unknown := set(data) - set(_FIELDS):
            raise ValueError(f"unknown account fields: {sorted(unknown)}")
        api_key, api_secret = data.get("api_key"), data.get("api_secret")
        if not isinstance(api_key, str) or not api_key or not isinstance(api_secret, str) or not api_secret:
            raise ValueError("api_key and api_secret must be non-empty strings")
        credits = data.get("credits", 1000)
        if isinstance(credits, bool) or not isinstance(credits, int):
            raise TypeError("credits must be an integer")
        flags = {name: data[name] for name in ("subscription_active", "disabled") if name in data}
        for name, value in flags.items():
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be true or false")
        permissions, allowed_ips = data.get("permissions"), data.get("allowed_ips")
        return cls(
            api_key=api_key,
            api_secret=api_secret,
            credits=credits,
            permissions=DEFAULT_PERMISSIONS if permissions is None else _strings(permissions, "permissions"),
            allowed_ips=None if allowed_ips is None else _strings(allowed_ips, "allowed_ips"),
            **flags,
        )

    def public(self) -> dict[str, Any]:
        """Return the account as JSON-compatible data, without its secret."""
        return {
            "api_key": self.api_key,
            "credits": self.credits,
            "credits_used": self.credits_used,
            "submissions": self.submissions,
            "subscription_active": self.subscription_active,
            "disabled": self.disabled,
            "permissions": sorted(self.permissions),
            "allowed_ips": None if self.allowed_ips is None else sorted(self.allowed_ips),
        }

    def check_access(self, secret: str, endpoint: str, client_ip: str | None) -> None:
        """Raise the 401/403 answer a request with this key gets, if any.

        :param secret: the ``X-API-Secret`` sent.
        :param endpoint: ``submit``, ``status`` or ``usage``.
        :param client_ip: the peer address, checked against ``allowed_ips``.
        """
        if not hmac.compare_digest(self.api_secret.encode(), secret.encode()):
            raise ApiError(401, "invalid_api_secret", "The API secret does not match the API key")
        if self.disabled:
            raise ApiError(403, "api_key_disabled", "This API key has been disabled")
        if self.allowed_ips is not None and client_ip not in self.allowed_ips:
            raise ApiError(
                403, "ip_not_allowed", f"Requests from IP {client_ip} are not allowed for this key"
            )
        if endpoint in ("submit", "status"):
            if not self.subscription_active:
                raise ApiError(403, "subscription_required", "An active subscription is required")
            if "interactions" not in self.permissions:
                raise ApiError(403, "permission_denied", "This API key may not use the interactions API")
        elif endpoint == "usage" and "usage" not in self.permissions:
            raise ApiError(403, "permission_denied", "This API key may not read usage")

    def count_request(self, settings: Settings, now: float) -> dict[str, str]:
        """Count one request against the windows; return the tightest window's headers, or raise the 429.

        A window opens with the first request after the previous one closed and keeps the length
        it opened with; a refused request is not counted.

        :param settings: the limits and the windows' scale.
        :param now: the Unix time of the request.
        """
        precise = settings.rate_limit_time_scale != 1
        state = []
        for attr, limit, length in settings.rate_limit_windows:
            reset_at, count = getattr(self, attr)
            if now >= reset_at:
                reset_at, count = now + length, 0
            state.append((attr, limit, reset_at, count))
        if not state:
            return {}
        if exhausted := [entry for entry in state if entry[3] >= entry[1]]:
            reset_at = max(entry[2] for entry in exhausted)
            limit = min(entry[1] for entry in exhausted)
            headers = _headers(limit, 0, reset_at, now, precise)
            retry_after = max(0.001 if precise else 1.0, reset_at - now)
            headers["Retry-After"] = format_seconds(retry_after, precise=precise)
            message = f"Rate limit exceeded: {limit} requests; retry in {headers['Retry-After']} s"
            raise ApiError(429, "rate_limit_exceeded", message, headers)
        for attr, _, reset_at, count in state:
            setattr(self, attr, (reset_at, count + 1))
        _, limit, reset_at, count = min(state, key=lambda entry: entry[1] - entry[3])
        return _headers(limit, limit - count - 1, reset_at, now, precise)
