"""The receiver's Airflow backend against a real (SQLite) Airflow metadata database."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from sqlalchemy import delete, select

from airflow_provider_nyne.callbacks.dispatch import TRIGGER_CLASSPATH, AirflowBackend, _xcom_text
from airflow_provider_nyne.callbacks.tokens import CallbackTarget
from airflow_provider_nyne.triggers.callbacks import NyneCallbackTrigger


@pytest.fixture
def backend(airflow_db: str) -> AirflowBackend:
    from airflow import settings

    if getattr(settings, "engine", None) is None:
        settings.configure_orm()
    return AirflowBackend()


def test_trigger_classpath_matches_the_trigger() -> None:
    trigger = NyneCallbackTrigger(request_id="r", correlation_id="c", end_time=0)
    assert trigger.serialize()[0] == TRIGGER_CLASSPATH


def test_no_task_instance_means_no_submission(backend: AirflowBackend) -> None:
    with backend.session() as session:
        assert backend.task_submission(session, CallbackTarget("no_dag", "t", "r")) is None
        assert backend.task_outlets(session, CallbackTarget("no_dag", "t", "r")) == []


@pytest.mark.parametrize(
    ("stored", "text"),
    [
        pytest.param("req-1", "req-1", id="plain"),
        pytest.param('"req-1"', "req-1", id="json-encoded"),
        pytest.param('"\\"req-1\\""', "req-1", id="json-encoded-twice"),
        pytest.param("{not json", "{not json", id="not-json"),
        pytest.param(42, None, id="not-a-string"),
        pytest.param('["a"]', '["a"]', id="json-list"),
    ],
)
def test_xcom_values_read_back_as_the_pushed_string(stored: Any, text: str | None) -> None:
    assert _xcom_text(stored) == text


def test_unknown_connections_are_cached_in_a_bounded_lru(
    backend: AirflowBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    monkeypatch.setattr(AirflowBackend, "_read_connection_secret", staticmethod(lambda c: reads.append(c)))
    for i in range(300):
        backend.connection_secret(f"nope_{i}")
    backend.connection_secret("nope_299")  # recent: still cached
    backend.connection_secret("nope_0")  # evicted: read again
    assert reads.count("nope_299") == 1
    assert reads.count("nope_0") == 2
    assert len(backend._secrets) <= 256


def test_asset_event_is_recorded_with_extra(backend: AirflowBackend) -> None:
    from airflow.models.asset import AssetEvent, AssetModel

    uri = f"nyne://interactions/twitter/u{uuid.uuid4().hex[:8]}/followers"
    with backend.session() as session:
        session.add(AssetModel(name=uri, uri=uri))
    target = CallbackTarget("producer", "submit", "run-1", asset_name=uri, asset_uri=uri)
    with backend.session() as session:
        label = backend.register_asset_event(
            session, target, {"request_id": "req-1", "source": "nyne_callback"}
        )
    assert label.startswith("asset_event:")
    with backend.session() as session:
        event = session.scalar(select(AssetEvent).where(AssetEvent.id == int(label.split(":")[1])))
        assert event is not None
        assert event.extra == {"request_id": "req-1", "source": "nyne_callback"}
        session.execute(delete(AssetEvent).where(AssetEvent.id == event.id))
        session.execute(delete(AssetModel).where(AssetModel.uri == uri))


def test_unknown_asset_is_reported_not_raised(backend: AirflowBackend) -> None:
    target = CallbackTarget(
        "d", "t", "r", asset_name="nyne://nobody/declares/this", asset_uri="nyne://nobody/declares/this"
    )
    with backend.session() as session:
        assert backend.register_asset_event(session, target, {}) == "asset_not_found"


def test_resume_without_task_instance_does_nothing(backend: AirflowBackend) -> None:
    with backend.session() as session:
        result = backend.resume_deferred(session, CallbackTarget("no_dag", "t", "r", wait=True), "req-1", {})
    assert result == "no_task_instance"


def test_connection_secret_is_read_from_the_connection(
    backend: AirflowBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_NYNE_CB_TEST",
        json.dumps(
            {"conn_type": "nyne", "login": "k", "password": "p", "extra": {"callback_secret": "from-conn"}}
        ),
    )
    assert backend.connection_secret("nyne_cb_test") == "from-conn"
    assert backend.connection_secret("nyne_cb_missing") is None


RUNNING_PROBE_DAG = """
import os
import pendulum
from airflow.sdk import DAG, task

from airflow_provider_nyne.callbacks.dispatch import AirflowBackend
from airflow_provider_nyne.utils.credits import ReservationKey

with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1)) as dag:

    @task
    def lookup(run_id=None):
        backend = AirflowBackend()
        key = ReservationKey("{dag_id}", run_id, "lookup", -1, "nyne_default", "f1")
        with backend.session() as session:  # what the receiver sees while the task runs
            running = backend.task_running(session, key)
        with open(os.environ["NYNE_TEST_PROBE"], "w") as out:
            out.write(str(running))

    lookup(run_id="{{{{ run_id }}}}")
"""


def test_only_a_running_task_instance_counts_as_running(
    backend: AirflowBackend, load_dag: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_nyne.utils.credits import ReservationKey

    probe = tmp_path / "probe.txt"
    monkeypatch.setenv("NYNE_TEST_PROBE", str(probe))
    dag_id = f"credit_guard_{uuid.uuid4().hex[:8]}"
    run = load_dag(RUNNING_PROBE_DAG.format(dag_id=dag_id), dag_id).test()
    assert probe.read_text() == "True"

    def key(run_id: str, task_id: str = "lookup") -> ReservationKey:
        return ReservationKey(dag_id, run_id, task_id, -1, "nyne_default", "f1")

    with backend.session() as session:
        assert backend.task_running(session, key(run.run_id)) is False  # finished
        assert backend.task_running(session, key(run.run_id, "no_such_task")) is False
        assert backend.task_running(session, key("no_such_run")) is False
