"""Simulated jobs: how long they take, and what a poll sees of them at a given moment."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from airflow_provider_nyne.testing.simulator.data import iso, stable_seed
from airflow_provider_nyne.testing.simulator.validation import InteractionQuery

__all__ = ["TERMINAL_STATUSES", "Job", "job_data", "job_status", "spread_duration"]

TERMINAL_STATUSES = frozenset({"completed", "failed"})


@dataclass
class Job:
    """A submitted request; its status is computed from elapsed time."""

    request_id: str
    api_key: str
    query: InteractionQuery
    created_mono: float
    created_wall: float
    duration: float
    fail_reason: str | None
    empty: bool
    shape: frozenset[str]
    intermediate_status: str
    settled: bool = False
    credits_charged: int = 0
    result: dict[str, Any] | None = None
    callback_started: bool = False
    #: Held jobs stay queued/processing (and are never charged or expired) until released.
    held: bool = False

    @property
    def end_mono(self) -> float:
        """Monotonic time at which the job reaches its terminal status (infinite while held)."""
        return math.inf if self.held else self.created_mono + self.duration

    def wall(self, mono: float) -> float:
        """Convert a monotonic time of this job to Unix time.

        :param mono: a ``time.monotonic()`` value.
        """
        return self.created_wall + (mono - self.created_mono)


def spread_duration(median: float, sigma: float, seed: int, index: int) -> float:
    """Return the duration of the ``index``-th job: log-normal around ``median``.

    The same (seed, index) always give the same duration, so a run's set of durations is
    reproducible whatever order concurrent submissions arrive in; ``median`` is the median.

    :param median: the duration the spread is centred on (``job_duration``).
    :param sigma: standard deviation of the duration's logarithm; 0 returns ``median``.
    :param seed: picks the sequence (``job_duration_seed``).
    :param index: position of the job in the sequence (0 for the first job since start or reset).
    """
    if sigma == 0 or median == 0:
        return median
    normal = random.Random(stable_seed("job-duration", seed, index)).gauss(0.0, 1.0)
    return median * math.exp(sigma * normal)


def job_status(job: Job, now: float, queued_fraction: float) -> str:
    """Return the job's status at monotonic time ``now``.

    :param job: the job.
    :param now: a ``time.monotonic()`` value.
    :param queued_fraction: share of the duration spent ``queued`` before ``processing``.
    """
    elapsed = now - job.created_mono
    if elapsed >= job.duration and not job.held:
        return "failed" if job.fail_reason is not None else "completed"
    if elapsed < job.duration * queued_fraction:
        return "queued"
    return job.intermediate_status


def job_data(job: Job, status: str, queued_fraction: float) -> dict[str, Any]:
    """Return the ``data`` of a status answer for a job in ``status`` (a terminal job is settled).

    :param job: the job.
    :param status: its status now, from :func:`job_status`.
    :param queued_fraction: share of the duration spent ``queued`` before ``processing``.
    """
    if status in TERMINAL_STATUSES:
        changed = job.end_mono
    elif status == "queued":
        changed = job.created_mono
    else:
        changed = job.created_mono + job.duration * queued_fraction
    data: dict[str, Any] = {
        "request_id": job.request_id,
        "status": status,
        "completed": status == "completed",
        "interaction_type": job.query.interaction_type,
        "platform": job.query.platform,
        "created_at": iso(job.created_wall),
        "updated_at": iso(job.wall(changed)),
    }
    if status in TERMINAL_STATUSES:
        data["completed_at"] = iso(job.wall(job.end_mono))
    if status == "completed":
        data["result"] = job.result
    elif status == "failed":
        data["error"] = job.fail_reason
    return data
