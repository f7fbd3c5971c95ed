"""Fault injection through the Python API and over HTTP."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.integration.simulator.helpers import Api, error_code

pytestmark = pytest.mark.integration


def _hit(api: Api, endpoint: str) -> httpx.Response:
    if endpoint == "submit":
        return api.submit(username="jack", type="followers")
    if endpoint == "status":
        return api.client.get("/person/interactions", params={"request_id": "req_unknown"})
    return api.usage()


NORMAL = {"submit": 202, "status": 404, "usage": 200}


@pytest.mark.parametrize("endpoint", ["submit", "status", "usage"])
@pytest.mark.parametrize(
    ("inject", "status", "code", "retry_after"),
    [
        pytest.param(
            lambda f, e: f.rate_limited(endpoint=e, times=2, retry_after=7),
            429,
            "rate_limit_exceeded",
            "7",
            id="429",
        ),
        pytest.param(lambda f, e: f.server_error(endpoint=e, times=2), 500, "internal_error", None, id="500"),
        pytest.param(
            lambda f, e: f.unavailable(endpoint=e, times=2), 503, "service_unavailable", None, id="503"
        ),
        pytest.param(
            lambda f, e: f.error(418, "teapot", "short and stout", endpoint=e, times=2),
            418,
            "teapot",
            None,
            id="custom",
        ),
    ],
)
def test_error_fault_answers_next_n(
    api: Api,
    sim: NyneSimulator,
    endpoint: str,
    inject: object,
    status: int,
    code: str,
    retry_after: str | None,
) -> None:
    assert callable(inject)
    inject(sim.faults, endpoint)

    faulted = [_hit(api, endpoint) for _ in range(2)]
    after = _hit(api, endpoint)

    for response in faulted:
        assert response.status_code == status
        assert error_code(response) == code
        assert response.headers.get("Retry-After") == retry_after
    assert after.status_code == NORMAL[endpoint]
    assert sim.faults.active() == []
    assert [r.fault for r in sim.ledger.requests(endpoint)] == ["error", "error", None]


def test_fault_targets_only_its_endpoint(api: Api, sim: NyneSimulator) -> None:
    sim.faults.unavailable(endpoint="submit")

    assert api.usage().status_code == 200
    assert api.submit(username="jack", type="followers").status_code == 503


def test_wildcard_fault_until_cleared(api: Api, sim: NyneSimulator) -> None:
    sim.faults.server_error(endpoint="*", times=None)

    answers = [_hit(api, endpoint).status_code for endpoint in ("usage", "submit", "status", "usage")]
    sim.faults.clear()

    assert answers == [500, 500, 500, 500]
    assert api.usage().status_code == 200


def test_remove_one_fault(api: Api, sim: NyneSimulator) -> None:
    fault_id = sim.faults.unavailable(endpoint="usage", times=None)
    sim.faults.server_error(endpoint="submit")

    assert sim.faults.remove(fault_id) is True
    assert [f["kind"] for f in sim.faults.active()] == ["error"]
    assert api.usage().status_code == 200


def test_delay_fault(api: Api, sim: NyneSimulator) -> None:
    sim.faults.delay(1.0, endpoint="usage")

    started = time.monotonic()
    delayed = api.usage()
    delayed_for = time.monotonic() - started
    started = time.monotonic()
    api.usage()
    normal_for = time.monotonic() - started

    assert delayed.status_code == 200
    assert delayed_for >= 1.0
    # The fault was used up: the next call is not held (the margin allows a busy machine).
    assert sim.faults.active() == []
    assert normal_for < 0.8


def test_delayed_submit_is_processed_after_client_timeout(api: Api, sim: NyneSimulator) -> None:
    sim.faults.delay(0.3, endpoint="submit")

    with pytest.raises(httpx.ReadTimeout):
        api.client.post("/person/interactions", json={"username": "jack", "type": "followers"}, timeout=0.1)

    sim.ledger.wait_for(lambda ledger: len(ledger.submissions()) == 1, timeout=10)


@pytest.mark.parametrize("endpoint", ["submit", "status", "usage"])
def test_dropped_connection_is_a_transport_error(api: Api, sim: NyneSimulator, endpoint: str) -> None:
    sim.faults.drop_connection(endpoint=endpoint)

    with pytest.raises(httpx.TransportError) as caught:
        _hit(api, endpoint)

    assert not isinstance(caught.value, httpx.TimeoutException)
    assert _hit(api, endpoint).status_code == NORMAL[endpoint]
    dropped = sim.ledger.requests(endpoint)[0]
    assert (dropped.status, dropped.fault) == (None, "drop")
    # Only the second, answered request may have created a job.
    assert len(sim.ledger.submissions()) == (1 if endpoint == "submit" else 0)


def test_dropped_connection_after_processing_created_the_job(api: Api, sim: NyneSimulator) -> None:
    sim.faults.drop_connection(endpoint="submit", after_processing=True)

    with pytest.raises(httpx.RemoteProtocolError):
        api.submit(username="jack", type="followers")

    (submission,) = sim.ledger.submissions()
    assert sim.ledger.requests("submit")[0].fault == "drop_after_processing"
    assert sim.job(submission.request_id) is not None


@pytest.mark.parametrize("after_processing", [False, True], ids=["before-processing", "after-processing"])
def test_malformed_json(api: Api, sim: NyneSimulator, after_processing: bool) -> None:
    sim.faults.malformed_json(endpoint="submit", after_processing=after_processing)

    response = api.submit(username="jack", type="followers")

    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()
    assert len(sim.ledger.submissions()) == (1 if after_processing else 0)


def test_job_faults_apply_to_next_jobs_only(api: Api, sim: NyneSimulator) -> None:
    sim.faults.fail_next_job("Rate limited by platform", times=2)

    statuses = [api.wait(api.submit_ok(username="jack"))["status"] for _ in range(3)]

    assert statuses == ["failed", "failed", "completed"]


def test_result_shape_for_all_jobs(api: Api, sim: NyneSimulator) -> None:
    sim.faults.result_shape(["results_list"], times=None)

    results = [api.wait(api.submit_ok(username=name))["result"] for name in ("jack", "jill")]

    assert all("results" in r and "interactions" not in r for r in results)


def test_job_duration_fault(api: Api, sim: NyneSimulator) -> None:
    sim.faults.job_duration(5.0)
    long_job = api.submit_ok(username="jack")
    short_job = api.submit_ok(username="jack")

    api.wait(short_job)

    assert api.poll(long_job).json()["data"]["status"] in ("queued", "processing")


def test_faults_over_http(api: Api, sim: NyneSimulator) -> None:
    admin = api.client
    added = admin.post(
        "/_simulator/faults",
        json=[
            {"kind": "rate_limit", "endpoint": "submit", "retry_after": 5},
            {"kind": "fail_job", "reason": "Profile is private"},
            {"kind": "delay", "endpoint": "usage", "seconds": 0.01, "times": None},
        ],
    )
    listed = admin.get("/_simulator/faults").json()["data"]["faults"]

    limited = api.submit(username="jack", type="followers")
    failed = api.wait(api.submit_ok(username="jack"))
    cleared = admin.delete("/_simulator/faults")

    assert added.status_code == 200
    assert [f["kind"] for f in listed] == ["error", "fail_job", "delay"]
    assert listed[2]["times"] is None
    assert (limited.status_code, limited.headers["Retry-After"]) == (429, "5")
    assert failed["error"] == "Profile is private"
    assert cleared.json()["data"]["faults"] == []
    assert sim.faults.active() == []


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param({"kind": "meteor"}, id="unknown-kind"),
        pytest.param({"kind": "error", "endpoint": "elsewhere"}, id="unknown-endpoint"),
        pytest.param({"kind": "delay"}, id="delay-without-seconds"),
        pytest.param({"kind": "error", "status": 42}, id="bad-status"),
        pytest.param({"kind": "error", "times": 0}, id="zero-times"),
        pytest.param({"kind": "drop", "colour": "red"}, id="unexpected-field"),
        pytest.param({"kind": "result_shape", "shape": "round"}, id="unknown-shape"),
    ],
)
def test_bad_fault_over_http_is_400(api: Api, sim: NyneSimulator, spec: dict[str, object]) -> None:
    response = api.client.post("/_simulator/faults", json=spec)

    assert response.status_code == 400
    assert error_code(response) == "invalid_admin_request"
    assert sim.faults.active() == []


def test_a_bad_fault_in_a_list_adds_none_of_them(api: Api, sim: NyneSimulator) -> None:
    response = api.client.post(
        "/_simulator/faults",
        json=[{"kind": "server_error", "endpoint": "usage"}, {"kind": "delay", "seconds": -1}],
    )

    assert response.status_code == 400
    assert "seconds must be a number >= 0" in response.json()["error"]["message"]
    assert sim.faults.active() == []
    assert api.usage().status_code == 200
