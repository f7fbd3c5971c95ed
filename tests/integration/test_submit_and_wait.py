"""Submit and wait, end to end: operators in DAGs run by ``dag.test()`` against the simulator over real sockets.

In ``dag.test()`` a deferred task's trigger really runs (inline, in its own event loop), so
the deferrable paths here go through :class:`NyneInteractionsTrigger` and the shared async
client; the non-deferrable paths poll from the task itself.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.integration._dagrun import (
    DAG_HEADER,
    assert_failure,
    failures,
    set_connection,
    task_instances,
    xcom,
)

pytestmark = pytest.mark.integration

__all__ = ["failures"]  # the fixture, imported for pytest


def reschedules(run: Any, task_id: str) -> int:
    """How many times a task of ``run`` gave its slot back (reschedule mode)."""
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session

    with create_session() as session:
        [ti] = [ti for ti in run.get_task_instances(session=session) if ti.task_id == task_id]
        return session.query(TaskReschedule).filter(TaskReschedule.ti_id == ti.id).count()


def completed_summary(value: Any, request_id: str | None = None) -> None:
    assert isinstance(value, dict)
    assert set(value) == {"request_id", "status", "total_count"}
    assert value["status"] == "completed"
    assert isinstance(value["total_count"], int)
    assert value["total_count"] > 0
    if request_id is not None:
        assert value["request_id"] == request_id


HAPPY_PATHS = (
    DAG_HEADER
    + """
with DAG("nyne_happy_paths", schedule=None, start_date=START, catchup=False) as dag:
    # Submit, then a deferrable sensor (the default).
    submit = NyneSubmitInteractionsOperator(
        task_id="submit", twitter_url="https://x.com/{{ params.who }}", interaction_type="followers",
        params={"who": "nasa"},
    )
    sense = NyneInteractionsSensor(
        task_id="sense", request_id="{{ ti.xcom_pull(task_ids='submit') }}", **FAST
    )
    submit >> sense

    # Submit and wait in one task, in the triggerer.
    NyneSubmitInteractionsOperator(
        task_id="submit_and_wait", username="esa", interaction_type="following", max_results="50",
        wait_for_completion=True, **FAST,
    )

    # Submit and wait in one task, polling in the worker (no triggerer).
    NyneSubmitInteractionsOperator(
        task_id="submit_and_wait_sync", social_media_url="https://x.com/jaxa/status/1234567890123",
        interaction_type="replies", wait_for_completion=True, deferrable=False, **FAST,
    )

    # Sensors in poke and reschedule modes, without a triggerer.
    submit_poke = NyneSubmitInteractionsOperator(
        task_id="submit_poke", username="instagram_user", platform="instagram", interaction_type="followers",
    )
    poke = NyneInteractionsSensor(
        task_id="poke", request_id="{{ ti.xcom_pull(task_ids='submit_poke') }}", deferrable=False,
        mode="poke", **FAST,
    )
    submit_poke >> poke
"""
)


def test_submit_and_wait_every_way(simulator_connection: NyneSimulator, load_dag: Any, failures: Any) -> None:
    sim = simulator_connection
    run = load_dag(HAPPY_PATHS, "nyne_happy_paths").test()

    assert failures() == {}
    assert {task: state for task, (state, _) in task_instances(run).items()} == {
        "submit": "success",
        "sense": "success",
        "submit_and_wait": "success",
        "submit_and_wait_sync": "success",
        "submit_poke": "success",
        "poke": "success",
    }
    # The submit operator returns the id; the sensor returns a small summary, never the result.
    rid = xcom(run, "submit")
    assert isinstance(rid, str)
    assert rid.startswith("req_")
    assert xcom(run, "submit", "request_id") == rid
    completed_summary(xcom(run, "sense"), rid)
    # Waiting in the operator returns the summary, and the id is still pushed under `request_id`.
    for task_id in ("submit_and_wait", "submit_and_wait_sync"):
        completed_summary(xcom(run, task_id), xcom(run, task_id, "request_id"))
    completed_summary(xcom(run, "poke"), xcom(run, "submit_poke"))

    # One submission per submitting task, each charged once; the fields arrived as sent.
    submissions = sim.ledger.submissions()
    assert len(submissions) == 4
    assert sim.ledger.credits_charged() == 4 * 3
    by_id = {s.request_id: s for s in submissions}
    following = by_id[xcom(run, "submit_and_wait", "request_id")]
    assert (following.request["type"], following.request["max_results"]) == ("following", 50)

    # Nothing secret in what the run stored.
    stored = json.dumps([xcom(run, t) for t in task_instances(run)])
    assert sim.api_key not in stored
    assert sim.api_secret not in stored


RESCHEDULE = (
    DAG_HEADER
    + """
