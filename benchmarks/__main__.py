"""Run every benchmark side by side, print the tables and write ``benchmarks/RESULTS.md``.

Usage::

    python -m benchmarks                 # everything, default sizes (what `make bench` runs)
    python -m benchmarks --only fleet    # one section: fan_out, fleet, fleet_tls, worker_time, parse, schedule
    python -m benchmarks --size small    # tiny sizes: checks the code paths in seconds, numbers meaningless
    python -m benchmarks --output -      # print only, write no file
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks._common import BENCH_DIR, SimulatorProcess, Table, compile_sources, machine_info, scratch_dir

SECTIONS = ("fan_out", "fleet", "fleet_tls", "worker_time", "parse", "schedule")


@dataclass(frozen=True)
class Sizes:
    """
    How big each benchmark runs.

    :param fan_out: lookups in the fan-out table
    :param fan_out_scale: how much faster than the real API the fan-out's windows and jobs run
    :param fleet: waiting triggers in the fleet table
    :param fleet_jobs: shortest and longest job of the fleet, seconds
    :param fleet_interval: the generic trigger's fixed poll interval, seconds
    :param fleet_tls_jobs: shortest and longest job of the HTTPS fleet table, seconds
    :param worker: lookups per sensor in the worker-time table
    :param worker_jobs: shortest and longest job of the worker-time table, seconds
    :param parse_reps: parses of each file in forked children, per zygote
    :param parse_zygotes: zygote processes the parse table pools (see ``benchmarks.parse.ZYGOTES``)
    :param fresh_reps: parses of one file in fresh interpreters
    """

    fan_out: int
    fan_out_scale: float
    fleet: int
    fleet_jobs: tuple[float, float]
    fleet_interval: float
    fleet_tls_jobs: tuple[float, float]
    worker: int
    worker_jobs: tuple[float, float]
    parse_reps: int
    parse_zygotes: int
    fresh_reps: int


SIZES = {
    "full": Sizes(
        fan_out=300,
        fan_out_scale=1 / 60,
        fleet=1000,
        fleet_jobs=(1.0, 30.0),
        fleet_interval=2.0,
        fleet_tls_jobs=(1.0, 15.0),
        worker=20,
        worker_jobs=(8.0, 12.0),
        parse_reps=15,
        parse_zygotes=3,
        fresh_reps=3,
    ),
    "small": Sizes(
        fan_out=6,
        fan_out_scale=1 / 600,
        fleet=5,
        fleet_jobs=(0.5, 1.0),
        fleet_interval=0.5,
        fleet_tls_jobs=(0.5, 1.0),
        worker=2,
        worker_jobs=(0.5, 1.0),
        parse_reps=2,
        parse_zygotes=1,
        fresh_reps=1,
    ),
}


def run(sections: Sequence[str], sizes: Sizes, log: Callable[[str], None] = print) -> list[Table]:
    """Run the named sections in order and return their tables."""
    from benchmarks.fan_out import fan_out_table
    from benchmarks.fleet import fleet_table
    from benchmarks.parse import parse_table
    from benchmarks.poll_schedule import poll_schedule_table
    from benchmarks.worker_time import worker_time_table

    compile_sources()
    tables: list[Table] = []
    with scratch_dir("run-") as workdir:
        needs_sim = {"fleet", "worker_time"} & set(sections)
        sim = SimulatorProcess(workdir).start() if needs_sim else None
        tls_sim = None
        try:
            if "fleet_tls" in sections:
                (workdir / "tls").mkdir()
                tls_sim = SimulatorProcess(workdir / "tls", tls=True).start()
            for section in sections:
                started = time.monotonic()
                log(f"-- {section} ...")
                if section == "fan_out":
                    table = fan_out_table(workdir, sizes.fan_out, sizes.fan_out_scale, log=log)[0]
                elif section == "fleet":
                    assert sim is not None
                    low, high = sizes.fleet_jobs
                    table = fleet_table(sim, workdir, sizes.fleet, low, high, sizes.fleet_interval)[0]
                elif section == "fleet_tls":
                    assert tls_sim is not None
                    low, high = sizes.fleet_tls_jobs
                    table = fleet_table(
                        tls_sim, workdir / "tls", sizes.fleet, low, high, sizes.fleet_interval
                    )[0]
                elif section == "worker_time":
                    assert sim is not None
                    low, high = sizes.worker_jobs
                    table = worker_time_table(sim, workdir, sizes.worker, low, high)
                elif section == "parse":
                    table = parse_table(
                        workdir / "parse", sizes.parse_reps, sizes.fresh_reps, zygotes=sizes.parse_zygotes
                    )
                elif section == "schedule":
                    table = poll_schedule_table()
                else:
                    raise ValueError(f"unknown section {section!r}")
                log(f"   {section} took {time.monotonic() - started:.0f} s")
                log(table.markdown())
                tables.append(table)
        finally:
            for server in (sim, tls_sim):
                if server is not None:
                    server.stop()
    return tables


def results_markdown(tables: Sequence[Table], info: dict[str, str], elapsed: float, command: str) -> str:
    """The whole RESULTS.md: how it was measured, on what, then every table."""
    lines = [
        "# Benchmark results",
        "",
        f"Produced by `{command}` in {elapsed:.0f} s on {info['date']}. Each comparison ran side by "
        "side in the same run, against the same local simulator (in its own process). The machine is "
        "shared with other work, so absolute numbers are noisy; the ratios between rows measured "
        "together are what to read.",
        "",
        "| machine | |",
        "| --- | --- |",
    ]
    lines += [f"| {key} | {value} |" for key, value in info.items()]
    lines.append("")
    lines += [table.markdown() for table in tables]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks``."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only this section (repeatable)"
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument(
        "--output", default=str(BENCH_DIR / "RESULTS.md"), help="where to write the results ('-': nowhere)"
    )
    args = parser.parse_args(argv)
    sections = [s for s in SECTIONS if s in args.only] if args.only else list(SECTIONS)
    info = machine_info()
    print("\n".join(f"{key}: {value}" for key, value in info.items()), flush=True)
    started = time.monotonic()
    tables = run(sections, SIZES[args.size], log=lambda text: print(text, flush=True))
    elapsed = time.monotonic() - started
    command = (
        "make bench"
        if not args.only and args.size == "full"
        else "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    )
    if args.output != "-":
        Path(args.output).write_text(results_markdown(tables, info, elapsed, command))
        print(f"wrote {args.output} ({elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
