"""Callbacks on a real deployment: the simulator calls the receiver inside a real api-server.

One deployment serves the module (scheduler, triggerer, dag-processor, api-server on
loopback, SQLite): the api-server mounts the receiver through the package's
``airflow.plugins`` entry point. The ``nyne_default`` connection carries a
``callback_secret`` (it wins over the ``[nyne] callback_secret`` also set), and
``[nyne] callback_base_url`` points at the api-server. Four DAGs run at once:

* ``cb_deferred``: submit with ``wait_mode="callback"`` and wait; the callback resumes the
  deferred task, the transfer takes the result from the receiver: zero status polls;
* ``cb_lost``: the same, but the URL sent to Nyne carries a broken token, so each delivery
  gets the uniform 404 and changes nothing; the task ends with exactly one status request;
* ``cb_asset_producer`` submits in asset mode (no waiting); the callback records an event on
  ``nyne://interactions/twitter/asset_person/followers`` and ``cb_asset_consumer``,
  scheduled on that Asset, lands the result; delivering the same callback five times
  dispatches it once.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_nyne.callbacks.tokens import make_token
from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.fixtures.airflow_processes import AirflowProcesses, deployment_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CONN_SECRET = f"conn-{secrets.token_hex(16)}"
CONFIG_SECRET = f"config-{secrets.token_hex(16)}"
ASSET_URI = "nyne://interactions/twitter/asset_person/followers"

PREAMBLE = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_nyne.callbacks.transfers import NyneCallbackResultToObjectStorageOperator
from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator

START = pendulum.datetime(2025, 1, 1, tz="UTC")


class BrokenTokenSubmit(NyneSubmitInteractionsOperator):
    # Test only: Nyne is given a URL whose token the receiver refuses (a lost callback).
    def _submit(self, request):
        broken = {**request.to_payload(), "callback_url": request.callback_url + "x"}
        return super()._submit(self.hook.build_request(**broken))
"""

DAGS = {
    "cb_deferred": """
with DAG("cb_deferred", schedule=None, start_date=START, catchup=False):
    submit = NyneSubmitInteractionsOperator(
        task_id="submit", username="slowdeferred", interaction_type="followers",
        wait_for_completion=True, wait_mode="callback", timeout=150,
    )
    land = NyneCallbackResultToObjectStorageOperator(
        task_id="land",
        request_id="{{ ti.xcom_pull(task_ids='submit', key='request_id') }}",
        correlation_id="{{ ti.xcom_pull(task_ids='submit', key='callback_correlation_id') }}",
        path="file://{out}/deferred/{{ run_id }}.jsonl",
        fallback_to_api=False,
    )
    submit >> land
""",
    "cb_lost": """
with DAG("cb_lost", schedule=None, start_date=START, catchup=False):
    BrokenTokenSubmit(
        task_id="submit", username="lost_person", interaction_type="followers",
        wait_for_completion=True, wait_mode="callback", timeout=12,
    )
""",
    "cb_asset_producer": """
with DAG("cb_asset_producer", schedule=None, start_date=START, catchup=False):
    NyneSubmitInteractionsOperator(
        task_id="submit", username="asset_person", interaction_type="followers", wait_mode="callback",
    )
""",
    "cb_asset_consumer": """
from airflow_provider_nyne.callbacks.assets import interactions_asset

with DAG("cb_asset_consumer", schedule=[interactions_asset(username="asset_person", type="followers")],
         start_date=START, catchup=False):
    NyneCallbackResultToObjectStorageOperator(
        task_id="land", path="file://{out}/asset/{{ run_id }}.jsonl", fallback_to_api=False,
    )
""",
}


@pytest.fixture(scope="module")
def sim() -> Iterator[NyneSimulator]:
    with NyneSimulator(
        job_duration=1.0,
        slow_job_duration=8.0,  # the deferred task is waiting in the triggerer when its callback comes
        callback_time_scale=0.01,
        rate_limit_per_minute=None,
        rate_limit_per_hour=None,
    ) as simulator:
        yield simulator


@pytest.fixture(scope="module")
def deployment(sim: NyneSimulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowProcesses]:
    home = tmp_path_factory.mktemp("e2e-callbacks") / "airflow"
    dags = home / "dags"
    out = home / "output"
    env = deployment_env(
        home,
        dags_folder=dags,
        extra={
            "AIRFLOW_CONN_NYNE_DEFAULT": sim.connection_json(extra={"callback_secret": CONN_SECRET}),
            "AIRFLOW__NYNE__CALLBACK_SECRET": CONFIG_SECRET,
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        },
    )
    env["AIRFLOW__NYNE__CALLBACK_BASE_URL"] = env["AIRFLOW__API__BASE_URL"]
    for dag_id, body in DAGS.items():
        (dags / f"{dag_id}.py").write_text(PREAMBLE + body.replace("{out}", str(out)))
    with AirflowProcesses(home, env) as af:
        af.run_cli("db", "migrate")
        af.start_all()
        for dag_id in DAGS:
            af.wait_for_dag(dag_id)
        yield af
    leftovers = af.leftover_processes()
    assert not leftovers, f"processes left running: {leftovers}"


@pytest.fixture(scope="module")
def runs(deployment: AirflowProcesses) -> dict[str, str]:
    """One run of each triggered DAG, started together; run ids by DAG id."""
    return {
        dag_id: deployment.trigger_dag(dag_id) for dag_id in ("cb_deferred", "cb_lost", "cb_asset_producer")
    }


