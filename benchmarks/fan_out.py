"""A fan-out under the API's rate limit: many lookups on one API key, against the floor the limit sets.

The simulator enforces the API's limits (60 requests a minute, 1,000 an hour) on windows
scaled down by ``scale`` (``--rate-limit-time-scale``), so that ten minutes of traffic take
ten seconds; job durations are log-normal around one minute, scaled the same way. Each way of
running the fan-out runs in a fresh child process (``python -m benchmarks.fan_out --child
KIND``), which submits every lookup and waits for each, all started at once, as a mapped
task does; the simulator's ledger then says what happened.

Kinds:

* ``budget``: this provider. Submissions and :class:`NyneInteractionsTrigger` waits take their
  turn in the API key's request budget (the connection declares the scaled limits).
* ``no-budget``: the same provider with the budget switched off (the connection declares no
  limit): each request learns of the limit from its own 429.
* ``http``: the HTTP provider's ``HttpEventTrigger`` polling every 2 s (scaled); submissions
  as in ``no-budget``.
* ``pool4``: the older advice, an Airflow pool of 4 with deferred tasks counted: at most four
  lookups submitted or waiting at once (budget on).

Times in the table are scaled back to the real API's (divided by ``scale``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, SimulatorProcess, Table, airflow_env, percentile

NYNE_CONN_ID = "nyne_fan_out"
HTTP_CONN_ID = "http_fan_out"
KINDS = ("budget", "no-budget", "http", "pool4")
PER_MINUTE = 60
PER_HOUR = 1000
#: Log-normal spread of job durations around one minute (sigma of the underlying normal).
DURATION_SIGMA = 0.5
#: Tries of a submit task whose submission keeps failing (the fan-out example's retries=2).
SUBMIT_TRIES = 3
LABELS = {
    "budget": "this provider: one request budget per API key",
    "no-budget": "this provider, budget switched off",
    "http": "`HttpEventTrigger` every 2 s (HTTP provider)",
    "pool4": "pool of 4 (4 lookups at a time), budget on",
}


def send_time(index: int, per_minute: int, per_hour: int, scale: float) -> float:
    """The earliest time request ``index`` (from 0) can be sent, under fixed minute and hour windows."""
    return max((index // per_minute) * 60.0 * scale, (index // per_hour) * 3600.0 * scale)


def floor_seconds(durations: Sequence[float], per_minute: int, per_hour: int, scale: float) -> float:
    """
    The least wall time the rate limit allows for lookups of these job durations.

    Two bounds, the larger wins: every lookup needs a submission and a poll (``2 * n`` requests
    under the limit), and no job can finish before it is submitted, at the earliest, plus its
    duration (longest jobs submitted first).
    """
    requests = send_time(2 * len(durations) - 1, per_minute, per_hour, scale)
    jobs = max(
        (
            send_time(i, per_minute, per_hour, scale) + d
            for i, d in enumerate(sorted(durations, reverse=True))
        ),
        default=0.0,
    )
    return max(requests, jobs)


# Child side -----------------------------------------------------------------------------


async def _submit(client: Any, index: int, scale: float) -> tuple[str | None, int]:
    """Submit one lookup as a submit task would: retried (after a scaled retry delay) when a try fails."""
    from airflow_provider_nyne.client.errors import NyneError

    payload = {"social_media_url": f"https://x.com/fan_out_{index}", "type": "followers"}
    for attempt in range(1, SUBMIT_TRIES + 1):
        try:
            return await client.submit(payload), attempt
        except NyneError:
            if attempt == SUBMIT_TRIES:
                return None, attempt
            await asyncio.sleep(120 * scale)  # the example's retry_delay, scaled
    return None, SUBMIT_TRIES


async def _wait(kind: str, request_id: str, scale: float) -> str:
    if kind == "http":
        from airflow.providers.http.triggers.http import HttpEventTrigger

        trigger: Any = HttpEventTrigger(
            response_check_path="benchmarks._http_check.job_finished",
            http_conn_id=HTTP_CONN_ID,
            method="GET",
            endpoint="person/interactions",
            data={"request_id": request_id},
            poll_interval=2.0 * scale,
        )
    else:
        from airflow_provider_nyne.triggers.interactions import NyneInteractionsTrigger

        trigger = NyneInteractionsTrigger(
            request_id,
            NYNE_CONN_ID,
            end_time=time.time() + 7200 * scale,
            poll_interval=2.0 * scale,
            max_poll_interval=60.0 * scale,
        )
    run = trigger.run()
    try:
        async for event in run:
            return str(event.payload.get("status"))
        return "no event"
    except Exception as err:  # the HTTP provider's trigger raises on a 429 instead of firing an event
        return f"raised {type(err).__name__}"
    finally:
        await run.aclose()


async def _child_main(kind: str, count: int, scale: float) -> dict[str, Any]:
    from airflow_provider_nyne.client.retry import RetryPolicy
    from airflow_provider_nyne.hooks.nyne import NyneHook

    # Today's submit retries (3, honouring Retry-After); with the budget on a 429 is waited out.
    hook = NyneHook(NYNE_CONN_ID, retry=RetryPolicy(max_retries=3, backoff_base=scale, max_retry_after=7200))
    gate = asyncio.Semaphore(4) if kind == "pool4" else None
    outcomes: list[dict[str, Any]] = [{} for _ in range(count)]
    started = time.monotonic()

    async def lookup(index: int, client: Any) -> None:
        request_id, tries = await _submit(client, index, scale)
        outcomes[index].update(request_id=request_id, tries=tries)
        if request_id is None:
            outcomes[index]["status"] = "submit failed"
            return
        outcomes[index]["status"] = await _wait(kind, request_id, scale)
        outcomes[index]["done_at"] = time.monotonic() - started

    async def gated(index: int, client: Any) -> None:
        if gate is None:
            await lookup(index, client)
            return
        async with gate:
            await lookup(index, client)

    async with await hook.aget_conn() as client:
        await asyncio.gather(*(gated(i, client) for i in range(count)))
    return {"kind": kind, "wall_s": time.monotonic() - started, "outcomes": outcomes}


def _child(kind: str, count: int, scale: float) -> None:
    import airflow.sdk  # noqa: F401 - loaded before the clock starts, as in a running triggerer

    print(json.dumps(asyncio.run(_child_main(kind, count, scale))), flush=True)


# Parent side ----------------------------------------------------------------------------


@dataclass
class FanOutRun:
    """One kind's run: what the child saw and what the server counted."""

    kind: str
    count: int
    wall_s: float
    requests: int
    rejected_429: int
    rejected_429_first_window: int
    failed: int
    duplicates: int
    submit_retries: int
    delays: list[float]
    durations: list[float]

    def delay(self, pct: float) -> float | None:
        return percentile(self.delays, pct) if self.delays else None


