"""Deferred callback mode with ``dag.test()``: the simulator calls a real receiver back over loopback.

The receiver (the same app the api-server mounts) runs in this process under uvicorn, on
the test's Airflow database; the simulator delivers its callbacks to it; the trigger reads
the mailbox; the transfer takes the result from the receiver. The receiver's direct resume
of a deferred task needs a scheduler and is covered by ``tests/e2e/test_callbacks.py``;
here (no scheduler) it is disabled.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from airflow_provider_nyne.callbacks.db_manager import NyneCallbackDBManager
from airflow_provider_nyne.callbacks.dispatch import AirflowBackend
from airflow_provider_nyne.callbacks.receiver import create_app
from airflow_provider_nyne.callbacks.service import CallbackService
from airflow_provider_nyne.callbacks.tokens import URL_PREFIX
from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.fixtures.airflow_processes import free_port

pytestmark = pytest.mark.integration

SECRET = "integration-callback-secret"


class _ConfigSecretBackend(AirflowBackend):
    # dag.test() leaves task-runner state in this process that reroutes connection lookups;
    # the receiver here uses the config secret only (the e2e test covers connection secrets).
    def connection_secret(self, conn_id: str) -> str | None:
        return None


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # running in a thread
        pass


@pytest.fixture
def receiver(airflow_db: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, CallbackService]]:
    from airflow import settings

    if getattr(settings, "engine", None) is None:
        settings.configure_orm()
    # `airflow db migrate` made the table where Airflow discovers the DB manager (3.2+); on 3.1
    # the test database was migrated without it, so run the manager as that command would.
    session = settings.Session()
    try:
        NyneCallbackDBManager(session).initdb()
        session.commit()
    finally:
        session.close()
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_SECRET", SECRET)
    service = CallbackService(_ConfigSecretBackend(), resume=False, enabled=True)
    # Mounted under /nyne, as the api-server mounts the plugin's app.
    root = FastAPI()
    root.mount(URL_PREFIX, create_app(service))
    port = free_port()
    server = _Server(uvicorn.Config(root, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_INTERNAL_URL", url)
    yield url, service
    server.should_exit = True
    thread.join(10)


DAG_SOURCE = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_nyne.transfers.callback_to_storage import NyneCallbackResultToObjectStorageOperator
from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator


with DAG({dag_id!r}, schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False) as dag:
    submit = NyneSubmitInteractionsOperator(
        task_id="submit",
        social_media_url="https://twitter.com/{username}",
        interaction_type="followers",
        wait_for_completion=True,
        wait_mode="callback",
        timeout={timeout!r},
    )
    submit.callback_mailbox_interval = 0.2  # dag.test() has no receiver-driven resume: read the mailbox often
    if {with_transfer!r}:
        land = NyneCallbackResultToObjectStorageOperator(
            task_id="land",
            request_id="{{{{ ti.xcom_pull(task_ids='submit', key='request_id') }}}}",
            correlation_id="{{{{ ti.xcom_pull(task_ids='submit', key='callback_correlation_id') }}}}",
            path={path!r},
        )
        submit >> land
"""


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def test_deferred_task_completes_from_the_callback_and_the_transfer_writes_without_polling(
    simulator_connection: NyneSimulator,
    receiver: tuple[str, CallbackService],
    load_dag: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _ = receiver
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_BASE_URL", url)
    out = tmp_path / "followers.jsonl"
    dag = load_dag(
        DAG_SOURCE.format(
            dag_id="cb_deferred_flow",
            username="callback_person",
            timeout=30,
            with_transfer=True,
            path=str(out),
        ),
        "cb_deferred_flow",
    )
    run = dag.test()
    assert _states(run) == {"submit": "success", "land": "success"}
    sim = simulator_connection
    (submission,) = sim.ledger.submissions()
    assert submission.request["callback_url"].startswith(url + "/nyne/v1/callback/")
    attempts = sim.ledger.callback_attempts()
    assert [a.delivered for a in attempts] == [True]
    assert sim.ledger.poll_count() == 0  # neither the wait nor the transfer asked the API
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert lines
    assert {line["request_id"] for line in lines} == {submission.request_id}


def test_callback_that_never_comes_ends_in_exactly_one_status_request(
    simulator_connection: NyneSimulator,
    receiver: tuple[str, CallbackService],
    load_dag: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nyne is told to call a port where nothing listens: every delivery fails.
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_BASE_URL", dead)
    dag = load_dag(
        DAG_SOURCE.format(
            dag_id="cb_never_comes", username="lonely_person", timeout=2, with_transfer=False, path=""
        ),
        "cb_never_comes",
    )
    run = dag.test()
    assert _states(run) == {"submit": "success"}
    sim = simulator_connection
    assert sim.ledger.poll_count() == 1
    assert sim.ledger.callback_attempts()
    assert not any(a.delivered for a in sim.ledger.callback_attempts())
