"""The simulator's behaviour settings; every one can be changed while it runs (docs/simulator.md)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

#: API endpoints a fault or rate limit can target (``*`` in a fault means all three).
ENDPOINTS = ("submit", "status", "usage")


def non_negative(value: Any, name: str) -> float:
    """``value`` as a float, or a ``ValueError`` naming ``name`` when it is not a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"{name} must be a number >= 0 (got {value!r})")
    return float(value)


@dataclass
class Settings:
    """Behaviour settings, as the constructor of ``NyneSimulator`` and ``configure()`` take them."""

    job_duration: float = 0.2
    slow_job_duration: float | None = None
    job_duration_sigma: float = 0.0
    job_duration_seed: int = 0
    request_ttl: float = 3600.0
    rate_limit_per_minute: int | None = 60
    rate_limit_per_hour: int | None = 1000
    rate_limited_endpoints: frozenset[str] = frozenset(ENDPOINTS)
    rate_limit_time_scale: float = 1.0
    callback_time_scale: float = 1.0
    callback_allowed_hosts: frozenset[str] | None = None
    failure_reason: str = "Profile is private"
    queued_fraction: float = 0.25
    credits_per_result: int = 3

    @property
    def effective_slow_job_duration(self) -> float:
        """Duration of ``slow*`` jobs: ``slow_job_duration`` or ten times ``job_duration``."""
        return self.job_duration * 10 if self.slow_job_duration is None else self.slow_job_duration

    @property
    def rate_limit_windows(self) -> list[tuple[str, int, float]]:
        """The active windows as ``(account attribute, limit, scaled length in seconds)``."""
        windows = []
        for attr, limit, length in (
            ("minute_window", self.rate_limit_per_minute, 60.0),
            ("hour_window", self.rate_limit_per_hour, 3600.0),
        ):
            if limit:
                windows.append((attr, limit, length * self.rate_limit_time_scale))
        return windows

    def updated(self, changes: Mapping[str, Any]) -> Settings:
        """Return a copy with ``changes`` applied; a bad one raises ``ValueError`` naming it.

        :param changes: setting names and values; all are checked before any is applied.
        """
        known = {f.name for f in fields(self)}
        if unknown := set(changes) - known:
            raise ValueError(f"unknown simulator settings: {sorted(unknown)}; known: {sorted(known)}")
        values = dict(changes)
        for name in ("rate_limit_per_minute", "rate_limit_per_hour"):
            if name in values:
                values[name] = None if values[name] is None or values[name] <= 0 else int(values[name])
        if "rate_limited_endpoints" in values:
            values["rate_limited_endpoints"] = endpoints = frozenset(values["rate_limited_endpoints"])
            if not endpoints <= set(ENDPOINTS):
                raise ValueError(f"rate_limited_endpoints must be a subset of {ENDPOINTS}")
        if values.get("callback_allowed_hosts") is not None:
            values["callback_allowed_hosts"] = frozenset(h.lower() for h in values["callback_allowed_hosts"])
        seed = values.get("job_duration_seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"job_duration_seed must be an integer (got {seed!r})")
        new = replace(self, **values)
        for name in ("job_duration", "request_ttl", "callback_time_scale", "job_duration_sigma"):
            non_negative(getattr(new, name), name)
        if new.slow_job_duration is not None and new.slow_job_duration < 0:
            raise ValueError("slow_job_duration must not be negative")
        scale = new.rate_limit_time_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
            raise ValueError(
                f"rate_limit_time_scale must be a number > 0, e.g. 0.01 for windows 100 times shorter "
                f"(got {new.rate_limit_time_scale!r})"
            )
        if not 0 <= new.queued_fraction <= 1:
            raise ValueError("queued_fraction must be between 0 and 1")
        return new

    def as_dict(self) -> dict[str, Any]:
        """Return the settings as JSON-compatible values."""
        data = asdict(self)
        data["rate_limited_endpoints"] = sorted(self.rate_limited_endpoints)
        if self.callback_allowed_hosts is not None:
            data["callback_allowed_hosts"] = sorted(self.callback_allowed_hosts)
        data["effective_slow_job_duration"] = self.effective_slow_job_duration
        return data
