"""Helpers for integration tests that run DAGs with ``dag.test()`` against the simulator.

DAG sources start with :data:`DAG_HEADER`: imports, fast polling defaults and a failure
callback that records each failed or retried try (task, try number, exception type and
message) in the JSON-lines file named by ``NYNE_TEST_FAILURES``, so that a test can assert
the message a user would read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

DAG_HEADER = """
from __future__ import annotations

import datetime
import json
import os

from airflow.sdk import DAG

from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator
from airflow_provider_nyne.sensors.interactions import NyneInteractionsSensor

FAST = {"poll_interval": 0.05, "max_poll_interval": 0.2}
START = datetime.datetime(2024, 1, 1)


def record_failure(context):
    ti = context["ti"]
    error = context.get("exception")
    with open(os.environ["NYNE_TEST_FAILURES"], "a") as f:
        f.write(json.dumps({"task_id": ti.task_id, "try": ti.try_number,
                            "type": type(error).__name__, "error": str(error)}) + "\\n")


CALLBACKS = {"on_failure_callback": record_failure, "on_retry_callback": record_failure}
"""


#: Called (in the test process: ``dag.test()`` runs tasks in process) when a DAG under test
#: simulates a crash, so that a test can change the simulator at that exact moment.
ON_CRASH: list[Callable[[], None]] = []


@pytest.fixture
def on_crash() -> Any:
    """``on_crash(fn)`` registers ``fn`` for the duration of the test."""
    yield ON_CRASH.append
    ON_CRASH.clear()


@pytest.fixture
def failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``failures()`` -> ``{task_id: [record, ...]}`` of the failed/retried tries recorded by the callbacks."""
    path = tmp_path / "failures.jsonl"
    path.touch()
    monkeypatch.setenv("NYNE_TEST_FAILURES", str(path))

    def read() -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for line in path.read_text().splitlines():
            record = json.loads(line)
            out.setdefault(record["task_id"], []).append(record)
        return out

    return read


def assert_failure(record: dict[str, Any], *fragments: str, type_name: str | None = None) -> None:
    """
    A recorded failure names its cause.

    Airflow 3.1 passes no ``exception`` to failure/retry callbacks, so there only the fact of
    the failure (state and try number, asserted by the caller) can be checked.
    """
    if record["type"] == "NoneType" and record["error"] == "None":
        return
    if type_name is not None:
        assert record["type"] == type_name, record
    for fragment in fragments:
        assert fragment in record["error"], (fragment, record)


def xcom(run: Any, task_id: str, key: str = "return_value") -> Any:
    """The XCom value a task of ``run`` pushed (``None`` when absent)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.scalars(
            XComModel.get_many(
                run_id=run.run_id, key=key, dag_ids=run.dag_id, task_ids=task_id
            ).with_only_columns(XComModel.value)
        ).first()


def task_instances(run: Any) -> dict[str, tuple[str, int]]:
    """``{task_id: (state, try_number)}`` of every task instance of ``run``."""
    from airflow.utils.session import create_session

    with create_session() as session:
        return {
            ti.task_id: (str(getattr(ti.state, "value", ti.state)), int(ti.try_number))
            for ti in run.get_task_instances(session=session)
        }


def set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, conn_json: str) -> None:
    """Expose a connection to ``dag.test()`` through ``AIRFLOW_CONN_<ID>``."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn_json)