with DAG("nyne_reschedule", schedule=None, start_date=START, catchup=False) as dag:
    # A slow* job, so that the sensor really gives its slot back before the job completes.
    submit = NyneSubmitInteractionsOperator(task_id="submit", username="slow_account", interaction_type="followers")
    sense = NyneInteractionsSensor(
        task_id="sense", request_id="{{ ti.xcom_pull(task_ids='submit') }}", deferrable=False,
        mode="reschedule", poll_interval=0.5, max_poll_interval=1, **CALLBACKS,
    )
    submit >> sense
"""
)


def test_reschedule_mode_sensor(simulator_connection: NyneSimulator, load_dag: Any, failures: Any) -> None:
    simulator_connection.configure(slow_job_duration=6.0)
    run = load_dag(RESCHEDULE, "nyne_reschedule").test()
    assert failures() == {}
    assert task_instances(run)["sense"] == ("success", 1)
    completed_summary(xcom(run, "sense"), xcom(run, "submit"))
    assert reschedules(run, "sense") >= 1


TRANSIENT = (
    DAG_HEADER
    + """
with DAG("nyne_transient", schedule=None, start_date=START, catchup=False) as dag:
    NyneInteractionsSensor(
        task_id="sense", request_id="REQUEST_ID", deferrable=DEFERRABLE, max_transient_errors=8,
        **FAST, **CALLBACKS,
    )
"""
)


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "poke"])
@pytest.mark.parametrize("fault", ["503-burst", "429-storm", "500-and-dropped-connections"])
def test_waiting_survives_transient_faults(
    simulator_connection: NyneSimulator, load_dag: Any, failures: Any, fault: str, deferrable: bool
) -> None:
    sim = simulator_connection
    sim.configure(job_duration=1.0)
    from airflow_provider_nyne.hooks.nyne import NyneHook

    rid = NyneHook().submit_interactions({"username": "nasa", "type": "followers"})
    if fault == "503-burst":
        sim.faults.unavailable(endpoint="status", times=6)
    elif fault == "429-storm":
        sim.faults.rate_limited(endpoint="status", times=6, retry_after=0.1)
    else:
        sim.faults.server_error(endpoint="status", times=3)
        sim.faults.drop_connection(endpoint="status", times=3)
    dag_id = f"nyne_transient_{fault.replace('-', '_')}_{deferrable}"
    source = (
        TRANSIENT.replace('"nyne_transient"', f'"{dag_id}"')
        .replace("REQUEST_ID", rid)
        .replace("DEFERRABLE", str(deferrable))
    )
    run = load_dag(source, dag_id).test()

    assert failures() == {}
    assert task_instances(run)["sense"] == ("success", 1)
    completed_summary(xcom(run, "sense"), rid)
    # All six faulty answers were really served to the sensor (and survived), then it completed.
    faulted = [r for r in sim.ledger.requests(endpoint="status") if r.fault is not None]
    assert len(faulted) == 6
    assert sim.faults.active() == []
    assert len(sim.ledger.submissions()) == 1


FAILURES = (
    DAG_HEADER
    + """
with DAG("nyne_failures", schedule=None, start_date=START, catchup=False,
         default_args={"retries": 1, "retry_delay": datetime.timedelta(0)}) as dag:
    NyneSubmitInteractionsOperator(
        task_id="job_fails", username="fail_private", interaction_type="followers",
        wait_for_completion=True, retries=0, **FAST, **CALLBACKS,
    )
    NyneSubmitInteractionsOperator(
        task_id="bad_secret", username="nasa", interaction_type="followers", nyne_conn_id="nyne_bad_secret",
        **CALLBACKS,
    )
    NyneSubmitInteractionsOperator(
        task_id="no_credits", username="nasa", interaction_type="followers", nyne_conn_id="nyne_broke",
        **CALLBACKS,
    )
    NyneSubmitInteractionsOperator(
        task_id="no_subscription", username="nasa", interaction_type="followers",
        nyne_conn_id="nyne_unsubscribed", **CALLBACKS,
    )
    NyneSubmitInteractionsOperator(
        task_id="ip_not_allowed", username="nasa", interaction_type="followers",
        nyne_conn_id="nyne_ip_locked", **CALLBACKS,
    )
    NyneInteractionsSensor(task_id="expired", request_id="req_doesnotexist000", **FAST, **CALLBACKS)
    NyneInteractionsSensor(
        task_id="expired_poke", request_id="req_doesnotexist000", deferrable=False, **FAST, **CALLBACKS,
    )
    NyneInteractionsSensor(
        task_id="sensor_job_fails", request_id="{{ params.failed_rid }}", **FAST, **CALLBACKS,
    )
    NyneInteractionsSensor(
        task_id="soft_fail", request_id="{{ params.failed_rid }}", soft_fail=True, **FAST, **CALLBACKS,
    )
