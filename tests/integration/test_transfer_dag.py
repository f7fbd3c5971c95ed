"""The transfer in a DAG run by ``dag.test()`` against the simulator: templates, deferral, assets."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pendulum
import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from airflow_provider_nyne.transfers.interactions_to_storage import NyneInteractionsToObjectStorageOperator

pytestmark = pytest.mark.integration

LOGICAL_DATE = pendulum.datetime(2025, 1, 2, tz="UTC")

DAG_SOURCE = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_nyne.hooks.nyne import NyneHook
from airflow_provider_nyne.transfers.interactions_to_storage import NyneInteractionsToObjectStorageOperator

with DAG(
    {dag_id!r},
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
) as dag:

    @task(task_id="submit")
    def submit(ti=None):
        hook = NyneHook()
        request_id = hook.submit_interactions(
            hook.build_request(social_media_url="https://twitter.com/{username}", type="followers")
        )
        ti.xcom_push(key="request_id", value=request_id)

    land = NyneInteractionsToObjectStorageOperator(
        task_id="land",
        request_id="{{{{ ti.xcom_pull(task_ids='submit', key='request_id') }}}}",
        path={path!r},
        format={fmt!r},
        wait_for_completion=True,
        deferrable={deferrable!r},
        poll_interval=0.05,
        timeout=30,
    )
    submit() >> land
"""


def _source(
    dag_id: str, path: str, *, username: str = "data_person", fmt: str = "jsonl", deferrable: bool = True
) -> str:
    return DAG_SOURCE.format(dag_id=dag_id, path=path, username=username, fmt=fmt, deferrable=deferrable)


def _asset_events(uri: str) -> list[dict[str, Any]]:
    """Asset events recorded in the metadata database for ``uri`` (test-side check only)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(AssetEvent.extra, AssetEvent.source_task_id)
            .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == uri)
        ).all()
    return [{"extra": extra, "task_id": task_id} for extra, task_id in rows]


def _complete_after_first_poll(sim: NyneSimulator) -> threading.Thread:
    """Release the (single, held) submitted job as soon as its status was read once."""

    def run() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            submissions = sim.ledger.submissions()
            if submissions and sim.ledger.poll_count(submissions[0].request_id) >= 1:
                sim.release(submissions[0].request_id)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _land_state(run: Any) -> str:
    return str(next(ti.state for ti in run.get_task_instances() if ti.task_id == "land"))


def test_templated_partition_deferred_wait_and_asset_event(
    simulator_connection: NyneSimulator, load_dag: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job runs until the transfer task has seen it running, whatever the start-up time of
    # the task: then it completes, and only the trigger's polls can see that.
    simulator_connection.faults.hold_next_job()
    release = _complete_after_first_poll(simulator_connection)
    # Recorded in a file: depending on the Airflow version, dag.test() may run the task in a
    # forked process, where a list in this one would not see the call.
    resumed = tmp_path / "resumed.jsonl"
    original = NyneInteractionsToObjectStorageOperator.execute_complete

    def spy(self: Any, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        with resumed.open("a") as f:
            f.write(json.dumps(event) + "\n")
        return original(self, context, event)

    monkeypatch.setattr(NyneInteractionsToObjectStorageOperator, "execute_complete", spy)
    template = f"file://{tmp_path}/nyne/ds={{{{ ds }}}}/{{{{ run_id }}}}/followers.jsonl"
    dag = load_dag(_source("nyne_transfer_templated", template), "nyne_transfer_templated")
    land = dag.get_task("land")
    assert [type(o).__name__ for o in land.outlets] == ["AssetAlias"]

    run = dag.test(logical_date=LOGICAL_DATE)
    release.join(timeout=5)

    assert run.state == "success", _land_state(run)
    written = list((tmp_path / "nyne" / "ds=2025-01-02").glob("*/followers.jsonl"))
    assert len(written) == 1
    assert written[0].parent.name == run.run_id, "the run id partition was rendered"
    records = [json.loads(line) for line in written[0].read_text().splitlines()]
    submissions = simulator_connection.ledger.submissions()
    assert len(submissions) == 1
    request_id = submissions[0].request_id
    assert records
    assert {r["request_id"] for r in records} == {request_id}
    assert {r["target_username"] for r in records} == {"data_person"}
    # The task found the job running and deferred; the trigger's polls saw it complete.
    events = [json.loads(line) for line in resumed.read_text().splitlines()]
    assert [(e["status"], e["request_id"]) for e in events] == [("success", request_id)]
    assert simulator_connection.ledger.poll_count(request_id) >= 2
    # The rendered destination was recorded as an asset event through the alias.
    events = _asset_events(f"file://{written[0]}")
    assert [e["task_id"] for e in events] == ["land"]
    assert events[0]["extra"]["request_id"] == request_id
    assert events[0]["extra"]["records"] == len(records)


def test_static_path_in_sync_mode_records_the_outlet_asset(
    simulator_connection: NyneSimulator, load_dag: Any, tmp_path: Path
) -> None:
    dest = tmp_path / "static" / "followers.csv"
    dag = load_dag(
        _source("nyne_transfer_static", f"file://{dest}", fmt="csv", deferrable=False), "nyne_transfer_static"
    )
    run = dag.test(logical_date=LOGICAL_DATE)

    assert run.state == "success", _land_state(run)
    lines = dest.read_text().splitlines()
    assert lines[0].startswith("request_id,platform,interaction_type,target_username,fetched_at,username")
    events = _asset_events(f"file://{dest}")
    assert len(events) == 1
    assert events[0]["extra"] == {
        "request_id": simulator_connection.ledger.submissions()[0].request_id,
        "records": len(lines) - 1,
        "format": "csv",
    }


def test_failed_lookup_fails_the_task(
    simulator_connection: NyneSimulator, load_dag: Any, tmp_path: Path
) -> None:
    dag = load_dag(
        _source("nyne_transfer_failed", f"file://{tmp_path}/x.jsonl", username="fail_private"),
        "nyne_transfer_failed",
    )
    run = dag.test(logical_date=LOGICAL_DATE)
    assert _land_state(run) == "failed"
    assert list(tmp_path.iterdir()) == []