def measure(
    sim: SimulatorProcess, workdir: Path, kind: str, count: int, scale: float, log: Any = print
) -> FanOutRun:
    """Run one kind in a fresh child against a freshly reset simulator."""
    started = time.monotonic()
    declared = (
        {"rate_limit_per_minute": 0, "rate_limit_per_hour": 0, "max_in_flight": 0}
        if kind in ("no-budget", "http")
        else {
            "rate_limit_per_minute": PER_MINUTE,
            "rate_limit_per_hour": PER_HOUR,
            "rate_limit_time_scale": scale,
        }
    )
    env = airflow_env(
        workdir,
        {
            f"AIRFLOW_CONN_{NYNE_CONN_ID.upper()}": sim.nyne_connection(**declared),
            f"AIRFLOW_CONN_{HTTP_CONN_ID.upper()}": sim.http_connection(),
        },
    )
    sim.reset()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.fan_out",
            "--child",
            kind,
            "--count",
            str(count),
            "--scale",
            str(scale),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=7200 * scale + 300,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"fan-out child {kind} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(lines[-1])
    log(f"   {kind}: {time.monotonic() - started:.0f} s")
    ledger = sim.ledger()
    settle_by = time.monotonic() + 600 * scale
    while (
        ledger["totals"]["jobs_finished"] < ledger["totals"]["submissions"] and time.monotonic() < settle_by
    ):
        time.sleep(0.2)  # a wait that gave up early leaves its job running: its duration counts for the floor
        ledger = sim.ledger()
    requests = ledger["requests"]
    first = min((r["time"] for r in requests), default=0.0)
    window = 60.0 * scale
    rejected = [r for r in requests if r["status"] == 429]
    per_target = Counter(s["request"].get("social_media_url") for s in ledger["submissions"])
    delays = [
        (job["completed_at"] and job["detected_at"] and job["detected_at"] - job["completed_at"]) or 0.0
        for job in ledger["jobs"]
        if job.get("detected_at") is not None and job.get("completed_at") is not None
    ]
    outcomes = result["outcomes"]
    return FanOutRun(
        kind=kind,
        count=count,
        wall_s=result["wall_s"],
        requests=len(requests),
        rejected_429=len(rejected),
        rejected_429_first_window=sum(1 for r in rejected if r["time"] < first + window),
        failed=sum(1 for o in outcomes if o.get("status") != "success"),
        duplicates=sum(n - 1 for n in per_target.values() if n > 1),
        submit_retries=sum(max(0, int(o.get("tries") or 1) - 1) for o in outcomes),
        delays=[max(0.0, d) / scale for d in delays],
        durations=[
            job["completed_at"] - job["submitted_at"]
            for job in ledger["jobs"]
            if job.get("completed_at") is not None
        ],
    )


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def fan_out_table(
    workdir: Path, count: int, scale: float, kinds: Sequence[str] = KINDS, log: Any = print
) -> tuple[Table, dict[str, FanOutRun]]:
    """The "fan-out under the rate limit" table: every kind side by side, same jobs, same limits."""
    flags = [
        "--rate-limit-per-minute",
        str(PER_MINUTE),
        "--rate-limit-per-hour",
        str(PER_HOUR),
        "--rate-limit-time-scale",
        str(scale),
        "--job-duration",
        str(60.0 * scale),
        "--job-duration-sigma",
        str(DURATION_SIGMA),
        "--job-duration-seed",
        "7",
    ]
    runs: dict[str, FanOutRun] = {}
    (workdir / "fan_out").mkdir(exist_ok=True)
    with SimulatorProcess(workdir / "fan_out", flags=flags) as sim:
        for kind in kinds:
            runs[kind] = measure(sim, workdir / "fan_out", kind, count, scale, log)
    # The seed gives every kind the same set of durations; the first run's are those of all.
    durations = max((run.durations for run in runs.values()), key=len)
    floor = floor_seconds(durations, PER_MINUTE, PER_HOUR, scale) / scale
    request_floor = send_time(2 * count - 1, PER_MINUTE, PER_HOUR, scale) / scale
    table = Table(
        key="fan_out",
        title=(
            f"Fan-out under the rate limit: {count} lookups on one API key limited to {PER_MINUTE}/minute "
            f"and {PER_HOUR:,}/hour, jobs log-normal around 1 min (all times at the real API's scale)"
        ),
        columns=[
            "way of waiting",
            "wall time",
            "vs floor",
            "requests per lookup",
            "429 answers (after the first minute)",
            "failed lookups",
            "duplicate submissions",
            "detection delay p50 / p95",
        ],
    )
    for kind, run in runs.items():
        wall = run.wall_s / scale
        p50, p95 = run.delay(50), run.delay(95)
        after_first = run.rejected_429 - run.rejected_429_first_window
        table.rows.append(
            [
                LABELS[kind],
                _minutes(wall),
                f"{wall / floor:.2f}x",
                f"{run.requests / run.count:.2f}",
                f"{run.rejected_429} ({after_first}, {after_first / max(1, run.requests):.1%} of requests)",
                f"{run.failed}/{run.count}",
                str(run.duplicates),
                "-" if p50 is None or p95 is None else f"{p50:.0f} / {p95:.0f} s",
            ]
        )
    table.notes += [
        f"Floor ({_minutes(floor)}): every lookup needs at least 2 requests (a submission and one poll), and "
        f"{2 * count} requests under fixed windows of {PER_MINUTE}/minute and {PER_HOUR:,}/hour cannot all be "
        f"sent before {_minutes(request_floor)}; and no job ends before its earliest possible submission plus "
        f"its duration (longest {max(durations) / scale / 60:.1f} min). Targets for this provider: 0 failed lookups, 0 duplicate submissions, 429s at most "
        "1% of requests once the first answer has been read, wall time within 1.25x of the floor.",
        f"Measured at {1 / scale:g}x speed: the simulator's windows were scaled by {scale:g} "
        f"(--rate-limit-time-scale) and job durations, poll intervals and retry delays with them; every "
        "time above is divided by the scale. Each kind ran in a fresh child process that submitted all "
        f"{count} lookups at once and waited for each (a mapped submit task retried up to "
        f"{SUBMIT_TRIES} tries, {120:g} s apart, when its submission failed: "
        + ", ".join(f"{k}: {runs[k].submit_retries}" for k in runs)
        + " tries retried). Detection delay: from the job's completion to the first answer that "
        "reported it, as the simulator's ledger recorded them.",
        "429 answers: all of them, and in brackets those after the first minute (before any answer has "
        "been read a process knows only the limits its connection declares).",
    ]
    return table, runs


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--child", choices=KINDS, help="run one kind (used by the parent)")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--scale", type=float, default=1 / 60)
    parser.add_argument("--only", choices=KINDS, action="append", help="parent: these kinds only")
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.count, args.scale)
        return
    from benchmarks._common import scratch_dir

    with scratch_dir("fan-out-") as workdir:
        table, _ = fan_out_table(workdir, args.count, args.scale, args.only or KINDS)
        print(table.markdown())


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    _main()