"""
)


def test_each_api_failure_fails_the_task_with_its_message(
    simulator_connection: NyneSimulator, load_dag: Any, failures: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = simulator_connection
    good = json.loads(sim.connection_json())
    set_connection(monkeypatch, "nyne_bad_secret", json.dumps({**good, "password": "not-the-secret"}))
    sim.add_account("key-broke", "secret-broke", credits=0)
    set_connection(monkeypatch, "nyne_broke", sim.connection_json("key-broke"))
    sim.add_account("key-unsub", "secret-unsub", subscription_active=False)
    set_connection(monkeypatch, "nyne_unsubscribed", sim.connection_json("key-unsub"))
    sim.add_account("key-iplock", "secret-iplock", allowed_ips=["203.0.113.7"])
    set_connection(monkeypatch, "nyne_ip_locked", sim.connection_json("key-iplock"))
    from airflow_provider_nyne.hooks.nyne import NyneHook

    sim.faults.fail_next_job("Profile is private")
    failed_rid = NyneHook().submit_interactions({"username": "nasa", "type": "followers"})
    sim.ledger.wait_for(lambda ledger: sim.job(failed_rid)["status"] == "failed", timeout=10)

    dag = load_dag(FAILURES.replace("{{ params.failed_rid }}", failed_rid), "nyne_failures")
    run = dag.test()
    states = task_instances(run)
    seen = failures()

    def only_failure(task_id: str) -> dict[str, Any]:
        records = seen[task_id]
        assert len(records) == 1, records
        return records[0]

    # A failed job: the API's reason, and the task failed (it had no retries).
    assert states["job_fails"] == ("failed", 1)
    assert_failure(only_failure("job_fails"), "failed: Profile is private", type_name="AirflowException")

    # Errors a retry cannot fix fail at once: retries=1, yet one try only (AirflowFailException).
    expected = {
        "bad_secret": ["HTTP 401", "API secret", "password", "'nyne_bad_secret'"],
        "no_credits": ["HTTP 402", "out of credits"],
        "no_subscription": ["HTTP 403", "subscription_required", "subscription"],
        "ip_not_allowed": ["HTTP 403", "ip_not_allowed", "allow-list", "workers and triggerer"],
        "expired": ["HTTP 404", "req_doesnotexist000", "expired"],
        "expired_poke": ["HTTP 404", "req_doesnotexist000", "expired"],
        "sensor_job_fails": ["failed: Profile is private"],
    }
    for task_id, fragments in expected.items():
        assert states[task_id] == ("failed", 1), (task_id, states[task_id])
        assert_failure(only_failure(task_id), *fragments, type_name="AirflowFailException")

    # soft_fail: the same failed job skips the sensor instead.
    assert states["soft_fail"][0] == "skipped"
    assert "soft_fail" not in seen

    # No secret in any message, nothing submitted by the rejected accounts.
    every_message = json.dumps(seen)
    for secret in (sim.api_secret, "secret-broke", "secret-unsub", "secret-iplock", "not-the-secret"):
        assert secret not in every_message
    assert len(sim.ledger.submissions()) == 2  # the pre-made failed job and job_fails


LOCAL_CHECKS = (
    DAG_HEADER
    + """
with DAG("nyne_local_checks", schedule=None, start_date=START, catchup=False,
         default_args={"retries": 1, "retry_delay": datetime.timedelta(0)}) as dag:
    NyneSubmitInteractionsOperator(
        task_id="unknown_connection", username="nasa", interaction_type="followers",
        nyne_conn_id="nyne_nowhere", **CALLBACKS,
    )
    NyneSubmitInteractionsOperator(
        task_id="replies_without_tweet", username="nasa", interaction_type="replies", **CALLBACKS,
    )
    NyneSubmitInteractionsOperator(
        task_id="instagram_replies", social_media_url="https://www.instagram.com/natgeo/",
        interaction_type="replies", **CALLBACKS,
    )
    NyneSubmitInteractionsOperator(
        task_id="bad_callback", username="nasa", interaction_type="followers",
        callback_url="ftp://example.com/hook", **CALLBACKS,
    )
    NyneInteractionsSensor(task_id="empty_request_id", request_id="{{ ti.xcom_pull(task_ids='nothing') }}",
                           **FAST, **CALLBACKS)
"""
)


def test_bad_input_fails_before_any_request(
    simulator_connection: NyneSimulator, load_dag: Any, failures: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_NYNE_NOWHERE", raising=False)
    run = load_dag(LOCAL_CHECKS, "nyne_local_checks").test()
    seen = failures()
    expected = {
        "unknown_connection": "'nyne_nowhere' does not exist",
        "replies_without_tweet": "tweet_id",
        "instagram_replies": "type",
        "bad_callback": "callback_url",
        "empty_request_id": "request_id is empty",
    }
    states = task_instances(run)
    for task_id, fragment in expected.items():
        assert states[task_id] == ("failed", 1), task_id
        [record] = seen[task_id]
        assert_failure(record, fragment, type_name="AirflowFailException")
    # Nothing reached the API.
    assert simulator_connection.ledger.requests() == []
