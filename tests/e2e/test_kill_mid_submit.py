"""A task process killed while its submission is in flight: the retry must not pay a second time.

A real deployment (scheduler, triggerer, dag-processor, api-server on loopback, SQLite,
LocalExecutor) runs a DAG whose submit task has ``retries=1``. The simulator holds the
first submission (a ``delay`` fault: the request has arrived, its answer has not left);
while it is held, the task's own process, the one holding the connection to the simulator,
gets SIGKILL. The simulator then processes the submission, as an API that received it
would. Airflow retries the task: the retry finds the intent recorded before the POST,
sends nothing, and fails naming the situation. Then the run is resumed as the message says,
with ``reuse_request_id`` (from a Variable, through the DAG's template), and succeeds with
the one submission and the one charge.
"""

from __future__ import annotations

import contextlib
import signal
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.e2e.one_dag import one_dag_deployment, quiet_simulator
from tests.fixtures.airflow_processes import AirflowProcesses

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

DAG_ID = "nyne_kill_mid_submit"
RESUME_VARIABLE = "nyne_resume_request_id"
#: How long the simulator holds the first submission: far longer than finding and killing
#: the task process takes; the test waits for it to end only once, for the ledger entry.
HOLD_SECONDS = 30.0

DAG_SOURCE = textwrap.dedent(
    f"""
    from __future__ import annotations

    import datetime

    from airflow.sdk import DAG

    from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator

    with DAG("{DAG_ID}", schedule=None, start_date=datetime.datetime(2024, 1, 1), catchup=False) as dag:
        NyneSubmitInteractionsOperator(
            task_id="submit",
            username="nasa",
            interaction_type="followers",
            reuse_request_id="{{{{ var.value.get('{RESUME_VARIABLE}', '') }}}}",
            retries=1,
            retry_delay=datetime.timedelta(seconds=1),
        )
    """
)


@pytest.fixture
def sim() -> Iterator[NyneSimulator]:
    with quiet_simulator("e2e", job_duration=1.0) as simulator:
        yield simulator


@pytest.fixture
def deployment(sim: NyneSimulator, tmp_path: Path) -> Iterator[AirflowProcesses]:
    with one_dag_deployment(tmp_path, sim, DAG_ID, DAG_SOURCE) as af:
        yield af


def _process_talking_to(af: AirflowProcesses, port: int) -> psutil.Process | None:
    """
    The scheduler's descendant with an open connection to 127.0.0.1:``port``: the task sending its POST.

    (LocalExecutor runs tasks in the scheduler's process tree. Task processes retitle
    themselves, which overwrites what ``/proc`` shows of their environment, so they are found
    by ancestry rather than by the harness's marker variable.)
    """
    with contextlib.suppress(psutil.Error):
        tree = {child.pid for child in psutil.Process(af.process("scheduler").pid).children(recursive=True)}
        for conn in psutil.net_connections(kind="tcp"):
            connected = conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
            if connected and conn.pid in tree:
                return psutil.Process(conn.pid)
    return None


def _task_log(af: AirflowProcesses, run_id: str, attempt: int) -> str:
    path = (
        af.home
        / "logs"
        / f"dag_id={DAG_ID}"
        / f"run_id={run_id}"
        / "task_id=submit"
        / f"attempt={attempt}.log"
    )
    return path.read_text(errors="replace") if path.exists() else ""


def test_a_task_killed_while_submitting_is_not_charged_twice(
    deployment: AirflowProcesses, sim: NyneSimulator
) -> None:
    af = deployment
    hold = sim.faults.delay(HOLD_SECONDS, endpoint="submit", times=1)
    run_id = af.trigger_dag(DAG_ID)

    # The fault is used up when the submission reaches the simulator: from then on it is held.
    af.wait_until(
        lambda: all(f["id"] != hold for f in sim.faults.active()),
        timeout=180,
        what="the submission to reach the simulator",
        interval=0.1,
    )
    task = af.wait_until(
        lambda: _process_talking_to(af, sim.port), timeout=10, what="the task process", interval=0.1
    )
    assert sim.ledger.submissions() == []  # still held: the task cannot have its answer
    task.send_signal(signal.SIGKILL)
    task.wait(timeout=10)

    # Airflow retries; the retry must fail on its own, without sending anything.
    state = af.wait_for_run(DAG_ID, run_id, timeout=240)
    instance = af.task_instances(DAG_ID, run_id)["submit"]
    assert (state, instance["state"], instance["try_number"]) == ("failed", "failed", 2), af.diagnostics()
    retry_log = _task_log(af, run_id, 2)
    assert "a previous try of this task was interrupted while submitting this lookup (try 1" in retry_log
    assert "the lookup may be running at Nyne and may be charged" in retry_log
    assert "AirflowFailException" in retry_log

    # The held submission was processed by the API all the same: one, and only one.
    sim.ledger.wait_for(lambda ledger: len(ledger.submissions()) == 1, timeout=HOLD_SECONDS + 60)
    [submission] = sim.ledger.submissions()
    assert len(sim.ledger.requests(endpoint="submit")) == 1  # the retry sent nothing at all

    # Resume as the message says: the id from the dashboard, then clear the task.
    af.run_cli("variables", "set", RESUME_VARIABLE, submission.request_id)
    # (The DAG's one task; Airflow 3.3's "--task-regex" finds no task instance of a run without logical date.)
    af.run_cli("tasks", "clear", DAG_ID, "--yes")
    state = af.wait_for_run(DAG_ID, run_id, timeout=240)
    instance = af.task_instances(DAG_ID, run_id)["submit"]
    assert (state, instance["state"]) == ("success", "success"), af.diagnostics()
    [(value,)] = af.query(
        "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = 'submit' AND key = 'return_value'",
        (DAG_ID, run_id),
    )
    assert submission.request_id in str(value)

    sim.ledger.wait_for(lambda ledger: ledger.credits_charged() > 0, timeout=60)
    assert len(sim.ledger.submissions()) == 1
    assert sim.ledger.credits_charged() == 3
    # The key and secret reached no log.
    logs = "".join(p.read_text(errors="replace") for p in (af.home / "logs").rglob("*.log"))
    assert sim.api_secret not in logs
    assert sim.api_key not in logs
