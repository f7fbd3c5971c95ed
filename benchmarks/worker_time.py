"""Worker time while waiting: worker-slot-seconds of a deferrable sensor versus poke-mode sensors.

Measured in process, in a fresh child (``python -m benchmarks.worker_time --child``): each
sensor's ``execute`` (and, for the deferrable one, ``execute_complete``) is timed as a
worker would run it, all lookups at once, against the simulator in its own process. The
deferrable sensor's trigger runs in an event loop standing in for the triggerer, after a
``serialize()`` round trip as the triggerer does; the time between deferring and resuming
holds no worker slot. A poke-mode sensor holds its slot for its whole wait.

Sensors compared:

* ``NyneInteractionsSensor`` (deferrable, the default);
* ``NyneInteractionsSensor(deferrable=False, mode="poke")`` (same backoff, in the worker);
* the HTTP provider's ``HttpSensor`` in poke mode with a ``response_check`` on ``data.status``
  every 2 s, the generic alternative.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks._common import ROOT, SimulatorProcess, Table, airflow_env, fmt_ms, spread_durations

NYNE_CONN_ID = "nyne_bench"
HTTP_CONN_ID = "http_bench"
VARIANTS = ("deferrable", "nyne-poke", "http-poke")
LABELS = {
    "deferrable": "`NyneInteractionsSensor` (deferrable, default)",
    "nyne-poke": '`NyneInteractionsSensor(deferrable=False, mode="poke")`',
    "http-poke": '`HttpSensor` (HTTP provider), `mode="poke"`, every 2 s',
}


# Child side -----------------------------------------------------------------------------


def _status_done(response: Any) -> bool:
    return bool(response.json()["data"]["status"] in ("completed", "failed"))


def _make_sensor(variant: str, index: int, request_id: str) -> Any:
    if variant == "http-poke":
        from airflow.providers.http.sensors.http import HttpSensor

        return HttpSensor(
            task_id=f"wait_{index}",
            http_conn_id=HTTP_CONN_ID,
            endpoint="person/interactions",
            request_params={"request_id": request_id},
            response_check=_status_done,
            poke_interval=2,
            mode="poke",
        )
    from airflow_provider_nyne.sensors.interactions import NyneInteractionsSensor

    if variant == "deferrable":
        return NyneInteractionsSensor(
            task_id=f"wait_{index}", request_id=request_id, nyne_conn_id=NYNE_CONN_ID
        )
    return NyneInteractionsSensor(
        task_id=f"wait_{index}",
        request_id=request_id,
        nyne_conn_id=NYNE_CONN_ID,
        deferrable=False,
        mode="poke",
    )


def _run_poke(sensor: Any, record: dict[str, Any]) -> None:
    started = time.monotonic()
    try:
        sensor.execute({})
        record["ok"] = True
    except Exception as err:
        record["error"] = f"{type(err).__name__}: {err}"[:300]
    record["worker_s"] = time.monotonic() - started
    record["done_at"] = time.monotonic()
    record["starts"] = 1


def _first_run(sensor: Any, record: dict[str, Any]) -> Any:
    """A deferrable sensor's first ``execute``: the TaskDeferred it raised, or None if already done."""
    from airflow_provider_nyne._compat import TaskDeferred

    started = time.monotonic()
    deferred = None
    try:
        sensor.execute({})
        record["ok"] = True
    except TaskDeferred as exc:
        deferred = exc
    except Exception as err:
        record["error"] = f"{type(err).__name__}: {err}"[:300]
    record["execute_s"] = record["worker_s"] = time.monotonic() - started
    record["starts"] = 1
    record["done_at"] = time.monotonic()
    return deferred


async def _wait_and_resume(sensor: Any, deferred: Any, record: dict[str, Any]) -> None:
    """The triggerer's part (trigger rebuilt from ``serialize()``), then ``execute_complete`` in a worker thread."""
    classpath, kwargs = deferred.trigger.serialize()
    module, _, name = classpath.rpartition(".")
    trigger = getattr(importlib.import_module(module), name)(**kwargs)
    deferred_at = time.monotonic()
    run = trigger.run()
    try:
        event = await run.__anext__()
    finally:
        await run.aclose()
    record["deferred_s"] = time.monotonic() - deferred_at

    def resume() -> None:
        started = time.monotonic()
        try:
            getattr(sensor, deferred.method_name)({}, event=event.payload)
            record["ok"] = True
        except Exception as err:
            record["error"] = f"{type(err).__name__}: {err}"[:300]
        record["resume_s"] = time.monotonic() - started

    await asyncio.to_thread(resume)
    record["worker_s"] += record["resume_s"]
    record["starts"] = 2
    record["done_at"] = time.monotonic()


