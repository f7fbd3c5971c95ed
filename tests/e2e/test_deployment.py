"""The followers example on a real deployment: scheduler, triggerer, dag-processor and api-server.

One deployment serves the whole module (starting it is the expensive part): a fresh
``AIRFLOW_HOME`` with SQLite and the LocalExecutor, the components as subprocesses on loopback
ports (:mod:`tests.fixtures.airflow_processes`), the simulator in this process, and the
``nyne_default`` connection in every component's environment. The DAG is unpaused with the
CLI, so the scheduler creates its own scheduled run (``@daily``, ``catchup=False``): the
happy path is exactly what a new user sees. Other runs are triggered with the CLI.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.e2e.one_dag import dags_deployment
from tests.fixtures.airflow_processes import AirflowProcesses

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

DAG_ID = "example_nyne_followers_to_storage"
EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / f"{DAG_ID}.py"
SENSOR = "wait_for_followers"
#: Other lookups: longer than the gap between the submit task and the sensor's first check,
#: so that the sensor really defers (it returns at once when the lookup is already done).
JOB_SECONDS = 15.0


@pytest.fixture(scope="module")
def sim() -> Iterator[NyneSimulator]:
    """The simulator, with distinctive credentials that can be searched for afterwards."""
    with NyneSimulator(
        api_key=f"e2eKEY{secrets.token_hex(12)}",
        api_secret=f"e2eSECRET{secrets.token_hex(16)}",
        job_duration=JOB_SECONDS,
        rate_limit_per_minute=None,
        rate_limit_per_hour=None,
    ) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def deployment(sim: NyneSimulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowProcesses]:
    """All four components running, the example parsed and unpaused; everything stopped afterwards."""
    tmp_path = tmp_path_factory.mktemp("e2e")
    extra = {
        "NYNE_EXAMPLE_POLL_INTERVAL": "1",
        "NYNE_EXAMPLE_OUTPUT_BASE": f"file://{tmp_path / 'airflow' / 'output'}",
    }
    with dags_deployment(tmp_path, sim, {DAG_ID: EXAMPLE.read_text()}, extra=extra) as af:
        yield af


@pytest.fixture(scope="module")
def scheduled_run(deployment: AirflowProcesses) -> dict[str, Any]:
    """The run the scheduler creates on its own once the DAG is unpaused, finished."""

    def created() -> dict[str, Any] | None:
        rows = deployment.query(
            "SELECT run_id, logical_date FROM dag_run WHERE dag_id = ? AND run_type = 'scheduled'", (DAG_ID,)
        )
        return {"run_id": rows[0][0], "logical_date": rows[0][1]} if rows else None

    run = deployment.wait_until(created, timeout=60, what="the scheduler to create the scheduled run")
    run["state"] = deployment.wait_for_run(DAG_ID, run["run_id"], timeout=150)
    return run


def _task_log_dir(af: AirflowProcesses, run_id: str, task_id: str) -> Path:
    return af.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"


def _trigger_logs(af: AirflowProcesses, run_id: str) -> list[Path]:
    """Logs the triggerer wrote for the sensor's first try: ``attempt=1.log.trigger.<job id>.log``."""
    return sorted(_task_log_dir(af, run_id, SENSOR).glob("attempt=1.log.trigger.*.log"))


def _landed(af: AirflowProcesses, account: str, run_id: str) -> tuple[Path, list[dict[str, Any]]]:
    """The file the run wrote (read back) and its records."""
    key = re.sub(r"[^A-Za-z0-9_.=-]", "_", run_id)
    [path] = list((af.home / "output" / "followers" / account).glob(f"dt=*/{key}.jsonl"))
    return path, [json.loads(line) for line in path.read_text().splitlines()]


def _submissions(sim: NyneSimulator, account: str) -> list[str]:
    return [s.request_id for s in sim.ledger.submissions() if s.request.get("username") == account]


def _expected_usernames(sim: NyneSimulator, request_id: str) -> list[str]:
    job = sim.job(request_id)
    assert job is not None
    assert job["status"] == "completed"
    return [item["username"] for item in job["result"]["interactions"]]


