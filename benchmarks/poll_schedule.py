"""Polls per job and detection delay under the default backoff versus fixed intervals, computed from the schedules.

The schedules are :class:`~airflow_provider_nyne.client.polling.PollSchedule` objects
(the trigger's and the sensor's), evaluated without jitter: the job is noticed by the first
poll at or after it completes.
"""

from __future__ import annotations

from collections.abc import Sequence

from airflow_provider_nyne.client.polling import PollSchedule
from benchmarks._common import Table

DEFAULT_DURATIONS = (10.0, 60.0, 600.0, 3600.0)
#: The API's documented budget for this endpoint.
HOURLY_LIMIT = 1000


def detection(schedule: PollSchedule, duration: float) -> tuple[int, float]:
    """``(polls, delay)``: how many polls notice a job of ``duration`` seconds, and how late the last one is."""
    elapsed = 0.0
    polls = 0
    while True:
        elapsed += schedule.base_delay(polls)
        polls += 1
        if elapsed >= duration - 1e-9:
            return polls, elapsed - duration


#: Job durations are spread +/- this fraction around each nominal duration: real jobs do not
#: end on a fixed interval's grid, and a single duration would show a misleading zero delay.
SPREAD = 0.2
SAMPLES = 401


def typical(schedule: PollSchedule, duration: float) -> tuple[float, float, float]:
    """Mean polls, mean delay and worst delay over jobs spread +/-20% around ``duration``."""
    results = [
        detection(schedule, duration * (1 - SPREAD + 2 * SPREAD * i / (SAMPLES - 1))) for i in range(SAMPLES)
    ]
    polls = sum(p for p, _ in results) / SAMPLES
    delays = [d for _, d in results]
    return polls, sum(delays) / SAMPLES, max(delays)


def _label(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def schedules() -> dict[str, PollSchedule]:
    """The default backoff and the two fixed intervals it is compared with."""
    default = PollSchedule(jitter=0)
    return {
        (
            f"default backoff ({default.poll_interval:g} s x{default.backoff_factor:g}, "
            f"capped at {default.max_poll_interval:g} s)"
        ): default,
        "fixed 2 s": PollSchedule(poll_interval=2, max_poll_interval=2, backoff_factor=1, jitter=0),
        "fixed 60 s": PollSchedule(poll_interval=60, max_poll_interval=60, backoff_factor=1, jitter=0),
    }


def poll_schedule_table(durations: Sequence[float] = DEFAULT_DURATIONS) -> Table:
    """Table 4: for each schedule, polls and detection delay per job duration, and the steady poll rate."""
    columns = ["schedule"]
    columns += [f"{_label(d)} jobs: polls, delay (worst)" for d in durations]
    columns += ["polls per hour once settled", "waits that fit in 1,000 requests/hour"]
    table = Table(
        key="schedule", title="Polling schedule: polls per job and detection delay", columns=columns
    )
    for name, schedule in schedules().items():
        row = [name]
        for duration in durations:
            polls, delay, worst = typical(schedule, duration)
            row.append(f"{polls:.1f}, {delay:.1f} s ({worst:.0f} s)")
        settled = 3600 / schedule.max_poll_interval
        row.append(f"{settled:,.0f}")
        row.append(
            f"{int(HOURLY_LIMIT // settled):,}" if settled <= HOURLY_LIMIT else "0 (one wait exceeds it)"
        )
        table.rows.append(row)
    table.notes.append(
        "Computed from `PollSchedule` without its +/-10% jitter, averaged over job durations spread "
        "+/-20% around each nominal one; the delay is how long after the job completes the next poll "
        "sees it (mean, worst in brackets). The API allows about 1,000 requests/hour per account (polls "
        "included), so a fixed 2 s interval cannot wait for even one long job without hitting the limit, "
        "and fixed 60 s notices a 10 s job about 50 s late."
    )
    return table


if __name__ == "__main__":
    print(poll_schedule_table().markdown())
