"""``make demo``: run the followers example DAG end to end, exactly as a user would.

1. Start the local Nyne simulator on a free loopback port, unless ``NYNE_API_KEY`` and
   ``NYNE_API_SECRET`` are set: then the real API (``NYNE_API_URL``, default
   https://api.nyne.ai) is used and the run costs credits (3 for a lookup with results).
2. Create a throwaway Airflow home in ``.demo/`` (SQLite, recreated on every run) whose dags
   folder is ``example_dags/``, with the ``nyne_default`` connection in the environment.
3. Run ``airflow db migrate`` and ``airflow dags test example_nyne_followers_to_storage`` as
   subprocesses, logging to ``.demo/logs/``.
4. Print where the output landed and its first rows; exit non-zero if anything failed.

Options: ``--profile-url URL`` (the DAG's ``profile_url`` param), ``--rows N`` (rows shown).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / ".demo"
DAG_ID = "example_nyne_followers_to_storage"
REAL_API_URL = "https://api.nyne.ai"


def say(message: str = "") -> None:
    print(message, flush=True)


class Redactor:
    """Removes the API credentials from any text before it is shown."""

    def __init__(self, *secrets: str) -> None:
        self._secrets = [s for s in secrets if s]

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


@contextmanager
def nyne_api(redactor: Redactor) -> Iterator[tuple[dict[str, str], bool]]:
    """Yield (environment for Airflow, whether it is the real API)."""
    key, secret = os.environ.get("NYNE_API_KEY", ""), os.environ.get("NYNE_API_SECRET", "")
    if key and secret:
        url = os.environ.get("NYNE_API_URL", REAL_API_URL).rstrip("/")
        redactor._secrets += [key, secret]
        say(
            f"Using the real Nyne API at {url} (NYNE_API_KEY/NYNE_API_SECRET are set): this run costs credits."
        )
        conn = {"conn_type": "nyne", "login": key, "password": secret, "host": url}
        yield {"AIRFLOW_CONN_NYNE_DEFAULT": json.dumps(conn)}, True
        return
    from airflow_provider_nyne.testing.simulator import NyneSimulator

    # A few seconds per job, so the sensor really defers and polls; polls come every second.
    with NyneSimulator(job_duration=3.0, rate_limit_per_minute=None, rate_limit_per_hour=None) as sim:
        say(
            f"Started the local Nyne simulator at {sim.url} (set NYNE_API_KEY/NYNE_API_SECRET for the real API)."
        )
        yield {**sim.airflow_env(), "NYNE_EXAMPLE_POLL_INTERVAL": "1"}, False


def airflow_command() -> list[str]:
    """The ``airflow`` CLI of this interpreter's environment."""
    script = Path(sys.executable).with_name("airflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "airflow"]


def run_step(title: str, args: Sequence[str], env: dict[str, str], log: Path, redactor: Redactor) -> bool:
    """Run one CLI step with its output in ``log``; on failure show the log's tail."""
    say(f"-> {title}: airflow {' '.join(args)}")
    started = time.monotonic()
    with log.open("w") as handle:
        code = subprocess.call(
            [*airflow_command(), *args], env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT
        )
    say(
        f"   {'done' if code == 0 else f'FAILED (exit {code})'} in {time.monotonic() - started:.1f} s; log: {rel(log)}"
    )
    if code != 0:
        tail = log.read_text(errors="replace").splitlines()[-40:]
        say(redactor("\n".join("   | " + line for line in tail)))
    return code == 0


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run_summary(db: Path) -> tuple[str | None, list[tuple[str, str]]]:
    """The state of the DAG's latest run and its task states, read from the metadata database."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute(
            "SELECT run_id, state FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (DAG_ID,)
        ).fetchone()
        if row is None:
            return None, []
        tasks = conn.execute(
            "SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ? ORDER BY start_date",
            (DAG_ID, row[0]),
        ).fetchall()
    return row[1], [(t, s or "none") for t, s in tasks]


def show_rows(path: Path, limit: int) -> int:
    """Print a short table of the landed records; return how many there are."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    columns = ["username", "display_name", "followers_count", "verified"]
    table = [[_cell(r.get(c)) for c in columns] for r in records[:limit]]
    widths = [max([len(c)] + [len(row[i]) for row in table]) for i, c in enumerate(columns)]
    say("   " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    say("   " + "  ".join("-" * w for w in widths))
    for row in table:
        say("   " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
    if len(records) > limit:
        say(f"   ... and {len(records) - limit} more")
    return len(records)


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= 32 else text[:29] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--profile-url", help="profile whose followers to fetch (the DAG's default otherwise)"
    )
    parser.add_argument("--rows", type=int, default=5, help="rows of the output to show (default 5)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    shutil.rmtree(DEMO, ignore_errors=True)
    home, output, logs = DEMO / "airflow", DEMO / "output", DEMO / "logs"
    for folder in (home, output, logs):
        folder.mkdir(parents=True)
    redactor = Redactor()

    with nyne_api(redactor) as (api_env, real):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
                "NYNE_EXAMPLE_OUTPUT_BASE": output.as_uri(),
                "NO_PROXY": "127.0.0.1,localhost",
                **api_env,
            }
        )
        say(f"Airflow home: {rel(home)} (SQLite, recreated on every run); DAGs: example_dags/")
        ok = run_step(
            "Creating the metadata database", ["db", "migrate"], env, logs / "db-migrate.log", redactor
        )
        if ok:
            test_args = ["dags", "test", DAG_ID]
            if args.profile_url:
                test_args += ["--conf", json.dumps({"profile_url": args.profile_url})]
            ok = run_step(f"Running {DAG_ID}", test_args, env, logs / "dags-test.log", redactor)

    state, tasks = run_summary(home / "airflow.db") if (home / "airflow.db").exists() else (None, [])
    if tasks:
        say("   tasks: " + ", ".join(f"{task} {task_state}" for task, task_state in tasks))
    files = sorted(output.rglob("*.jsonl"))
    if not ok or state != "success" or not files:
        say(f"\nThe demo run did not succeed (run state: {state}); see the logs in {rel(logs)}/.")
        return 1

    say(f"\nOutput landed in file://{files[-1]}")
    count = show_rows(files[-1], args.rows)
    source = "the Nyne API" if real else "the local simulator"
    say(f"\n{count} followers from {source}, run state {state}, in {time.monotonic() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