def test_scheduled_run_waits_in_the_triggerer_and_lands_the_file(
    deployment: AirflowProcesses, sim: NyneSimulator, scheduled_run: dict[str, Any]
) -> None:
    run_id = scheduled_run["run_id"]
    states = {t: row["state"] for t, row in deployment.task_instances(DAG_ID, run_id).items()}
    assert scheduled_run["state"] == "success", f"{states}\n{deployment.diagnostics()}"

    [request_id] = _submissions(sim, "ApacheAirflow")
    trigger_logs = _trigger_logs(deployment, run_id)
    assert trigger_logs, "the sensor's wait did not run in the triggerer"
    assert request_id in "".join(p.read_text() for p in trigger_logs)
    assert "DEFERRED" in (_task_log_dir(deployment, run_id, SENSOR) / "attempt=1.log").read_text().upper()

    path, records = _landed(deployment, "ApacheAirflow", run_id)
    assert [r["username"] for r in records] == _expected_usernames(sim, request_id)
    assert path.parent.name == f"dt={str(scheduled_run['logical_date'])[:10]}", "partitioned by {{ ds }}"


def test_run_survives_a_triggerer_crash_without_paying_twice(
    deployment: AirflowProcesses, sim: NyneSimulator
) -> None:
    # hold*: the simulator keeps the lookup running until released, however slow the machine.
    account = f"hold_{secrets.token_hex(4)}"
    run_id = deployment.trigger_dag(DAG_ID, conf={"profile_url": f"https://x.com/{account}"})

    deployment.wait_for_task_state(DAG_ID, run_id, SENSOR, ["deferred"], timeout=90)
    [request_id] = deployment.wait_until(
        lambda: _submissions(sim, account), timeout=10, what="the submission on the ledger"
    )
    # The first triggerer is really polling (the sensor itself polls once before deferring).
    deployment.wait_until(
        lambda: sim.ledger.poll_count(request_id) >= 2, timeout=60, what="the triggerer to start polling"
    )

    deployment.kill("triggerer")  # SIGKILL of the whole process tree: a crash, no clean-up
    polls_before = sim.ledger.poll_count(request_id)
    deployment.start("triggerer")
    # The new triggerer takes the wait over and polls the same request, still running.
    deployment.wait_until(
        lambda: sim.ledger.poll_count(request_id) > polls_before,
        timeout=120,
        what="the new triggerer to poll the request",
    )
    job = sim.job(request_id)
    assert job is not None
    assert job["status"] in ("queued", "processing")
    assert sim.release(request_id) == [request_id]
    state = deployment.wait_for_run(DAG_ID, run_id, timeout=120)

    instances = deployment.task_instances(DAG_ID, run_id)
    assert state == "success", f"{instances}\n{deployment.diagnostics()}"
    assert _submissions(sim, account) == [request_id], "exactly one submission, no second payment"
    assert instances[SENSOR]["try_number"] == 1, "the wait resumed; the sensor was not retried"
    assert len(_trigger_logs(deployment, run_id)) >= 2, "both triggerers logged the wait"
    _, records = _landed(deployment, account, run_id)
    assert [r["username"] for r in records] == _expected_usernames(sim, request_id)


def test_credentials_appear_nowhere_in_airflow_home(
    deployment: AirflowProcesses, sim: NyneSimulator, scheduled_run: dict[str, Any]
) -> None:
    assert scheduled_run["state"] == "success"
    needles = [sim.api_key.encode(), sim.api_secret.encode()]
    files = [p for p in deployment.home.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".log") for p in files)
    leaks = [str(p) for p in files if any(n in p.read_bytes() for n in needles)]
    # The database is read through SQL as well: a long value can be split across overflow pages on disk.
    with sqlite3.connect(f"file:{deployment.db_path}?mode=ro", uri=True) as db:
        dump = "\n".join(db.iterdump())
    assert "dag_run" in dump
    leaks += [f"{deployment.db_path} (SQL dump)" for n in needles if n.decode() in dump]
    assert leaks == []
