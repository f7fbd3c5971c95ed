"""A triggerer's fleet: many waiting triggers in one event loop, polling the simulator.

Each measurement runs in a fresh child process (``python -m benchmarks.fleet --child KIND``)
so that memory baselines are comparable; the simulator runs in another process, so the CPU
measured (``time.process_time()`` of the child, all threads) is the client's alone.

The child imports what it needs, says ``READY``, reads the request ids from stdin (the
parent submits the jobs only then, so every run sees its jobs from their start), creates
one trigger per job, runs their ``run()`` generators with ``asyncio.gather`` until each
yields one event, and prints one JSON line with what it measured. A ticker task sleeping
10 ms records how late it wakes up: the longest lateness is the longest event-loop stall.

Kinds:

* ``nyne``: :class:`~airflow_provider_nyne.triggers.interactions.NyneInteractionsTrigger`.
* ``http``: the HTTP provider's ``HttpEventTrigger`` with a ``response_check_path``
  checking ``data.status`` (:mod:`benchmarks._http_check`), polling at a fixed interval.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks._common import (
    ROOT,
    SimulatorProcess,
    Table,
    airflow_env,
    compare,
    fmt_kib,
    fmt_ms,
    peak_rss_bytes,
    rss_bytes,
    spread_durations,
)

NYNE_CONN_ID = "nyne_bench"
HTTP_CONN_ID = "http_bench"
CHILD_KINDS = ("nyne", "http")
TICK = 0.01

# Child side -----------------------------------------------------------------------------


class _GcClock:
    """Time spent in garbage collections (``gc.callbacks``): CPU in total, wall for the longest."""

    def __init__(self) -> None:
        self.cpu = 0.0
        self.longest = 0.0
        self.full_collections = 0
        self._wall = 0.0
        self._cpu = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._wall, self._cpu = time.perf_counter(), time.process_time()
            return
        self.cpu += time.process_time() - self._cpu
        self.longest = max(self.longest, time.perf_counter() - self._wall)
        if info.get("generation") == 2:
            self.full_collections += 1


class _Ticker:
    """
    Sleeps ``TICK`` seconds in a loop and records how late it wakes up, and the RSS peak.

    Lateness has three causes: code running in the loop, garbage collections (which stop
    the whole process, their length depends on every object it holds) and, on a busy
    machine, the OS running other processes. ``max_late`` is all three; ``max_busy`` keeps
    only the first: the CPU the process used while the ticker waited, minus collections.
    """

    def __init__(self, gc_clock: _GcClock) -> None:
        self.max_late = 0.0
        self.max_busy = 0.0
        self.late_over_50ms = 0
        self.busy_over_50ms = 0
        self.peak_rss = rss_bytes()
        #: (seconds since start, lateness, busy part) of the stalls over 50 ms.
        self.stalls: list[tuple[float, float, float]] = []
        self.rss_timeline: list[tuple[float, int]] = []
        self._gc = gc_clock
        self._start = time.perf_counter()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        perf, cpu = time.perf_counter, time.process_time
        gc_clock = self._gc
        ticks = 0
        while True:
            before, cpu_before, gc_before = perf(), cpu(), gc_clock.cpu
            await asyncio.sleep(TICK)
            late = perf() - before - TICK
            busy = max(0.0, min(late, cpu() - cpu_before - (gc_clock.cpu - gc_before)))
            if late > self.max_late:
                self.max_late = late
            if busy > self.max_busy:
                self.max_busy = busy
            if late > 0.05:
                self.late_over_50ms += 1
                self.stalls.append((round(before - self._start, 3), round(late, 4), round(busy, 4)))
            if busy > 0.05:
                self.busy_over_50ms += 1
            ticks += 1
            if ticks % 10 == 0:
                rss = rss_bytes()
                if rss > self.peak_rss:
                    self.peak_rss = rss
                if ticks % 100 == 0:
                    self.rss_timeline.append((round(before - self._start, 1), rss))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass


async def _first_event(run: AsyncIterator[Any]) -> Any:
    """The first event a trigger yields and when (Unix time), as the triggerer takes it (then the generator is closed)."""
    try:
        async for event in run:
            return event.payload, time.time()
        return None, time.time()
    finally:
        aclose = getattr(run, "aclose", None)
        if aclose is not None:
            await aclose()


def _summarise_nyne(payload: Any) -> list[Any]:
    if not isinstance(payload, dict):
        return ["not-a-dict", None, None]
    status = payload.get("status")
    if status != "success":
        status = f"{status}: {payload.get('message')}"
    return [status, payload.get("request_id"), payload.get("total_count")]


def _summarise_http(payload: Any) -> list[Any]:
    if not isinstance(payload, dict) or payload.get("status") != "success":
        return [str(payload)[:200], None, None]
    body = json.loads(base64.standard_b64decode(payload["response"]["content"]))
    data = body["data"]
    status = "success" if data["status"] == "completed" else data["status"]
    return [status, data.get("request_id"), (data.get("result") or {}).get("total_count")]


def _nyne_waiters(ids: Sequence[str], interval: float | None) -> list[Callable[[], Awaitable[Any]]]:
    from airflow_provider_nyne.triggers.interactions import NyneInteractionsTrigger

    kwargs: dict[str, Any] = {"end_time": time.time() + 3600}
    if interval is not None:
        kwargs["poll_interval"] = interval
        kwargs["max_poll_interval"] = max(interval, 60.0)
    triggers = [NyneInteractionsTrigger(request_id=rid, nyne_conn_id=NYNE_CONN_ID, **kwargs) for rid in ids]
    return [lambda t=t: _first_event(t.run()) for t in triggers]


def _http_waiters(ids: Sequence[str], interval: float | None) -> list[Callable[[], Awaitable[Any]]]:
    from airflow.providers.http.triggers.http import HttpEventTrigger

    triggers = [
        HttpEventTrigger(
            response_check_path="benchmarks._http_check.job_finished",
            http_conn_id=HTTP_CONN_ID,
            method="GET",
            endpoint="person/interactions",
            data={"request_id": rid},
            poll_interval=interval if interval is not None else 2.0,
        )
        for rid in ids
    ]
    return [lambda t=t: _first_event(t.run()) for t in triggers]


def _waiters(kind: str, ids: Sequence[str], interval: float | None) -> list[Callable[[], Awaitable[Any]]]:
    return _nyne_waiters(ids, interval) if kind == "nyne" else _http_waiters(ids, interval)


async def _warm_up(kind: str, request_id: str) -> None:
    """One short wait in a throwaway loop: lazy imports and one-time set-up, as in a triggerer that has been running."""
    await asyncio.gather(*(w() for w in _waiters(kind, [request_id], 0.05)))


async def _ticker_cost(seconds: float = 1.0) -> float:
    """CPU seconds per second that the stall ticker costs on its own (subtracted from the measurement)."""
    ticker = _Ticker(_GcClock())
    cpu = time.process_time()
    ticker.start()
    await asyncio.sleep(seconds)
    await ticker.stop()
    return (time.process_time() - cpu) / seconds


async def _child_main(
    kind: str, interval: float | None, ids: Sequence[str], ticker_rate: float
) -> dict[str, Any]:
    gc.collect()
    rss_before = rss_bytes()
    peak_before = peak_rss_bytes()
    gc_clock = _GcClock()
    gc.callbacks.append(gc_clock)
    ticker = _Ticker(gc_clock)
    ticker.start()
    await asyncio.sleep(0.05)
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0, wall0 = time.process_time(), time.monotonic()
    waiters = _waiters(kind, ids, interval)
    payloads = await asyncio.gather(*(w() for w in waiters), return_exceptions=True)
    cpu1, wall1 = time.process_time(), time.monotonic()
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    await ticker.stop()
    gc.callbacks.remove(gc_clock)
    peak_after = peak_rss_bytes()
    peak = max(ticker.peak_rss, peak_after if peak_after > peak_before else 0)
    summarise = _summarise_http if kind == "http" else _summarise_nyne
    events = [
        [f"{type(p).__name__}: {p}"[:300], None, None, None]
        if isinstance(p, BaseException)
        else [*summarise(p[0]), p[1]]
        for p in payloads
    ]
    return {
        "kind": kind,
        "count": len(ids),
        "cpu_s": cpu1 - cpu0 - ticker_rate * (wall1 - wall0),
        "ticker_cpu_s": ticker_rate * (wall1 - wall0),
        "system_cpu_s": usage1.ru_stime - usage0.ru_stime,
        "wall_s": wall1 - wall0,
        "rss_before": rss_before,
        "peak_growth": max(0, peak - rss_before),
        "max_stall_s": ticker.max_late,
        "max_busy_stall_s": ticker.max_busy,
        "stalls_over_50ms": ticker.late_over_50ms,
        "busy_stalls_over_50ms": ticker.busy_over_50ms,
        "stalls": ticker.stalls[:50],
        "rss_timeline": [(t, r - rss_before) for t, r in ticker.rss_timeline],
        "gc_longest_s": gc_clock.longest,
        "gc_cpu_s": gc_clock.cpu,
        "gc_full_collections": gc_clock.full_collections,
        "events": events,
    }


def _child(kind: str, interval: float | None, profile: str | None, warmup: str | None) -> None:
    import airflow.sdk
    import airflow.triggers.base  # noqa: F401

    patch = os.environ.get("NYNE_BENCH_PATCH")
    if patch:
        # Try a change to code under test without editing it: a file run before the measurement.
        namespace: dict[str, Any] = {"__name__": "nyne_bench_patch"}
        exec(compile(Path(patch).read_text(), patch, "exec"), namespace)
    if warmup:
        asyncio.run(_warm_up(kind, warmup))
    ticker_rate = asyncio.run(_ticker_cost())
    print("READY", flush=True)
    ids: list[str] = json.loads(sys.stdin.readline())
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    result = asyncio.run(_child_main(kind, interval, ids, ticker_rate))
    if profile:
        profiler.disable()
        profiler.dump_stats(profile)
    print(json.dumps(result), flush=True)


# Parent side ----------------------------------------------------------------------------


@dataclass
class FleetRun:
    """What one child measured, with the server's view of the same jobs."""

    kind: str
    count: int
    cpu_s: float
    ticker_cpu_s: float
    system_cpu_s: float
    wall_s: float
    peak_growth: int
    max_stall_s: float
    max_busy_stall_s: float
    stalls_over_50ms: int
    busy_stalls_over_50ms: int
    stalls: list[tuple[float, ...]]
    rss_timeline: list[tuple[float, ...]]
    gc_longest_s: float
    gc_cpu_s: float
    gc_full_collections: int
    polls: int
    max_polls: int
    correct: int
    failures: list[str]
    mean_delay_s: float | None
    max_delay_s: float | None
    submit_span_s: float
    sim_cpu_s: float

    @property
    def cpu_per_poll(self) -> float | None:
        return self.cpu_s / self.polls if self.polls else None

    @property
    def rss_per_waiter(self) -> float:
        return self.peak_growth / self.count

    @property
    def polls_per_job(self) -> float:
        return self.polls / self.count