def _child() -> None:
    import airflow.providers.http.sensors.http
    import airflow.sdk

    # A task process runs under Airflow's supervisor: its modules are loaded before the task starts.
    import airflow.sdk.execution_time.supervisor  # noqa: F401

    import airflow_provider_nyne.sensors.interactions
    import airflow_provider_nyne.triggers.interactions  # noqa: F401

    print("READY", flush=True)
    plan: dict[str, list[str]] = json.loads(sys.stdin.readline())
    started = time.monotonic()
    records: dict[str, list[dict[str, Any]]] = {v: [{} for _ in plan[v]] for v in plan}
    # Deferrable sensors' first runs one after the other: in a deployment each runs in its own
    # process, so they should not compete with each other for this process's CPU.
    sensors = [_make_sensor("deferrable", i, rid) for i, rid in enumerate(plan.get("deferrable", []))]
    deferrals = [_first_run(sensor, records["deferrable"][i]) for i, sensor in enumerate(sensors)]
    threads = []
    for variant in ("nyne-poke", "http-poke"):
        for index, rid in enumerate(plan.get(variant, [])):
            thread = threading.Thread(
                target=_run_poke, args=(_make_sensor(variant, index, rid), records[variant][index])
            )
            thread.start()
            threads.append(thread)

    async def triggerer() -> None:
        await asyncio.gather(
            *(
                _wait_and_resume(sensor, deferred, records["deferrable"][i])
                for i, (sensor, deferred) in enumerate(zip(sensors, deferrals, strict=True))
                if deferred is not None
            )
        )

    asyncio.run(triggerer())
    for thread in threads:
        thread.join()
    for variant_records in records.values():
        for record in variant_records:
            record["done_at"] = record.get("done_at", started) - started
    print(json.dumps(records), flush=True)


# Parent side ----------------------------------------------------------------------------


def worker_time_table(sim: SimulatorProcess, workdir: Path, count: int, low: float, high: float) -> Table:
    """Table 2: worker-slot-seconds for ``count`` lookups per sensor, all waiting at once."""
    import subprocess

    env = airflow_env(
        workdir,
        {
            f"AIRFLOW_CONN_{NYNE_CONN_ID.upper()}": sim.nyne_connection(),
            f"AIRFLOW_CONN_{HTTP_CONN_ID.upper()}": sim.http_connection(),
        },
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.worker_time", "--child"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "READY":
            _, err = proc.communicate(timeout=30)
            raise RuntimeError(f"worker-time child did not start: {line}{err[-3000:]}")
        sim.reset()
        durations = spread_durations(count * len(VARIANTS), low, high, seed=3)
        ids = sim.submit_jobs(durations)
        plan = {v: ids[i * count : (i + 1) * count] for i, v in enumerate(VARIANTS)}
        out, err = proc.communicate(json.dumps(plan) + "\n", timeout=high * 4 + 120)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    lines = [x for x in out.splitlines() if x.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker-time child failed ({proc.returncode}):\n{out[-2000:]}\n{err[-4000:]}")
    records: dict[str, list[dict[str, Any]]] = json.loads(lines[-1])
    polls = sim.poll_counts()
    table = Table(
        key="worker_time",
        title=f"Worker time while waiting: {count} lookups per sensor, jobs of {low:g}-{high:g} s, all at once",
        columns=[
            "sensor",
            "worker-slot-seconds (all lookups)",
            "per lookup",
            "time to done (mean)",
            "status polls per lookup",
            "task starts per lookup",
            "succeeded",
        ],
    )
    totals = {}
    for variant in VARIANTS:
        recs = records[variant]
        worker = sum(r.get("worker_s", 0.0) for r in recs)
        totals[variant] = worker
        ok = sum(1 for r in recs if r.get("ok"))
        table.rows.append(
            [
                LABELS[variant],
                f"{worker:.1f} s" if worker >= 1 else fmt_ms(worker, 0),
                f"{worker / len(recs):.2f} s" if worker / len(recs) >= 1 else fmt_ms(worker / len(recs), 1),
                f"{sum(r['done_at'] for r in recs) / len(recs):.1f} s",
                f"{sum(polls.get(rid, 0) for rid in plan[variant]) / len(recs):.1f}",
                f"{sum(r.get('starts', 0) for r in recs) / len(recs):g}",
                f"{ok}/{len(recs)}",
            ]
        )
        errors = [r["error"] for r in recs if "error" in r]
        if errors:
            table.notes.append(f"{variant}: {len(errors)} failed, e.g. {errors[0]}")
    table.notes.insert(
        0,
        f"While the jobs ran, the deferrable sensor held worker slots for {fmt_ms(totals['deferrable'], 0)} in "
        f"total (its first status check, then `execute_complete`), the same sensor in poke mode for "
        f"{totals['nyne-poke']:.0f} s and `HttpSensor` for {totals['http-poke']:.0f} s: the whole wait. "
        "Worker time is the measured duration of `execute` plus, after deferring, `execute_complete`; "
        "the wait in between ran in an event loop standing in for the triggerer. In a deployment each "
        "task start also costs Airflow's own start-up (a process, a DAG-file parse: see the parse table), "
        "paid twice by a deferrable task (start and resume) and once by a poking one.",
    )
    return table


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="worker time while waiting")
    parser.add_argument("--child", action="store_true", help="run the measurement (used by the parent)")
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--low", type=float, default=8.0)
    parser.add_argument("--high", type=float, default=12.0)
    args = parser.parse_args(argv)
    if args.child:
        _child()
        return
    from benchmarks._common import scratch_dir

    with scratch_dir("worker-") as workdir, SimulatorProcess(workdir) as sim:
        print(worker_time_table(sim, workdir, args.count, args.low, args.high).markdown())


if __name__ == "__main__":
    _main()
