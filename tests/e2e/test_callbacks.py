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

Then the receiver under attack, on the same deployment (each attack succeeded on 1.0):

* ``cb_victim_producer`` submits in asset mode a lookup the simulator holds running; a
  genuine URL of another task is used to claim the victim's request id first; the victim's
  own callback must still be accepted and start ``cb_victim_consumer``;
* whoever can read the ``nyne_tenant`` connection's ``callback_secret`` mints URLs for a task
  that does not use that connection, and for ``s3://finance/ledger.csv`` (which
  ``cb_finance_consumer`` is scheduled on): nothing may be recorded;
* bodies the receiver cannot store and serve back (100,000 levels deep, ``NaN``) get ``400``;
* other methods and path suffixes on a callback URL keep its token out of the api-server's log.
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

from airflow_provider_nyne.callbacks.tokens import (
    TOKEN_HEADER,
    CallbackTarget,
    callback_path,
    encode_correlation_id,
    mailbox_path,
    make_token,
)
from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.fixtures.airflow_processes import AirflowProcesses, deployment_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]

CONN_SECRET = f"conn-{secrets.token_hex(16)}"
CONFIG_SECRET = f"config-{secrets.token_hex(16)}"
TENANT_SECRET = f"tenant-{secrets.token_hex(16)}"
ASSET_URI = "nyne://interactions/twitter/asset_person/followers"
FINANCE_URI = "s3://finance/ledger.csv"

PREAMBLE = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_nyne.transfers.callback_to_storage import NyneCallbackResultToObjectStorageOperator
from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator

START = pendulum.datetime(2025, 1, 1, tz="UTC")