def measure(
    sim: SimulatorProcess,
    workdir: Path,
    kind: str,
    durations: Sequence[float],
    interval: float | None,
    *,
    timeout: float,
    profile: str | None = None,
) -> FleetRun:
    """Run one kind in a fresh child against fresh jobs of the given durations."""
    env = airflow_env(
        workdir,
        {
            f"AIRFLOW_CONN_{NYNE_CONN_ID.upper()}": sim.nyne_connection(),
            f"AIRFLOW_CONN_{HTTP_CONN_ID.upper()}": sim.http_connection(),
            # Over HTTPS both triggers trust the simulator's CA the way a deployment trusts a
            # private one (httpx and OpenSSL's default paths both read it).
            **({"SSL_CERT_FILE": sim.ca_file} if sim.ca_file else {}),
        },
    )
    sim.reset()
    warmup = sim.submit_jobs([0.1])[0]
    args = [sys.executable, "-m", "benchmarks.fleet", "--child", kind, "--warmup", warmup]
    if interval is not None:
        args += ["--interval", str(interval)]
    if profile:
        args += ["--profile", profile]
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdin is not None
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "READY":
            _, err = proc.communicate(timeout=30)
            raise RuntimeError(f"fleet child {kind} did not start: {line}{err[-3000:]}")
        sim.reset()
        ids = sim.submit_jobs(durations)
        sim_cpu0 = sim.cpu_seconds()
        out, err = proc.communicate(json.dumps(ids) + "\n", timeout=timeout)
        sim_cpu1 = sim.cpu_seconds()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    lines = [x for x in out.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"fleet child {kind} failed ({proc.returncode}):\n{out[-2000:]}\n{err[-4000:]}")
    result = json.loads(lines[-1])
    counts = sim.poll_counts()
    polls = [counts.get(rid, 0) for rid in ids]
    expected = sim.final_states(ids)
    failures = []
    delays = []
    for rid, (status, event_rid, total, fired_at) in zip(ids, result["events"], strict=True):
        want_status, want_total, ended_at = expected[rid]
        if fired_at is not None and ended_at is not None:
            delays.append(max(0.0, fired_at - ended_at))
        if status == "success" and want_status == "completed" and event_rid == rid and total == want_total:
            continue
        failures.append(f"{rid}: got {status!r} {event_rid!r} {total!r}, expected {want_status} {want_total}")
    return FleetRun(
        kind=kind,
        count=len(ids),
        cpu_s=result["cpu_s"],
        ticker_cpu_s=result["ticker_cpu_s"],
        system_cpu_s=result["system_cpu_s"],
        wall_s=result["wall_s"],
        peak_growth=result["peak_growth"],
        max_stall_s=result["max_stall_s"],
        max_busy_stall_s=result["max_busy_stall_s"],
        stalls_over_50ms=result["stalls_over_50ms"],
        busy_stalls_over_50ms=result["busy_stalls_over_50ms"],
        gc_longest_s=result["gc_longest_s"],
        gc_cpu_s=result["gc_cpu_s"],
        gc_full_collections=result["gc_full_collections"],
        stalls=[tuple(x) for x in result["stalls"]],
        rss_timeline=[tuple(x) for x in result["rss_timeline"]],
        polls=sum(polls),
        max_polls=max(polls, default=0),
        correct=len(ids) - len(failures),
        mean_delay_s=sum(delays) / len(delays) if delays else None,
        max_delay_s=max(delays, default=None),
        submit_span_s=sim.last_submit_span,
        failures=failures,
        sim_cpu_s=sim_cpu1 - sim_cpu0,
    )


