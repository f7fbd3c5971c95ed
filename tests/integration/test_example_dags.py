"""The example DAGs: they parse cleanly, follow the conventions, and run to success against the simulator.

``dag.test()`` re-parses the configured dags folder to serialise the DAG, and the test
session's dags folder is fixed when Airflow is first imported, so each example's source is
copied there with the ``load_dag`` fixture (the same file text, so the same DAG). The knobs
the examples read at parse time (``NYNE_EXAMPLE_POLL_INTERVAL``, ``NYNE_EXAMPLE_OUTPUT_BASE``)
are set before the copy is imported.
"""

from __future__ import annotations

import csv
import inspect
import json
import socket
import warnings
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator

pytestmark = pytest.mark.integration

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "example_dags"
EXAMPLES = {
    "example_nyne_followers_to_storage": EXAMPLES_DIR / "example_nyne_followers_to_storage.py",
    "example_nyne_fan_out": EXAMPLES_DIR / "example_nyne_fan_out.py",
    "example_nyne_replies": EXAMPLES_DIR / "example_nyne_replies.py",
}


def _dagbag_class() -> Any:
    try:  # Airflow 3.2+
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    return DagBag


def _dagbag(folder: Path) -> Any:
    DagBag = _dagbag_class()
    kwargs: dict[str, Any] = {}
    if "include_examples" in inspect.signature(DagBag).parameters:  # gone in 3.2
        kwargs["include_examples"] = False
    return DagBag(dag_folder=str(folder), **kwargs)


@pytest.fixture(scope="module")
def example_bag() -> Any:
    """Every example file parsed the way the dag-processor parses them, warnings turned into errors."""
    _dagbag_class()  # imported first: Airflow's own import-time deprecations are not the examples' fault
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return _dagbag(EXAMPLES_DIR)


def test_example_folder_holds_exactly_the_documented_examples() -> None:
    assert {p.stem for p in EXAMPLES_DIR.glob("*.py")} == set(EXAMPLES)


def test_examples_parse_without_errors_or_warnings(example_bag: Any) -> None:
    assert example_bag.import_errors == {}
    assert getattr(example_bag, "captured_warnings", {}) == {}
    assert set(example_bag.dag_ids) == set(EXAMPLES)


@pytest.mark.parametrize("dag_id", sorted(EXAMPLES))
def test_example_follows_the_conventions(example_bag: Any, dag_id: str) -> None:
    dag = example_bag.dags[dag_id]
    assert dag.tags
    assert "nyne" in dag.tags
    assert dag.doc_md
    assert len(dag.doc_md.strip()) > 100
    assert dag.timetable.can_be_scheduled, "examples run on a schedule"
    assert dag.catchup is False
    for task in dag.tasks:
        assert task.retries >= 1, f"{task.task_id} has no retries"
        assert task.retry_delay.total_seconds() > 0


