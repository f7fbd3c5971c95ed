"""Tasks marked failed while they wait in the worker: on_kill says what keeps running, and a clear reconnects.

A real deployment (scheduler, triggerer, dag-processor, api-server on loopback, SQLite,
LocalExecutor) whose configuration says ``[operators] default_deferrable = False``
(``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE``): the DAG does not pass ``deferrable``, so its
tasks wait in the worker, as the deployment asks. Two of them wait for lookups the simulator
holds running: ``lookup`` (submit and wait in one task) and ``sense`` (a sensor waiting for
``submit``'s request). Both are marked failed through the REST API, as a user would in the
UI. Airflow's task supervisor then learns from its heartbeat that the task must stop and
sends it SIGTERM, whose handler calls ``on_kill``: each task's log must name its request,
say the lookup keeps running at Nyne and may be charged, and what a retry does. The record
of ``lookup``'s request stays in its task state store; once the job ends, clearing ``lookup``
reconnects to it: one submission, one charge.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.e2e.one_dag import one_dag_deployment, quiet_simulator
from tests.fixtures.airflow_processes import AirflowProcesses

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

DAG_ID = "nyne_on_kill"

DAG_SOURCE = textwrap.dedent(
    f"""
    from __future__ import annotations

    import datetime

    from airflow.sdk import DAG

    from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator
    from airflow_provider_nyne.sensors.interactions import NyneInteractionsSensor

    FAST = {{"poll_interval": 0.5, "max_poll_interval": 1.0, "timeout": 600}}

    with DAG("{DAG_ID}", schedule=None, start_date=datetime.datetime(2024, 1, 1), catchup=False):
        NyneSubmitInteractionsOperator(
            task_id="lookup", username="hold_lookup", interaction_type="followers",
            wait_for_completion=True, **FAST,
        )
        submit = NyneSubmitInteractionsOperator(
            task_id="submit", username="hold_sensed", interaction_type="followers",
        )
        sense = NyneInteractionsSensor(
            task_id="sense", request_id="{{{{ ti.xcom_pull(task_ids='submit') }}}}", **FAST,
        )
        submit >> sense
    """
)


@pytest.fixture
def sim() -> Iterator[NyneSimulator]:
    with quiet_simulator("kill") as simulator:
        yield simulator


@pytest.fixture
def deployment(sim: NyneSimulator, tmp_path: Path) -> Iterator[AirflowProcesses]:
    extra = {
        "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "False",
        # A killed task learns it from its next heartbeat: every second, not every five.
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
        # The REST API without a login, for marking tasks failed as a user would in the UI.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
    }
    with one_dag_deployment(tmp_path, sim, DAG_ID, DAG_SOURCE, extra=extra) as af:
        yield af


def _request_id(sim: NyneSimulator, username: str) -> str:
    [submission] = [s for s in sim.ledger.submissions() if s.request.get("username") == username]
    return submission.request_id


def _log(af: AirflowProcesses, run_id: str, task_id: str, attempt: int) -> str:
    path = (
        af.home
        / "logs"
        / f"dag_id={DAG_ID}"
        / f"run_id={run_id}"
        / f"task_id={task_id}"
        / f"attempt={attempt}.log"
    )
    return path.read_text(errors="replace") if path.exists() else ""


def _api(af: AirflowProcesses, method: str, path: str, body: dict[str, Any]) -> httpx.Response:
    answer = httpx.request(method, f"{af.api_url}/api/v2{path}", json=body, timeout=60, trust_env=False)
    assert answer.status_code == 200, f"{method} {path}: {answer.status_code} {answer.text}"
    return answer


def test_tasks_marked_failed_while_waiting_in_the_worker_log_what_keeps_running(
    deployment: AirflowProcesses, sim: NyneSimulator
) -> None:
    af = deployment
    run_id = af.trigger_dag(DAG_ID)

    # Both wait in their worker (the deployment's default), polling lookups the simulator holds.
    for task_id, username in (("lookup", "hold_lookup"), ("sense", "hold_sensed")):
        af.wait_for_task_state(DAG_ID, run_id, task_id, ("running",), timeout=240)
        af.wait_until(
            lambda username=username: (
                [s for s in sim.ledger.submissions() if s.request.get("username") == username]
                and sim.ledger.poll_count(_request_id(sim, username)) >= 2
            ),
            timeout=120,
            what=f"{task_id} to poll its lookup from the worker",
        )
    assert af.task_instances(DAG_ID, run_id)["lookup"]["next_method"] is None  # never deferred
    lookup_rid = _request_id(sim, "hold_lookup")
    sensor_rid = _request_id(sim, "hold_sensed")

    for task_id in ("lookup", "sense"):
        _api(af, "PATCH", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}", {"new_state": "failed"})

    def killed(task_id: str) -> str | None:
        log = _log(af, run_id, task_id, 1)
        return log if "Task killed while Nyne request" in log else None

    lookup_log = af.wait_until(lambda: killed("lookup"), timeout=120, what="lookup's on_kill line")
    sense_log = af.wait_until(lambda: killed("sense"), timeout=120, what="sense's on_kill line")
    for log, rid in ((lookup_log, lookup_rid), (sense_log, sensor_rid)):
        assert f"Task killed while Nyne request {rid} runs: the lookup keeps running at Nyne" in log
        assert "charged 3 credits if it completes with results" in log
    assert (
        "A retry or a clear of this task reconnects to it instead of paying again "
        "(its id is kept in the task state 'nyne_interactions_request')"
    ) in lookup_log
    assert "A retry of this sensor waits for the same request again" in sense_log
    instances = af.task_instances(DAG_ID, run_id)
    assert (instances["lookup"]["state"], instances["sense"]["state"]) == ("failed", "failed")

    # Nothing was released or cleared: the record a retry reconnects with is still there.
    [(value,)] = af.query(
        "SELECT value FROM task_state_store WHERE dag_id = ? AND run_id = ? AND task_id = 'lookup' "
        "AND key = 'nyne_interactions_request'",
        (DAG_ID, run_id),
    )
    assert lookup_rid in value

    # The lookup ends at Nyne; clearing the task reconnects to it instead of paying again.
    sim.release(lookup_rid)
    _api(
        af,
        "POST",
        f"/dags/{DAG_ID}/clearTaskInstances",
        {"dag_run_id": run_id, "task_ids": ["lookup"], "dry_run": False, "only_failed": True},
    )
    af.wait_for_task_state(DAG_ID, run_id, "lookup", ("success",), timeout=240)
    assert f"Nyne request {lookup_rid} from a previous try already completed: reusing it" in _log(
        af, run_id, "lookup", 2
    )
    assert [s.request_id for s in sim.ledger.submissions() if s.request.get("username") == "hold_lookup"] == [
        lookup_rid
    ]
    sim.ledger.wait_for(lambda ledger: ledger.credits_charged() >= 3, timeout=30)
    assert sim.ledger.credits_charged() == 3  # the released lookup; the sensor's is still held
