"""The credit guard on a real deployment: 20 mapped tasks racing for a budget of 5 lookups submit exactly 5.

A real deployment (scheduler, triggerer, dag-processor, api-server on loopback, SQLite,
LocalExecutor with room for all 20 tasks at once) runs one DAG: a lookup mapped over 20
profiles with ``credit_budget=15`` (5 lookups of 3 credits). Every mapped task waits at a
barrier (a file per task in a shared folder) until all 20 are running, then asks the
api-server for its reservation: the 20 requests reach the provider's plugin at the same
moment, and its database decides. The simulator's ledger must show exactly 5 submissions;
the 15 other tasks fail without sending anything, naming the budget and what is left of it.
"""

from __future__ import annotations

import secrets
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.e2e.one_dag import one_dag_deployment, quiet_simulator
from tests.fixtures.airflow_processes import AirflowProcesses

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

DAG_ID = "nyne_credit_race"
TASKS = 20
BUDGET = 15  # credits: 5 lookups
SIGNING_SECRET = f"race-{secrets.token_hex(16)}"
#: How long the barrier waits for all 20 task processes (they start one after another on a busy machine).
BARRIER_SECONDS = 400


def dag_source(barrier: Path) -> str:
    return textwrap.dedent(
        f"""
        from __future__ import annotations

        import datetime
        import time
        from pathlib import Path

        from airflow.sdk import DAG

        from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator

        BARRIER = Path({str(barrier)!r})


        class RacingLookup(NyneSubmitInteractionsOperator):
            # Test only: each mapped task waits until all {TASKS} run, then asks for its credits.
            def _hold_credits(self, context, fingerprint):
                (BARRIER / str(context["ti"].map_index)).touch()
                deadline = time.monotonic() + {BARRIER_SECONDS}
                while len(list(BARRIER.iterdir())) < {TASKS}:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the {TASKS} mapped tasks did not all run at once")
                    time.sleep(0.02)
                return super()._hold_credits(context, fingerprint)


        with DAG(
            "{DAG_ID}",
            schedule=None,
            start_date=datetime.datetime(2024, 1, 1),
            catchup=False,
            max_active_tasks={TASKS},
        ):
            RacingLookup.partial(
                task_id="lookup", interaction_type="followers", credit_budget="{{{{ params.budget }}}}",
            ).expand(username=[f"racer_{{i:02d}}" for i in range({TASKS})])
        """
    )


@pytest.fixture
def sim() -> Iterator[NyneSimulator]:
    with quiet_simulator("race") as simulator:
        yield simulator


@pytest.fixture
def deployment(sim: NyneSimulator, tmp_path: Path) -> Iterator[AirflowProcesses]:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    extra = {
        # The credit routes of the provider's plugin answer once a deployment secret is set.
        "AIRFLOW__NYNE__CALLBACK_SECRET": SIGNING_SECRET,
        "AIRFLOW__CORE__PARALLELISM": str(TASKS + 4),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(TASKS),
    }
    with one_dag_deployment(tmp_path, sim, DAG_ID, dag_source(barrier), extra=extra) as af:
        yield af


def _mapped_states(af: AirflowProcesses, run_id: str) -> dict[int, str]:
    rows = af.query(
        "SELECT map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = 'lookup'",
        (DAG_ID, run_id),
    )
    return {int(index): str(state) for index, state in rows}


def _log(af: AirflowProcesses, run_id: str, map_index: int) -> str:
    folder = af.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / "task_id=lookup"
    path = folder / f"map_index={map_index}" / "attempt=1.log"
    return path.read_text(errors="replace") if path.exists() else ""


def test_twenty_mapped_tasks_racing_for_five_lookups_submit_exactly_five(
    deployment: AirflowProcesses, sim: NyneSimulator, tmp_path: Path
) -> None:
    af = deployment
    run_id = af.trigger_dag(DAG_ID, conf={"budget": BUDGET})
    assert af.wait_for_run(DAG_ID, run_id, timeout=BARRIER_SECONDS + 300) == "failed"  # 15 were refused

    states = _mapped_states(af, run_id)
    assert len(states) == TASKS
    assert sorted(states.values()).count("success") == 5, af.diagnostics()
    assert sorted(states.values()).count("failed") == TASKS - 5
    assert len(list((tmp_path / "barrier").iterdir())) == TASKS  # all of them reached the race

    # The ledger: exactly five lookups were sent, one per successful task.
    submissions = sim.ledger.submissions()
    assert len(submissions) == 5
    assert len(sim.ledger.requests(endpoint="submit")) == 5
    winners = {index for index, state in states.items() if state == "success"}
    assert {s.request["username"] for s in submissions} == {f"racer_{i:02d}" for i in winners}

    # Every refused task says why, naming the budget and what is left, and sent nothing.
    for index in set(states) - winners:
        log = _log(af, run_id, index)
        assert "the credit budget of this DAG run for connection 'nyne_default' is 15 credits" in log, log[
            -2000:
        ]
        assert "15 are reserved by its other lookups and 0 left" in log
        assert "Submitting Nyne" not in log

    # No credential reached a log: the signing secret, the API key and secret.
    logs = "".join(path.read_text(errors="replace") for path in (af.home / "logs").rglob("*.log"))
    logs += "".join(af.log_text(name) for name in ("api-server", "scheduler"))
    for secret in (SIGNING_SECRET, sim.api_key, sim.api_secret):
        assert secret not in logs

    # The provider's tables agree: 15 credits reserved, five reservations.
    [(reserved,)] = af.query("SELECT reserved FROM nyne_credit_budget WHERE dag_id = ?", (DAG_ID,))
    assert reserved == BUDGET
    [(live,)] = af.query(
        "SELECT COUNT(*) FROM nyne_credit_reservation WHERE dag_id = ? AND state = 'reserved'", (DAG_ID,)
    )
    assert live == 5
