"""Callback delivery: body, retries on the scaled schedule, giving up."""

from __future__ import annotations

import socket
import time

import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.integration.simulator.helpers import Api, Receiver

pytestmark = pytest.mark.integration


def test_callback_retries_on_scaled_schedule(api: Api, sim: NyneSimulator, receiver: Receiver) -> None:
    sim.configure(callback_time_scale=0.1, job_duration=0.2)
    receiver.statuses = [500, 500, 200]
    submitted = time.monotonic()

    request_id = api.submit_ok(username="jack", callback_url=receiver.url)
    first, second, third = receiver.wait(3)

    # Nobody polled: completion alone triggered delivery, at the job's completion time.
    # Lower bounds check the schedule; upper bounds only rule out an unscaled one
    # (1 s, 5 s) and leave room for a loaded machine.
    assert 0.15 <= first.at - submitted <= 2.0
    # Retries wait 1 s then 5 s, scaled by 0.1.
    assert 0.09 <= second.at - first.at <= 0.9
    assert 0.45 <= third.at - second.at <= 2.5
    assert first.body == second.body == third.body
    assert first.headers["X-Nyne-Request-Id"] == request_id
    assert [d.headers["X-Nyne-Delivery-Attempt"] for d in (first, second, third)] == ["1", "2", "3"]
    body = third.body
    assert body["success"] is True
    assert body["data"]["status"] == "completed"
    assert body["data"]["completed"] is True
    assert body["data"]["result"]["total_count"] > 0
    assert body["data"] == api.poll(request_id).json()["data"]
    # The receiver sees a delivery before the simulator has read its answer and
    # recorded the attempt, so wait for the ledger to catch up.
    sim.ledger.wait_for(lambda ledger: len(ledger.callback_attempts(request_id)) == 3, timeout=10)
    attempts = sim.ledger.callback_attempts(request_id)
    assert [(a.attempt, a.status_code, a.delivered) for a in attempts] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]
    assert all(a.url == receiver.url for a in attempts)
    time.sleep(0.2)
    assert len(receiver.deliveries) == 3


def test_failed_job_callback(api: Api, sim: NyneSimulator, receiver: Receiver) -> None:
    request_id = api.submit_ok(username="fail_user", callback_url=receiver.url)

    (delivery,) = receiver.wait(1)

    assert delivery.body["data"]["request_id"] == request_id
    assert delivery.body["data"]["status"] == "failed"
    assert delivery.body["data"]["error"] == "Profile is private"


def test_callback_gives_up_after_five_retries(api: Api, sim: NyneSimulator, receiver: Receiver) -> None:
    sim.configure(callback_time_scale=0.001)
    receiver.statuses = [503]

    request_id = api.submit_ok(username="jack", callback_url=receiver.url)
    receiver.wait(6)
    sim.ledger.wait_for(lambda ledger: len(ledger.callback_attempts(request_id)) == 6, timeout=10)

    time.sleep(0.1)
    attempts = sim.ledger.callback_attempts(request_id)
    assert [a.attempt for a in attempts] == [1, 2, 3, 4, 5, 6]
    assert not any(a.delivered for a in attempts)
    assert len(receiver.deliveries) == 6


def test_unreachable_callback_records_errors(api: Api, sim: NyneSimulator) -> None:
    sim.configure(callback_time_scale=0.001)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    request_id = api.submit_ok(username="jack", callback_url=f"http://127.0.0.1:{closed_port}/hook")

    sim.ledger.wait_for(lambda ledger: len(ledger.callback_attempts(request_id)) == 6, timeout=10)
    attempts = sim.ledger.callback_attempts(request_id)
    assert all(a.status_code is None and a.error and "Connect" in a.error for a in attempts)
    assert api.poll(request_id).json()["data"]["status"] == "completed"


def test_reset_stops_pending_deliveries(api: Api, sim: NyneSimulator, receiver: Receiver) -> None:
    sim.configure(callback_time_scale=0.05)
    receiver.statuses = [500]
    api.submit_ok(username="jack", callback_url=receiver.url)
    receiver.wait(1)

    sim.reset()
    time.sleep(0.4)  # the second attempt was due 0.05 s after the first

    assert len(receiver.deliveries) == 1
    assert sim.ledger.callback_attempts() == []