def _request_id(sim: NyneSimulator, username: str) -> str:
    [submission] = [s for s in sim.ledger.submissions() if s.request.get("username") == username]
    return submission.request_id


def _callback_rows(af: AirflowProcesses, request_id: str) -> list[tuple[Any, ...]]:
    try:
        return af.query(
            "SELECT dispatch, deliveries, status FROM nyne_callback WHERE request_id = ?", (request_id,)
        )
    except sqlite3.OperationalError:  # the table does not exist yet
        return []


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_receiver_health_and_unknown_routes(deployment: AirflowProcesses) -> None:
    assert httpx.get(f"{deployment.api_url}/nyne/health?db=1").json() == {"status": "ok"}
    unknown = httpx.post(f"{deployment.api_url}/nyne/v1/nothing-here", json={})
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "Not Found"}


def test_deferred_task_resumes_from_the_callback_and_lands_without_polling(
    deployment: AirflowProcesses, sim: NyneSimulator, runs: dict[str, str]
) -> None:
    run_id = runs["cb_deferred"]
    state = deployment.wait_for_run("cb_deferred", run_id, timeout=150)
    assert state == "success", deployment.diagnostics()
    rid = _request_id(sim, "slowdeferred")
    assert sim.ledger.poll_count(rid) == 0  # neither the wait nor the transfer asked the API
    [submission] = [s for s in sim.ledger.submissions() if s.request_id == rid]
    correlation_id, token = submission.request["callback_url"].rsplit("/", 2)[1:]
    assert token == make_token(CONN_SECRET, correlation_id)  # the connection's secret wins over the config's
    attempts = sim.ledger.callback_attempts(rid)
    assert [a.status_code for a in attempts] == [200]
    [(dispatch, deliveries, status)] = _callback_rows(deployment, rid)
    assert (deliveries, status) == (1, "completed")
    assert "resumed" in dispatch  # the receiver itself moved the deferred task on
    landed = _lines(deployment.home / "output" / "deferred" / f"{run_id}.jsonl")
    expected = sim.job(rid)
    assert expected is not None
    assert [line["username"] for line in landed] == [
        i["username"] for i in expected["result"]["interactions"]
    ]


def test_callback_with_a_bad_token_is_refused_and_the_deadline_settles_with_one_status_request(
    deployment: AirflowProcesses, sim: NyneSimulator, runs: dict[str, str]
) -> None:
    state = deployment.wait_for_run("cb_lost", runs["cb_lost"], timeout=150)
    assert state == "success", deployment.diagnostics()
    rid = _request_id(sim, "lost_person")
    attempts = sim.ledger.callback_attempts(rid)
    assert attempts
    assert {a.status_code for a in attempts} == {404}  # every delivery: the uniform 404
    assert _callback_rows(deployment, rid) == []  # nothing stored, nothing dispatched
    assert sim.ledger.poll_count(rid) == 1  # the single reconciliation at the deadline


def test_asset_event_starts_the_consumer_and_five_deliveries_dispatch_once(
    deployment: AirflowProcesses, sim: NyneSimulator, runs: dict[str, str]
) -> None:
    assert deployment.wait_for_run("cb_asset_producer", runs["cb_asset_producer"], timeout=120) == "success"

    def consumer_runs() -> list[tuple[Any, ...]]:
        return deployment.query(
            "SELECT run_id, state FROM dag_run WHERE dag_id = 'cb_asset_consumer' AND run_type = 'asset_triggered'"
        )

    deployment.wait_until(
        lambda: [r for r in consumer_runs() if r[1] in ("success", "failed")],
        timeout=120,
        what="the Asset-triggered consumer run to finish",
    )
    [(consumer_run, consumer_state)] = consumer_runs()
    assert consumer_state == "success", deployment.diagnostics()
    rid = _request_id(sim, "asset_person")
    assert sim.ledger.poll_count(rid) == 0
    landed = _lines(deployment.home / "output" / "asset" / f"{consumer_run}.jsonl")
    assert landed
    assert {line["request_id"] for line in landed} == {rid}

    # Nyne delivers the same callback four more times (as after lost acknowledgements).
    [submission] = [s for s in sim.ledger.submissions() if s.request_id == rid]
    callback_url = submission.request["callback_url"]
    body = {"success": True, "data": sim.job(rid)}
    answers = [httpx.post(callback_url, json=body) for _ in range(4)]
    assert [a.status_code for a in answers] == [200] * 4
    assert all(a.json()["duplicate"] for a in answers)
    [(dispatch, deliveries, _)] = _callback_rows(deployment, rid)
    assert deliveries == 5
    assert dispatch.startswith("asset_event:")
    events = deployment.query(
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ?", (ASSET_URI,)
    )
    assert len(events) == 1
    assert json.loads(events[0][0])["request_id"] == rid
    assert len(consumer_runs()) == 1

    # A wrong token: the same 404 as an unknown route, and nothing changes.
    tampered = callback_url[:-3] + ("AAA" if not callback_url.endswith("AAA") else "BBB")
    refused = httpx.post(tampered, json=body)
    assert (refused.status_code, refused.json()) == (404, {"detail": "Not Found"})
    assert _callback_rows(deployment, rid)[0][1] == 5