@pytest.mark.parametrize("dag_id", sorted(EXAMPLES))
def test_parsing_does_no_io(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dag_id: str) -> None:
    """No connection, Variable or network is touched when the file is parsed."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("I/O at DAG parse time")

    from airflow.sdk import BaseHook, Variable

    monkeypatch.delenv("AIRFLOW_CONN_NYNE_DEFAULT", raising=False)
    monkeypatch.setattr(Variable, "get", refuse)
    monkeypatch.setattr(BaseHook, "get_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    (tmp_path / EXAMPLES[dag_id].name).write_text(EXAMPLES[dag_id].read_text())
    bag = _dagbag(tmp_path)
    assert bag.import_errors == {}
    assert bag.dag_ids == [dag_id]


# --- runs against the simulator -------------------------------------------------------------


@pytest.fixture
def example_env(
    simulator_connection: NyneSimulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[NyneSimulator, Path]:
    """Simulator connection, a fast poll interval and an output base under ``tmp_path``."""
    out = tmp_path / "out"
    monkeypatch.setenv("NYNE_EXAMPLE_POLL_INTERVAL", "0.1")
    monkeypatch.setenv("NYNE_EXAMPLE_OUTPUT_BASE", f"file://{out}")
    return simulator_connection, out


def _run(load_dag: Any, dag_id: str, **conf: Any) -> Any:
    """Run like ``airflow dags trigger`` does in Airflow 3: a manual run has no logical date."""
    dag = load_dag(EXAMPLES[dag_id].read_text(), dag_id)
    run = dag.test(run_conf=conf or None, logical_date=None)
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "success", states
    return run


def _items(sim: NyneSimulator, request_id: str) -> list[dict[str, Any]]:
    job = sim.job(request_id)
    assert job is not None
    assert job["status"] == "completed"
    return list(job["result"]["interactions"])


def _xcom(run: Any, task_id: str) -> list[Any]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        query = XComModel.get_many(
            run_id=run.run_id, key="return_value", dag_ids=run.dag_id, task_ids=task_id
        )
        return [XComModel.deserialize_value(row) for row in session.scalars(query)]


def test_followers_example_lands_the_followers(
    load_dag: Any, example_env: tuple[NyneSimulator, Path]
) -> None:
    sim, out = example_env
    run = _run(load_dag, "example_nyne_followers_to_storage", profile_url="https://x.com/data_person")

    [submission] = sim.ledger.submissions()
    assert submission.request["type"] == "followers"
    assert submission.request["username"] == "data_person"
    [written] = list(out.glob("followers/data_person/dt=*/*.jsonl"))
    assert written.parent.name == f"dt={run.run_after:%Y-%m-%d}"
    records = [json.loads(line) for line in written.read_text().splitlines()]
    expected = _items(sim, submission.request_id)
    assert [r["username"] for r in records] == [item["username"] for item in expected]
    assert {r["request_id"] for r in records} == {submission.request_id}
    # The run's event is on the one Asset of the dataset, <base>/followers, and names the file.
    [event] = _asset_events(f"file://{out}/followers")
    assert event["file"] == f"file://{written}"
    assert (event["request_id"], event["records"]) == (submission.request_id, len(records))


def _asset_events(uri: str) -> list[dict[str, Any]]:
    """The ``extra`` of every Asset event recorded on ``uri`` (test-side check only)."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(AssetEvent.extra).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
        return list(session.scalars(query.where(AssetModel.uri == uri)))


def test_fan_out_example_lands_one_file_per_distinct_profile(
    load_dag: Any, example_env: tuple[NyneSimulator, Path]
) -> None:
    sim, out = example_env
    profiles = ["https://x.com/alpha_team", "https://x.com/beta_team", "https://x.com/alpha_team"]
    run = _run(load_dag, "example_nyne_fan_out", profiles=profiles)

    submissions = {s.request["username"]: s.request_id for s in sim.ledger.submissions()}
    assert sorted(submissions) == ["alpha_team", "beta_team"], "duplicates are looked up once"
    counts = {}
    for name, request_id in submissions.items():
        [written] = list(out.glob(f"fan_out/dt=*/*/{name}.jsonl"))
        lines = written.read_text().splitlines()
        assert len(lines) == len(_items(sim, request_id))
        counts[name] = len(lines)
    assert _xcom(run, "report") == [{"targets": 2, "records": sum(counts.values())}]


def test_fan_out_example_stops_before_mapping_when_the_balance_does_not_cover_it(
    load_dag: Any, example_env: tuple[NyneSimulator, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    sim, _ = example_env
    sim.set_credits(8)  # two profiles cost up to 6; a floor of 3 leaves room for neither
    dag = load_dag(EXAMPLES["example_nyne_fan_out"].read_text(), "example_nyne_fan_out")
    profiles = ["https://x.com/alpha_team", "https://x.com/beta_team"]
    run = dag.test(run_conf={"profiles": profiles, "min_credit_balance": 3}, logical_date=None)

    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    assert run.state == "failed"
    assert states[("plan_targets", -1)] == "failed"
    assert not [key for key in states if key[0] == "lookup" and key[1] >= 0]  # nothing was mapped
    assert sim.ledger.submissions() == []
    assert len(sim.ledger.usage_calls()) == 1  # one free balance read, and no retry of the refusal
    assert "balance is 8 credits; 2 lookups may cost 6 (3 each)" in capsys.readouterr().out


def test_replies_example_waits_in_one_task_and_lands_csv(
    load_dag: Any, example_env: tuple[NyneSimulator, Path]
) -> None:
    sim, out = example_env
    tweet = "https://x.com/data_person/status/1234567890123"
    run = _run(load_dag, "example_nyne_replies", tweet_url=tweet)

    [submission] = sim.ledger.submissions()
    assert submission.request["type"] == "replies"
    assert submission.request["tweet_id"] == "1234567890123"
    [summary] = _xcom(run, "fetch_replies")
    assert summary["status"] == "completed"
    assert summary["request_id"] == submission.request_id
    [written] = list(out.glob("replies/data_person_1234567890123/dt=*/*.csv"))
    with written.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected = _items(sim, submission.request_id)
    assert [row["reply_text"] for row in rows] == [item["reply_text"] for item in expected]
