"""Three runs of the followers example on a real deployment leave one Asset with three events.

One deployment (scheduler, triggerer, dag-processor and api-server on loopback, SQLite, the
LocalExecutor; :mod:`tests.fixtures.airflow_processes`) runs the followers example and a
small DAG scheduled on its output Asset. The example is unpaused, so the scheduler makes its
own run; two more are triggered through the REST API with other profiles. Everything is then
checked the way the UI sees it, through Airflow's REST API (``/api/v2/assets``,
``/api/v2/assets/events``), authenticated as the simple auth manager's generated admin: one
Asset, ``<base>/followers``, with the example's ``land_followers`` as its producing task, the
downstream DAG as its consumer, and one event per run naming that run's file. The downstream
DAG reads the files from the events that triggered it
(:func:`~airflow_provider_nyne.assets.landed_files_from_asset_events`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.e2e.one_dag import dags_deployment
from tests.fixtures.airflow_processes import AirflowProcesses

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]

DAG_ID = "example_nyne_followers_to_storage"
EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / f"{DAG_ID}.py"
CONSUMER_ID = "nyne_followers_consumer"
ACCOUNTS = ("ApacheAirflow", "data_person", "lake_keeper")  # the scheduled run's default first

CONSUMER_SOURCE = '''
"""Scheduled on the followers example's Asset: reads back every file the triggering events name."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Asset, task

from airflow_provider_nyne.assets import landed_files_from_asset_events

FOLLOWERS = Asset(uri=os.environ["NYNE_EXAMPLE_OUTPUT_BASE"].rstrip("/") + "/followers")

with DAG(
    "{consumer_id}", schedule=[FOLLOWERS], start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False
):

    @task
    def read_landed(**context):
        return [
            {{"file": f.file, "request_id": f.request_id, "records": f.records,
             "lines": len(f.path().read_text().splitlines())}}
            for f in landed_files_from_asset_events(context, FOLLOWERS)
        ]

    read_landed()
