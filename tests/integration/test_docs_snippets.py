"""Every code sample of the documentation, run for real: the files under ``docs/snippets/``.

The pages include these files (sections between ``# [START name]`` and ``# [END name]``), so
what a reader copies is what runs here: DAGs with ``dag.test()`` against the local simulator
(a loopback S3 server or callback receiver where the sample needs one), scripts with
``runpy`` against the simulator. Only what the sample cannot know is replaced before it runs:
a destination (``/tmp/...``, a bucket) by the test's own.
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.fixtures.s3 import S3Env

# The callback receiver of the callback-flow tests (the api-server's app, in this process).
from tests.integration.test_callbacks_flow import receiver  # noqa: F401

pytestmark = pytest.mark.integration

SNIPPETS = Path(__file__).resolve().parents[2] / "docs" / "snippets"


def _source(name: str, **replace: str) -> str:
    source = (SNIPPETS / name).read_text()
    for old, new in replace.items():
        assert old in source, f"{name} no longer contains {old!r}"
        source = source.replace(old, new)
    return source


def _run_script(name: str) -> tuple[dict[str, Any], str]:
    """Run a snippet file as ``python <file>`` would; return its globals and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        module = runpy.run_path(str(SNIPPETS / name), run_name="__main__")
    return module, out.getvalue()