class BrokenTokenSubmit(NyneSubmitInteractionsOperator):
    # Test only: Nyne is given a URL whose token the receiver refuses (a lost callback).
    def _submit(self, request, *args):
        broken = {**request.to_payload(), "callback_url": request.callback_url + "x"}
        return super()._submit(self.hook.build_request(**broken), *args)
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
    "cb_victim_producer": """
with DAG("cb_victim_producer", schedule=None, start_date=START, catchup=False):
    NyneSubmitInteractionsOperator(
        task_id="submit", username="hold_victim", interaction_type="followers", wait_mode="callback",
    )
""",
    "cb_victim_consumer": """
from airflow_provider_nyne.callbacks.assets import interactions_asset

with DAG("cb_victim_consumer", schedule=[interactions_asset(username="hold_victim", type="followers")],
         start_date=START, catchup=False):
    NyneCallbackResultToObjectStorageOperator(
        task_id="land", path="file://{out}/victim/{{ run_id }}.jsonl", fallback_to_api=False,
    )
""",
    "cb_finance_consumer": """
from airflow.sdk import Asset, task

with DAG("cb_finance_consumer", schedule=[Asset("s3://finance/ledger.csv")], start_date=START, catchup=False):

    @task
    def book() -> None:
        pass

    book()
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
            "AIRFLOW_CONN_NYNE_TENANT": sim.connection_json(extra={"callback_secret": TENANT_SECRET}),
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
    triggered = ("cb_deferred", "cb_lost", "cb_asset_producer", "cb_victim_producer")
    return {dag_id: deployment.trigger_dag(dag_id) for dag_id in triggered}


def _request_id(sim: NyneSimulator, username: str) -> str:
    [submission] = [s for s in sim.ledger.submissions() if s.request.get("username") == username]
    return submission.request_id


def _callback_url(sim: NyneSimulator, username: str) -> str:
    [submission] = [s for s in sim.ledger.submissions() if s.request.get("username") == username]
    return str(submission.request["callback_url"])


def _submitted(
    deployment: AirflowProcesses, sim: NyneSimulator, dag_id: str, run_id: str, username: str
) -> str:
    """The request id of an asset-mode submission, once its task has finished (its XComs are there)."""
    assert deployment.wait_for_run(dag_id, run_id, timeout=120) == "success", deployment.diagnostics()
    return _request_id(sim, username)


def _completed_body(request_id: str) -> dict[str, Any]:
    result = {
        "interaction_type": "followers",
        "platform": "twitter",
        "target": {"username": "someone"},
        "interactions": [{"username": "forged"}],
        "total_count": 1,
    }
    return {
        "success": True,
        "data": {"request_id": request_id, "status": "completed", "completed": True, "result": result},
    }


def _asset_events(deployment: AirflowProcesses, uri: str) -> list[dict[str, Any]]:
    rows = deployment.query(
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ?", (uri,)
    )
    return [json.loads(extra) for (extra,) in rows]


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


# The receiver under attack ------------------------------------------------------------------


def test_a_valid_url_cannot_claim_another_tasks_request(
    deployment: AirflowProcesses, sim: NyneSimulator, runs: dict[str, str]
) -> None:
    victim_rid = _submitted(deployment, sim, "cb_victim_producer", runs["cb_victim_producer"], "hold_victim")
    _submitted(deployment, sim, "cb_asset_producer", runs["cb_asset_producer"], "asset_person")
    # The victim's request id is public (XCom, UI, Asset event extras); the attacker holds a
    # genuine callback URL of its own task and delivers a forged result first.
    stolen = httpx.post(_callback_url(sim, "asset_person"), json=_completed_body(victim_rid))
    assert stolen.status_code == 403, stolen.text
    assert _callback_rows(deployment, victim_rid) == []

    sim.release(victim_rid)  # the victim's job finishes; Nyne calls its own URL

    def consumer_runs() -> list[tuple[Any, ...]]:
        return deployment.query(
            "SELECT run_id, state FROM dag_run WHERE dag_id = 'cb_victim_consumer' AND run_type = 'asset_triggered'"
        )

    deployment.wait_until(
        lambda: [r for r in consumer_runs() if r[1] in ("success", "failed")],
        timeout=120,
        what="the victim's Asset-triggered consumer run to finish",
    )
    [(consumer_run, consumer_state)] = consumer_runs()
    assert consumer_state == "success", deployment.diagnostics()
    assert [a.status_code for a in sim.ledger.callback_attempts(victim_rid)] == [200]
    [(dispatch, deliveries, status)] = _callback_rows(deployment, victim_rid)
    assert (dispatch.split(":")[0], deliveries, status) == ("asset_event", 1, "completed")
    landed = _lines(deployment.home / "output" / "victim" / f"{consumer_run}.jsonl")
    assert {line["request_id"] for line in landed} == {victim_rid}
    assert "forged" not in {line["username"] for line in landed}


def test_a_connection_secret_cannot_sign_for_other_tasks_or_assets(
    deployment: AirflowProcesses, sim: NyneSimulator, runs: dict[str, str]
) -> None:
    rid = _submitted(deployment, sim, "cb_asset_producer", runs["cb_asset_producer"], "asset_person")
    forged = {
        # The asset-mode task uses nyne_default; the URL names nyne_tenant, whose secret was read.
        "finance-asset": CallbackTarget(
            "cb_asset_producer",
            "submit",
            runs["cb_asset_producer"],
            asset_name=FINANCE_URI,
            asset_uri=FINANCE_URI,
            conn_id="nyne_tenant",
        ),
        "resume-a-task": CallbackTarget(
            "cb_asset_producer", "submit", runs["cb_asset_producer"], wait=True, conn_id="nyne_tenant"
        ),
    }
    for name, target in forged.items():
        cid = encode_correlation_id(target)
        url = deployment.api_url + callback_path(cid, make_token(TENANT_SECRET, cid))
        for forged_rid in (f"forged-{name}", rid):  # a request never submitted, and the task's real one
            answer = httpx.post(url, json=_completed_body(forged_rid))
            assert answer.status_code == 403, f"{name} {forged_rid}: {answer.status_code} {answer.text}"
            assert _callback_rows(deployment, f"forged-{name}") == []
    assert _asset_events(deployment, FINANCE_URI) == []
    assert deployment.query("SELECT run_id FROM dag_run WHERE dag_id = 'cb_finance_consumer'") == []
    assert [row[0].split(":")[0] for row in _callback_rows(deployment, rid)] == ["asset_event"]


def test_bodies_the_receiver_cannot_store_and_serve_back_are_400(
    deployment: AirflowProcesses, sim: NyneSimulator, runs: dict[str, str]
) -> None:
    _submitted(deployment, sim, "cb_asset_producer", runs["cb_asset_producer"], "asset_person")
    url = _callback_url(sim, "asset_person")
    deep = b'{"request_id": "deep-1", "status": "completed", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    answers = {
        "deep": httpx.post(url, content=deep, headers={"content-type": "application/json"}),
        "nan": httpx.post(
            url,
            content=b'{"request_id": "nan-1", "status": "completed", "completed": true, "result": {"total_count": NaN}}',
            headers={"content-type": "application/json"},
        ),
    }
    assert {name: a.status_code for name, a in answers.items()} == {"deep": 400, "nan": 400}
    assert "nested deeper" in answers["deep"].json()["detail"]
    assert "NaN" in answers["nan"].json()["detail"]
    correlation_id, token = url.rsplit("/", 2)[1:]
    for rid in ("deep-1", "nan-1"):
        mailbox = httpx.get(
            deployment.api_url + mailbox_path(correlation_id),
            params={"request_id": rid},
            headers={TOKEN_HEADER: token},
        )
        assert mailbox.status_code == 204, f"{rid}: {mailbox.status_code}"  # nothing was stored
    assert "RecursionError" not in deployment.log_text("api-server")


def test_the_token_stays_out_of_the_api_server_log_whatever_the_method_or_path(
    deployment: AirflowProcesses, sim: NyneSimulator, runs: dict[str, str]
) -> None:
    _submitted(deployment, sim, "cb_asset_producer", runs["cb_asset_producer"], "asset_person")
    url = _callback_url(sim, "asset_person")
    token = url.rsplit("/", 1)[1]

    def logged() -> int:
        # One access-log line per request (Airflow's log masks part of the correlation id too).
        return deployment.log_text("api-server").count("/nyne/v1/callback/")

    before = logged()
    answers = [httpx.request(method, url) for method in ("PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")]
    answers += [httpx.post(url + "/", json={}), httpx.post(url + "/more", json={})]
    deployment.wait_until(lambda: logged() >= before + len(answers), timeout=30, what="the access log lines")
    assert token not in deployment.log_text("api-server")
    assert [a.status_code for a in answers] == [405] * 5 + [404, 404]  # no redirect that repeats the URL