'''


@pytest.fixture(scope="module")
def sim() -> Iterator[NyneSimulator]:
    with NyneSimulator(job_duration=1.0, rate_limit_per_minute=None, rate_limit_per_hour=None) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def deployment(sim: NyneSimulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowProcesses]:
    """The four components, the example and its consumer parsed; everything stopped afterwards."""
    tmp_path = tmp_path_factory.mktemp("assets")
    extra = {
        "NYNE_EXAMPLE_POLL_INTERVAL": "1",
        "NYNE_EXAMPLE_OUTPUT_BASE": f"file://{tmp_path / 'airflow' / 'output'}",
        # Airflow 3.1 puts its issuer, unset by default, in REST tokens: recent PyJWT refuses a None issuer.
        "AIRFLOW__API_AUTH__JWT_ISSUER": "nyne-e2e",
    }
    dags = {DAG_ID: EXAMPLE.read_text(), CONSUMER_ID: CONSUMER_SOURCE.format(consumer_id=CONSUMER_ID)}
    # Left paused: the test unpauses the example through the REST API.
    with dags_deployment(tmp_path, sim, dags, extra=extra, unpause=False) as af:
        yield af


@pytest.fixture(scope="module")
def api(deployment: AirflowProcesses) -> Iterator[httpx.Client]:
    """A REST client logged in as the admin user the simple auth manager generated."""
    passwords = json.loads((deployment.home / "simple_auth_manager_passwords.json.generated").read_text())
    with httpx.Client(base_url=deployment.api_url, timeout=30, trust_env=False) as client:
        answer = client.post("/auth/token", json={"username": "admin", "password": passwords["admin"]})
        assert answer.status_code in (200, 201), answer.text
        client.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"
        yield client


def _ok(response: httpx.Response) -> Any:
    assert response.status_code < 300, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json()


def _send(deployment: AirflowProcesses, request: Callable[[], httpx.Response], what: str) -> httpx.Response:
    """A write request, sent again while it fails with 500.

    SQLite may stay locked by another component for longer than the api-server waits.
    """

    def answered() -> httpx.Response | None:
        response = request()
        return None if response.status_code == 500 else response

    return deployment.wait_until(answered, timeout=60, what=what)


@pytest.fixture(scope="module")
def three_runs(deployment: AirflowProcesses, api: httpx.Client) -> list[str]:
    """The scheduler's own run of the example and two triggered ones, all finished successfully."""
    for dag_id in (CONSUMER_ID, DAG_ID):
        unpause = partial(api.patch, f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        _ok(_send(deployment, unpause, f"{dag_id} to be unpaused"))

    def scheduled() -> str | None:
        rows = deployment.query(
            "SELECT run_id FROM dag_run WHERE dag_id = ? AND run_type = 'scheduled'", (DAG_ID,)
        )
        return rows[0][0] if rows else None

    run_ids = [deployment.wait_until(scheduled, timeout=60, what="the scheduler to create its run")]
    for account in ACCOUNTS[1:]:
        run_id = f"manual__assets_{account}"
        body = {
            "dag_run_id": run_id,
            "logical_date": None,
            "conf": {"profile_url": f"https://x.com/{account}"},
        }
        trigger = partial(api.post, f"/api/v2/dags/{DAG_ID}/dagRuns", json=body)
        response = _send(deployment, trigger, f"the run for {account} to be triggered")
        if response.status_code != 409:  # 409: a request answered 500 did create it
            _ok(response)
        run_ids.append(run_id)
    for run_id in run_ids:
        state = deployment.wait_for_run(DAG_ID, run_id, timeout=180)
        assert state == "success", f"{deployment.task_instances(DAG_ID, run_id)}\n{deployment.diagnostics()}"
    return run_ids


def _events_of(api: httpx.Client, asset_id: int) -> list[dict[str, Any]] | None:
    """The Asset's events; ``None`` while Airflow cannot list them yet.

    Airflow 3.3 answers 500 while a DAG run created from one of the events is still queued
    (its response model requires the run's ``start_date``).
    """
    response = api.get("/api/v2/assets/events", params={"asset_id": asset_id})
    if response.status_code == 500:
        return None
    return list(_ok(response)["asset_events"])


def _landed_file(deployment: AirflowProcesses, account: str, run_id: str) -> str:
    key = re.sub(r"[^A-Za-z0-9_.=-]", "_", run_id)
    [path] = (deployment.home / "output" / "followers" / account).glob(f"dt=*/{key}.jsonl")
    return f"file://{path}"


def test_three_runs_leave_one_asset_with_three_events(
    deployment: AirflowProcesses, api: httpx.Client, three_runs: list[str]
) -> None:
    output = deployment.home / "output"
    listed = _ok(api.get("/api/v2/assets", params={"uri_pattern": str(output)}))
    assert [a["uri"] for a in listed["assets"]] == [f"file://{output}/followers"], (
        "one Asset, not one per run"
    )
    [asset] = listed["assets"]
    assert [(t["dag_id"], t["task_id"]) for t in asset["producing_tasks"]] == [(DAG_ID, "land_followers")]
    assert [d["dag_id"] for d in asset["scheduled_dags"]] == [CONSUMER_ID]
    assert asset["aliases"] == []

    events = deployment.wait_until(
        lambda: _events_of(api, asset["id"]), timeout=120, what="the asset events endpoint to answer"
    )
    by_run = {e["source_run_id"]: e for e in events}
    assert sorted(by_run) == sorted(three_runs)
    assert len(events) == 3
    for account, run_id in zip(ACCOUNTS, three_runs, strict=True):
        extra = by_run[run_id]["extra"]
        assert by_run[run_id]["source_task_id"] == "land_followers"
        assert extra["file"] == _landed_file(deployment, account, run_id)
        path = Path(extra["file"].removeprefix("file://"))
        records = [json.loads(line) for line in path.read_text().splitlines()]
        assert extra["records"] == len(records) > 0
        assert {r["request_id"] for r in records} == {extra["request_id"]}
        assert {r["target_username"] for r in records} == {account}


def test_the_consumer_reads_every_landed_file_from_its_triggering_events(
    deployment: AirflowProcesses, api: httpx.Client, three_runs: list[str]
) -> None:
    expected = {
        _landed_file(deployment, account, run_id)
        for account, run_id in zip(ACCOUNTS, three_runs, strict=True)
    }

    def seen() -> dict[str, dict[str, Any]] | None:
        runs = _ok(api.get(f"/api/v2/dags/{CONSUMER_ID}/dagRuns"))["dag_runs"]
        found: dict[str, dict[str, Any]] = {}
        for run in runs:
            if run["state"] != "success":
                continue
            entry = api.get(
                f"/api/v2/dags/{CONSUMER_ID}/dagRuns/{run['dag_run_id']}/taskInstances/read_landed"
                "/xcomEntries/return_value"
            )
            for landed in _ok(entry)["value"]:
                found[landed["file"]] = landed
        return found if set(found) == expected else None

    found = deployment.wait_until(
        seen, timeout=180, what="the consumer runs to read all three files", interval=2
    )
    for landed in found.values():
        assert landed["lines"] == landed["records"] > 0