def _client_env(sim: NyneSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NYNE_API_KEY", sim.api_key)
    monkeypatch.setenv("NYNE_API_SECRET", sim.api_secret)
    monkeypatch.setenv("NYNE_API_URL", sim.url)


def _states(run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in run.get_task_instances()}


def _items(sim: NyneSimulator, request_id: str) -> list[dict[str, Any]]:
    job = sim.job(request_id)
    assert job is not None
    assert job["status"] == "completed"
    return list(job["result"]["interactions"])


def _asset_events(uri: str) -> list[dict[str, Any]]:
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


# --- DAGs ---------------------------------------------------------------------------------------


def test_quickstart_dag_lands_the_followers(
    simulator_connection: NyneSimulator, load_dag: Any, tmp_path: Path
) -> None:
    dag = load_dag(
        _source("quickstart_dag.py", **{"file:///tmp/nyne": f"file://{tmp_path}"}), "nyne_quickstart"
    )
    run = dag.test(logical_date=None)  # a manual run, as a first try from the UI or the CLI is

    assert run.state == "success", _states(run)
    [submission] = simulator_connection.ledger.submissions()
    assert submission.request["username"] == "ApacheAirflow"
    assert submission.request["type"] == "followers"
    [written] = list((tmp_path / "followers").rglob("*.jsonl"))
    records = [json.loads(line) for line in written.read_text().splitlines()]
    expected = _items(simulator_connection, submission.request_id)
    assert [r["username"] for r in records] == [item["username"] for item in expected]
    assert {r["request_id"] for r in records} == {submission.request_id}


@pytest.mark.s3
def test_followers_to_s3_dag_lands_parquet_in_s3(
    simulator_connection: NyneSimulator, s3: S3Env, load_dag: Any
) -> None:
    import pendulum
    import pyarrow.parquet as pq

    source = _source("followers_to_s3.py", **{"s3://aws_default@my-lake": f"s3://{s3.conn_id}@{s3.bucket}"})
    dag = load_dag(source, "nyne_followers_to_s3")
    assert [type(o).__name__ for o in dag.get_task("land").outlets] == ["AssetAlias"]

    run = dag.test(logical_date=pendulum.datetime(2025, 1, 2, tz="UTC"))

    assert run.state == "success", _states(run)
    keys = s3.keys()
    assert keys == [f"nyne/followers/dt=2025-01-02/{run.run_id}.parquet"]
    assert s3.uploads() == []
    table = pq.read_table(io.BytesIO(s3.get(keys[0])))
    request_id = simulator_connection.ledger.submissions()[0].request_id
    assert table.num_rows > 0
    assert set(table.column("request_id").to_pylist()) == {request_id}
    assert set(table.column("target_username").to_pylist()) == {"ApacheAirflow"}
    events = _asset_events(f"s3://{s3.bucket}/{keys[0]}")
    assert [(e["task_id"], e["extra"]["records"]) for e in events] == [("land", table.num_rows)]


def test_use_followers_is_scheduled_on_the_alias_the_transfer_records_under(load_dag: Any) -> None:
    producer = load_dag(_source("followers_to_s3.py"), "nyne_followers_to_s3")
    consumer = load_dag(_source("use_followers.py"), "use_followers")

    [alias] = producer.get_task("land").outlets
    assert type(alias).__name__ == "AssetAlias"
    scheduled_on = [(type(a).__name__, a.name) for a in consumer.timetable.asset_condition.objects]
    assert scheduled_on == [("AssetAlias", alias.name)]


def test_callback_deferred_dag_resumes_from_the_callback_without_polling(
    simulator_connection: NyneSimulator,
    receiver: tuple[str, Any],  # noqa: F811
    load_dag: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_provider_nyne.callbacks import config

    url, _ = receiver
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_BASE_URL", url)
    # dag.test() runs no receiver-driven resume: the trigger must read its mailbox soon, not in 5 minutes.
    monkeypatch.setattr(config, "DEFAULT_MAILBOX_INTERVAL", 0.2)
    dag = load_dag(
        _source("callbacks_deferred.py", **{"s3://aws_default@bucket": f"file://{tmp_path}"}),
        "nasa_followers",
    )
    run = dag.test(logical_date=None)

    assert _states(run) == {"submit": "success", "land": "success"}
    sim = simulator_connection
    [submission] = sim.ledger.submissions()
    assert submission.request["callback_url"].startswith(url + "/nyne/v1/callback/")
    assert [a.delivered for a in sim.ledger.callback_attempts()] == [True]
    assert sim.ledger.poll_count() == 0  # neither the wait nor the transfer asked the API
    [written] = list(tmp_path.rglob("nasa.jsonl"))
    records = [json.loads(line) for line in written.read_text().splitlines()]
    assert [r["username"] for r in records] == [i["username"] for i in _items(sim, submission.request_id)]


def test_callback_asset_dags_name_one_asset_and_the_callback_reaches_it(
    simulator_connection: NyneSimulator,
    receiver: tuple[str, Any],  # noqa: F811
    load_dag: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _ = receiver
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_BASE_URL", url)
    source = _source("callbacks_asset.py")
    consumer = load_dag(source, "land_nasa_followers")
    [asset] = consumer.timetable.asset_condition.objects
    assert asset.uri == "nyne://interactions/twitter/nasa/followers"
    producer = load_dag(source, "ask_for_nasa_followers")

    run = producer.test(logical_date=None)

    assert _states(run) == {"submit": "success"}
    sim = simulator_connection
    [submission] = sim.ledger.submissions()
    assert submission.request["callback_url"].startswith(url + "/nyne/v1/callback/")
    sim.ledger.wait_for(lambda ledger: any(a.delivered for a in ledger.callback_attempts()), timeout=30)
    assert sim.ledger.poll_count() == 0
    events = _asset_events(asset.uri)
    assert [e["extra"]["request_id"] for e in events] == [submission.request_id]


# --- scripts ------------------------------------------------------------------------------------


def test_hook_test_connection_reports_the_credits(simulator_connection: NyneSimulator) -> None:
    module, printed = _run_script("hook_test_connection.py")

    assert module["ok"] is True
    assert "credits remaining" in module["message"]
    assert printed.startswith("True Connection to the Nyne API works")
    assert len(simulator_connection.ledger.usage_calls()) == 1


def test_client_sync_prints_the_people_found(
    simulator: NyneSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    _client_env(simulator, monkeypatch)
    module, printed = _run_script("client_sync.py")

    [submission] = simulator.ledger.submissions()
    assert submission.request["username"] == "nasa"
    assert submission.request["max_results"] == 200
    items = _items(simulator, submission.request_id)
    lines = printed.splitlines()
    assert lines[0] == f"{len(items)} people"
    assert [line.split()[0] for line in lines[1:]] == [item["username"] for item in items]
    assert module["status"].request_id == submission.request_id


def test_client_async_waits_for_the_lookup(simulator: NyneSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    _client_env(simulator, monkeypatch)
    _, printed = _run_script("client_async.py")

    [submission] = simulator.ledger.submissions()
    assert submission.request["platform"] == "instagram"
    assert submission.request["username"] == "natgeo"
    assert printed.strip() == f"completed {len(_items(simulator, submission.request_id))}"


def test_client_options_build_the_documented_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NYNE_API_KEY", "docs-key")
    monkeypatch.setenv("NYNE_API_SECRET", "docs-secret")
    module, _ = _run_script("client_options.py")

    assert module["patient"].retry.max_retries == 5
    assert module["patient"].retry.backoff_base == 2.0
    assert module["fail_fast"].retry.max_retries == 0
    budget = module["first"].budget
    assert budget is module["second"].budget
    # Declared before the clients with the default limits were built for the same key: the stricter wins.
    assert module["declared"] == module["limits"]
    assert budget.limits.per_minute == 60
    assert budget.limits.per_hour == 1000


def test_simulator_api_sample_runs_as_written() -> None:
    module, printed = _run_script("simulator_api.py")

    sim = module["sim"]
    assert printed.splitlines()[0] == sim.url
    assert module["request_id"] == sim.ledger.submissions()[0].request_id
    assert sim.ledger.status_counts(endpoint="submit") == {503: 1, 202: 1}


RUNS: dict[str, Callable[..., None]] = {
    "quickstart_dag.py": test_quickstart_dag_lands_the_followers,
    "followers_to_s3.py": test_followers_to_s3_dag_lands_parquet_in_s3,
    "use_followers.py": test_use_followers_is_scheduled_on_the_alias_the_transfer_records_under,
    "callbacks_deferred.py": test_callback_deferred_dag_resumes_from_the_callback_without_polling,
    "callbacks_asset.py": test_callback_asset_dags_name_one_asset_and_the_callback_reaches_it,
    "hook_test_connection.py": test_hook_test_connection_reports_the_credits,
    "client_sync.py": test_client_sync_prints_the_people_found,
    "client_async.py": test_client_async_waits_for_the_lookup,
    "client_options.py": test_client_options_build_the_documented_clients,
    "simulator_api.py": test_simulator_api_sample_runs_as_written,
}


def test_every_snippet_file_is_run_by_a_test_here() -> None:
    assert {p.name for p in SNIPPETS.glob("*.py")} == set(RUNS)
