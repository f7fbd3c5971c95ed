"""OpenLineage: a DAG run with the OpenLineage provider's file transport records the transfer's lineage.

The DAG (submit, then the transfer) runs with ``dag.test()`` in a child process whose
environment turns OpenLineage on (``[openlineage] transport`` = the file transport, one JSON
event per line): the provider reads that configuration once per process and registers its
listener when its plugin loads, so the test process itself, where it is off, cannot be
switched. The lookup runs against the simulator in this process, the file lands under
``tmp_path``; the events are then read back from the transport's file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator

pytestmark = pytest.mark.integration

pytest.importorskip("airflow.providers.openlineage", reason="needs apache-airflow-providers-openlineage")

DAG_SOURCE = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator
from airflow_provider_nyne.transfers.interactions_to_storage import NyneInteractionsToObjectStorageOperator

with DAG({dag_id!r}, schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False) as dag:
    submit = NyneSubmitInteractionsOperator(
        task_id="submit", social_media_url="https://x.com/Data_Person", interaction_type="followers"
    )
    land = NyneInteractionsToObjectStorageOperator(
        task_id="land",
        request_id="{{{{ ti.xcom_pull(task_ids='submit', key='request_id') }}}}",
        path={path!r},
        wait_for_completion=True,
        deferrable=False,
        poll_interval=0.05,
        timeout=60,
    )
    submit >> land
"""

RUNNER = """
import importlib.util, sys

spec = importlib.util.spec_from_file_location("lineage_dag", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
run = module.dag.test()
states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
print("STATES", states)
sys.exit(0 if run.state == "success" else 1)
"""


def _run_with_openlineage(
    dag_file: Path, events: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    child_env = {
        **env,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "nyne_tests",
    }
    return subprocess.run(
        [sys.executable, "-c", RUNNER, str(dag_file)],
        capture_output=True,
        text=True,
        env=child_env,
        timeout=240,
        check=False,
    )


def _events(path: Path) -> list[dict[str, Any]]:
    assert path.exists(), "the OpenLineage file transport wrote nothing"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_transfer_reports_the_lookup_as_input_and_the_landed_file_as_output(
    simulator_connection: NyneSimulator, airflow_db: str, tmp_path: Path
) -> None:
    dag_id = f"nyne_lineage_{uuid.uuid4().hex[:8]}"
    dest = tmp_path / "out" / "followers.jsonl"
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dags.mkdir(parents=True, exist_ok=True)
    dag_file = dags / f"{dag_id}.py"
    dag_file.write_text(DAG_SOURCE.format(dag_id=dag_id, path=f"file://{dest}"))
    events_file = tmp_path / "openlineage.jsonl"
    try:
        done = _run_with_openlineage(dag_file, events_file, dict(os.environ))
    finally:
        dag_file.unlink(missing_ok=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    records = len(dest.read_text().splitlines())
    assert records > 0
    events = _events(events_file)
    land = [e for e in events if e["job"]["name"] == f"{dag_id}.land" and e["eventType"] == "COMPLETE"]
    assert len(land) == 1, [(e["job"]["name"], e["eventType"]) for e in events]
    [event] = land
    assert [(d["namespace"], d["name"]) for d in event["inputs"]] == [
        ("nyne", "interactions/twitter/data_person/followers")
    ]
    [output] = event["outputs"]
    assert (output["namespace"], output["name"]) == ("file", str(dest))
    assert output["outputFacets"]["outputStatistics"]["rowCount"] == records
    # The submit task has no lineage of its own: the lookup is the transfer's input, once.
    submit = [e for e in events if e["job"]["name"] == f"{dag_id}.submit" and e["eventType"] == "COMPLETE"]
    assert [e["inputs"] + e["outputs"] for e in submit] == [[]]