def _stall(run: FleetRun) -> str:
    return f"{fmt_ms(run.max_busy_stall_s, 0)} ({fmt_ms(run.max_stall_s, 0)})"


def _delay(run: FleetRun) -> str:
    if run.mean_delay_s is None or run.max_delay_s is None:
        return "-"
    return f"{run.mean_delay_s:.1f} / {run.max_delay_s:.1f} s"


STALL_NOTE = (
    "Longest loop stall: how late a task sleeping 10 ms woke up, counting only the CPU the process "
    "used meanwhile minus garbage collections; in brackets the raw wall-clock lateness, which also "
    "holds garbage-collection pauses (they scale with everything the process holds, Airflow "
    "included) and time the OS gave to other processes on this shared machine. Airflow warns at 200 ms."
)


def fleet_table(
    sim: SimulatorProcess, workdir: Path, count: int, low: float, high: float, interval: float
) -> tuple[Table, dict[str, FleetRun]]:
    """
    Table 1: our trigger against the HTTP provider's generic polling trigger, same jobs, same simulator.

    Over HTTPS when ``sim`` serves TLS (the ``fleet_tls`` table).
    """
    durations = spread_durations(count, low, high)
    timeout = high * 3 + 120
    runs: dict[str, FleetRun] = {}
    runs["http"] = measure(sim, workdir, "http", durations, interval, timeout=timeout)
    runs["nyne"] = measure(sim, workdir, "nyne", durations, None, timeout=timeout)
    nyne, http = runs["nyne"], runs["http"]
    labels = {
        "nyne": "`NyneInteractionsTrigger` (default backoff from 2 s)",
        "http": f"`HttpEventTrigger` (HTTP provider), every {interval:g} s",
    }
    over = " over HTTPS" if sim.tls else ""
    table = Table(
        key="fleet_tls" if sim.tls else "fleet",
        title=f"Triggerer fleet{over}: {count:,} waiting triggers in one event loop, jobs of {low:g}-{high:g} s",
        columns=[
            "trigger",
            "CPU per status poll",
            "polls per job (mean / max)",
            "detection delay (mean / max)",
            "client CPU in total",
            "peak RSS growth per waiting trigger",
            "longest loop stall",
            "correct events",
        ],
    )
    for kind in ("nyne", "http"):
        run = runs[kind]
        table.rows.append(
            [
                labels[kind],
                fmt_ms(run.cpu_per_poll, 3),
                f"{run.polls_per_job:.1f} / {run.max_polls}",
                _delay(run),
                f"{run.cpu_s:.2f} s",
                fmt_kib(run.rss_per_waiter),
                _stall(run),
                f"{run.correct}/{run.count}",
            ]
        )
    table.notes += [
        f"Ours used {compare(nyne.cpu_per_poll, http.cpu_per_poll, 'CPU per poll')}, "
        f"{compare(nyne.rss_per_waiter, http.rss_per_waiter, 'memory per waiting trigger')} and "
        f"{compare(nyne.cpu_s, http.cpu_s, 'client CPU in total')} for the same jobs. "
        "Guards (CPU and memory are not goals here: the rate limit bounds a fleet first): CPU per poll no "
        "worse than the generic trigger's, memory per waiting trigger under 20 KiB, loop stalls under the "
        "200 ms at which Airflow warns.",
        "CPU per status poll = all CPU of the triggerer process (user + system, every thread) from "
        "creating the triggers to the last event, minus what the stall ticker costs on its own "
        f"(measured idle beforehand: {nyne.ticker_cpu_s:.2f} s and {http.ticker_cpu_s:.2f} s), divided by "
        "the status requests the simulator counted; the kernel's share (loopback sockets, timers) was "
        f"{nyne.system_cpu_s / (nyne.cpu_s + nyne.ticker_cpu_s):.0%} for ours and "
        f"{http.system_cpu_s / (http.cpu_s + http.ticker_cpu_s):.0%} for the HTTP trigger. Polls per job and detection "
        "delay (event time minus the job's completion time) show the schedules: backoff makes fewer "
        "polls and notices long jobs later; the HTTP trigger's fixed interval stretches when its loop "
        "falls behind (each poll opens a new aiohttp session and connection, reloads the check "
        "module in a thread).",
        STALL_NOTE,
        f"Every event was checked against the simulator (status success, request id, total_count). "
        f"The simulator ran in its own process and used {nyne.sim_cpu_s:.1f} s of CPU for ours and "
        f"{http.sim_cpu_s:.1f} s for the HTTP trigger; its rate limits were off, and the `nyne` "
        "connection declared none (each poll still took its turn in the key's request budget, "
        "with its default cap of 4 requests in flight). Jobs were submitted "
        f"just before each run, longest first (within {max(nyne.submit_span_s, http.submit_span_s):.1f} s).",
    ]
    if sim.tls:
        table.notes.append(
            "Over HTTPS, as the real API is reached: the simulator served TLS with a throwaway CA that "
            "both triggers trusted through SSL_CERT_FILE. Every new connection costs a TLS handshake; "
            "the provider's trigger reuses its pool's connections, the HTTP trigger opens one per poll."
        )
    for run in runs.values():
        if run.failures:
            table.notes.append(f"{run.kind}: {len(run.failures)} wrong events, e.g. {run.failures[0]}")
    return table, runs


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--child", choices=CHILD_KINDS, help="run one measurement (used by the parent)")
    parser.add_argument("--interval", type=float)
    parser.add_argument("--profile", help="write cProfile stats of the child here")
    parser.add_argument("--warmup", help="child: request id of a short job to wait for before measuring")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--low", type=float, default=1.0)
    parser.add_argument("--high", type=float, default=30.0)
    parser.add_argument("--only", choices=CHILD_KINDS, help="parent: measure one kind only")
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.interval, args.profile, args.warmup)
        return
    from benchmarks._common import scratch_dir

    with scratch_dir("fleet-") as workdir, SimulatorProcess(workdir) as sim:
        if args.only:
            run = measure(
                sim,
                workdir,
                args.only,
                spread_durations(args.count, args.low, args.high),
                args.interval,
                timeout=args.high * 3 + 120,
                profile=args.profile,
            )
            print(run)
            return
        print(fleet_table(sim, workdir, args.count, args.low, args.high, args.interval or 2.0)[0].markdown())


if __name__ == "__main__":
    _main()
