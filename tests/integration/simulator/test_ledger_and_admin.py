"""The ledger (Python and HTTP) and the admin endpoints."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.integration.simulator.helpers import Api

pytestmark = pytest.mark.integration


def test_ledger_python_and_http_agree(api: Api, sim: NyneSimulator) -> None:
    with_results = api.submit_ok(username="jack", max_results=20)
    empty = api.submit_ok(username="empty_account")
    api.wait(with_results)
    api.wait(empty)
    api.poll(with_results)
    api.usage()
    api.submit(username="jack")  # no type: rejected

    snapshot = api.client.get("/_simulator/ledger").json()["data"]

    submissions = sim.ledger.submissions(sim.api_key)
    assert [s.request_id for s in submissions] == [with_results, empty]
    assert submissions[0].request["max_results"] == 20
    assert [s["request_id"] for s in snapshot["submissions"]] == [with_results, empty]
    assert snapshot["submissions"][0]["request"] == submissions[0].request
    assert sim.ledger.credits_charged() == snapshot["credits_charged"][sim.api_key] == 3
    assert {(c.request_id, c.credits) for c in sim.ledger.charges()} == {(with_results, 3), (empty, 0)}
    assert sim.ledger.poll_count(with_results) == snapshot["poll_counts"][with_results] >= 2
    assert len(sim.ledger.usage_calls()) == len(snapshot["usage_calls"]) == 1
    (rejection,) = sim.ledger.rejections()
    assert (rejection.endpoint, rejection.status, rejection.code) == ("submit", 400, "invalid_type")
    assert snapshot["rejections"][0]["code"] == "invalid_type"
    assert snapshot["accounts"][sim.api_key]["credits"] == 997
    assert sim.api_secret not in str(snapshot)


def test_ledger_summary_has_counts_only(api: Api, sim: NyneSimulator) -> None:
    api.wait(api.submit_ok(username="jack"))

    summary = api.client.get("/_simulator/ledger", params={"summary": "1"}).json()["data"]

    assert summary["totals"]["submissions"] == 1
    assert summary["totals"]["credits_charged"] == 3
    assert "submissions" not in summary
    assert sim.ledger.snapshot(summary=True)["totals"] == summary["totals"]


def test_ledger_is_consistent_under_concurrency(sim: NyneSimulator) -> None:
    def worker() -> None:
        caller = Api(sim)
        try:
            for _ in range(10):
                assert caller.usage().status_code == 200
                assert caller.submit(username="jack", type="followers").status_code == 202
        finally:
            caller.client.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(sim.ledger.usage_calls()) == 80
    assert len({s.request_id for s in sim.ledger.submissions()}) == 80
    assert sim.account().submissions == 80


def test_reset_over_http(api: Api, sim: NyneSimulator) -> None:
    request_id = api.submit_ok(username="jack")
    sim.faults.server_error(endpoint="usage")
    sim.add_account("temp-key", "temp-secret")

    reset = api.client.post("/_simulator/reset")

    assert reset.status_code == 200
    assert sim.ledger.submissions() == []
    assert sim.faults.active() == []
    assert api.poll(request_id).status_code == 404
    assert api.usage().status_code == 200
    with pytest.raises(KeyError):
        sim.account("temp-key")


def test_accounts_over_http(api: Api, sim: NyneSimulator) -> None:
    added = api.client.post(
        "/_simulator/accounts",
        json={
            "api_key": "http-key",
            "api_secret": "http-secret",
            "credits": 5,
            "permissions": ["interactions"],
        },
    )
    listed = api.client.get("/_simulator/accounts").json()["data"]["accounts"]
    as_new = api.client.post(
        "/person/interactions",
        json={"username": "jack", "type": "followers"},
        headers={"X-API-Key": "http-key", "X-API-Secret": "http-secret"},
    )

    assert added.status_code == 200
    assert added.json()["data"]["credits"] == 5
    assert {a["api_key"] for a in listed} == {sim.api_key, "http-key"}
    assert all("api_secret" not in a for a in listed)
    assert as_new.status_code == 202
    assert sim.ledger.submissions("http-key")[0].request_id == as_new.json()["data"]["request_id"]


def test_bad_account_over_http_is_400(api: Api) -> None:
    response = api.client.post("/_simulator/accounts", json={"api_key": "only-key"})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_admin_request"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        pytest.param({"permissions": "interactions"}, "permissions must be a list", id="permissions-string"),
        pytest.param({"credits": 2.5}, "credits must be an integer", id="fractional-credits"),
        pytest.param({"disabled": "no"}, "disabled must be true or false", id="text-flag"),
    ],
)
def test_bad_account_in_python_is_refused_like_over_http(
    api: Api, sim: NyneSimulator, fields: dict[str, Any], named: str
) -> None:
    over_http = api.client.post(
        "/_simulator/accounts", json={"api_key": "bad-key", "api_secret": "bad-secret", **fields}
    )
    with pytest.raises(TypeError, match=named):
        sim.add_account("bad-key", "bad-secret", **fields)

    assert over_http.status_code == 400
    assert named in over_http.json()["error"]["message"]
    with pytest.raises(KeyError):
        sim.account("bad-key")


def test_settings_over_http(api: Api, sim: NyneSimulator) -> None:
    changed = api.client.post("/_simulator/settings", json={"job_duration": 3.0, "rate_limit_per_minute": 0})
    unknown = api.client.post("/_simulator/settings", json={"warp_speed": 9})

    assert changed.status_code == 200
    assert changed.json()["data"]["job_duration"] == 3.0
    assert sim.settings.job_duration == 3.0
    assert sim.settings.rate_limit_per_minute is None
    assert unknown.status_code == 400
    assert api.client.get("/_simulator/settings").json()["data"]["job_duration"] == 3.0


def test_scale_and_spread_settings_over_http(api: Api, sim: NyneSimulator) -> None:
    changed = api.client.post(
        "/_simulator/settings",
        json={
            "rate_limit_time_scale": 0.01,
            "rate_limit_per_minute": 1,
            "job_duration_sigma": 0.4,
            "job_duration_seed": 9,
        },
    )
    accepted, refused = api.usage(), api.usage()

    data = changed.json()["data"]
    assert changed.status_code == 200
    assert (data["rate_limit_time_scale"], data["job_duration_sigma"], data["job_duration_seed"]) == (
        0.01,
        0.4,
        9,
    )
    assert (sim.settings.rate_limit_time_scale, sim.settings.job_duration_sigma) == (0.01, 0.4)
    assert (accepted.status_code, refused.status_code) == (200, 429)
    # A minute scaled by 0.01 is 0.6 s, announced to the millisecond.
    assert 0 < float(refused.headers["Retry-After"]) <= 0.601
    assert "." in refused.headers["Retry-After"]


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        pytest.param(
            {"rate_limit_time_scale": 0}, "rate_limit_time_scale must be a number > 0", id="zero-scale"
        ),
        pytest.param(
            {"job_duration_sigma": -1}, "job_duration_sigma must be a number >= 0", id="negative-sigma"
        ),
        pytest.param({"job_duration_seed": "nine"}, "job_duration_seed must be an integer", id="text-seed"),
    ],
)
def test_bad_scale_and_spread_settings_over_http_are_400(
    api: Api, sim: NyneSimulator, changes: dict[str, object], named: str
) -> None:
    response = api.client.post("/_simulator/settings", json={"job_duration": 1.0, **changes})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_admin_request"
    assert named in response.json()["error"]["message"]
    # Nothing of a refused change is applied, not even its valid part.
    assert (
        api.client.get("/_simulator/settings").json()["data"]["job_duration"]
        == sim.settings.job_duration
        != 1.0
    )


def test_health_and_unknown_admin_route(api: Api) -> None:
    assert api.client.get("/_simulator/health").json()["data"] == {"status": "ok"}
    assert api.client.get("/_simulator/nothing").status_code == 404


def test_admin_requests_are_not_in_the_ledger(api: Api, sim: NyneSimulator) -> None:
    api.client.get("/_simulator/ledger")
    api.client.get("/_simulator/health")

    assert sim.ledger.requests() == []
