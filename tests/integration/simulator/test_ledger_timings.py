"""What a benchmark reads from the ledger: answers by status, and each job's detection delay."""

from __future__ import annotations

import httpx
import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.fixtures.simulator import SimulatorFactory
from tests.integration.simulator.helpers import Api, Receiver

pytestmark = pytest.mark.integration


def test_every_answer_is_recorded_with_time_account_and_status(api: Api, sim: NyneSimulator) -> None:
    sim.configure(rate_limit_per_minute=2)
    answers = [api.usage() for _ in range(5)]

    records = sim.ledger.requests()
    snapshot = api.client.get("/_simulator/ledger").json()["data"]
    summary = api.client.get("/_simulator/ledger", params={"summary": "1"}).json()["data"]

    assert [a.status_code for a in answers] == [200, 200, 429, 429, 429]
    assert [(r.endpoint, r.api_key, r.status) for r in records] == [
        ("usage", sim.api_key, status) for status in (200, 200, 429, 429, 429)
    ]
    times = [r.time for r in records]
    assert times == sorted(times)
    assert sim.ledger.status_counts() == sim.ledger.status_counts("usage") == {200: 2, 429: 3}
    assert sim.ledger.status_counts("submit") == {}
    assert snapshot["status_counts"] == summary["status_counts"] == {"usage": {"200": 2, "429": 3}}
    assert [r["time"] for r in snapshot["requests"]] == times
    assert summary["totals"]["requests"] == 5
    assert summary["totals"]["rejections"] == 3


def test_detection_is_the_first_poll_that_reports_the_end(api: Api, sim: NyneSimulator) -> None:
    request_id = api.submit_ok(username="hold_me")
    while_held = api.poll(request_id).json()["data"]["status"]
    (held,) = sim.ledger.jobs()
    sim.release(request_id)
    sim.ledger.wait_for(lambda ledger: ledger.jobs()[0].completed_at is not None)

    first_done = api.poll(request_id).json()["data"]["status"]
    later = api.poll(request_id).json()["data"]["status"]

    (job,) = sim.ledger.jobs()
    polls = sim.ledger.polls(request_id)
    assert while_held in ("queued", "processing")
    assert (first_done, later) == ("completed", "completed")
    assert (held.completed_at, held.detected_at, held.detection_delay) == (None, None, None)
    assert (job.request_id, job.api_key, job.status, job.detected_by) == (
        request_id,
        sim.api_key,
        "completed",
        "poll",
    )
    assert job.detected_at == polls[1].time
    assert job.completed_at is not None
    assert job.submitted_at <= job.completed_at <= job.detected_at
    assert job.detection_delay == pytest.approx(job.detected_at - job.completed_at)


def test_a_failed_job_is_detected_too(api: Api, sim: NyneSimulator) -> None:
    request_id = api.submit_ok(username="fail_private")

    assert api.wait(request_id)["status"] == "failed"
    (job,) = sim.ledger.jobs()
    assert (job.status, job.detected_by) == ("failed", "poll")
    assert job.detected_at == sim.ledger.polls(request_id)[-1].time


def test_a_poll_answer_the_client_never_got_detects_nothing(api: Api, sim: NyneSimulator) -> None:
    request_id = api.submit_ok(username="jack")
    sim.ledger.wait_for(lambda ledger: ledger.jobs()[0].completed_at is not None)
    sim.faults.drop_connection(endpoint="status", after_processing=True)

    with pytest.raises(httpx.TransportError):
        api.poll(request_id)
    (lost,) = sim.ledger.jobs()
    received = api.poll(request_id)

    (job,) = sim.ledger.jobs()
    assert received.json()["data"]["status"] == "completed"
    assert sim.ledger.poll_count(request_id) == 2
    assert lost.detected_at is None
    assert job.detected_at == sim.ledger.polls(request_id)[-1].time


def test_detection_by_the_first_acknowledged_callback(
    api: Api, sim: NyneSimulator, receiver: Receiver
) -> None:
    sim.configure(callback_time_scale=0.01)
    receiver.statuses = [500, 200]

    request_id = api.submit_ok(username="jack", callback_url=receiver.url)
    sim.ledger.wait_for(lambda ledger: len(ledger.callback_attempts(request_id)) == 2)
    api.poll(request_id)

    first, second = sim.ledger.callback_attempts(request_id)
    (job,) = sim.ledger.jobs()
    listed = api.client.get("/_simulator/ledger").json()["data"]["jobs"]
    assert (first.delivered, second.delivered) == (False, True)
    assert (job.detected_by, job.detected_at) == ("callback", second.finished_at)
    assert job.completed_at is not None
    assert 0 < job.completed_at <= first.started_at
    assert listed == [
        {
            "request_id": request_id,
            "api_key": sim.api_key,
            "submitted_at": job.submitted_at,
            "completed_at": job.completed_at,
            "status": "completed",
            "detected_at": second.finished_at,
            "detected_by": "callback",
            "detection_delay": job.detection_delay,
        }
    ]
    summary = api.client.get("/_simulator/ledger", params={"summary": "1"}).json()["data"]
    assert (summary["totals"]["jobs_finished"], summary["totals"]["jobs_detected"]) == (1, 1)


def test_long_runs_keep_the_newest_timings_and_every_count(simulator_factory: SimulatorFactory) -> None:
    sim = simulator_factory(ledger_limit=3, job_duration=0.0)
    caller = Api(sim)
    try:
        ids = [caller.submit_ok(username="jack") for _ in range(5)]
        for request_id in ids:
            caller.poll(request_id)
    finally:
        caller.client.close()

    assert [job.request_id for job in sim.ledger.jobs()] == ids[-3:]
    assert len(sim.ledger.requests()) == 3
    assert sim.ledger.status_counts() == {202: 5, 200: 5}
    assert sim.ledger.snapshot(summary=True)["totals"]["requests"] == 10
