"""Authentication (401/403) and credits (402) on every endpoint."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.integration.simulator.helpers import Api, error_code

pytestmark = pytest.mark.integration

BODY = {"username": "jack", "type": "followers"}


def _call(sim: NyneSimulator, endpoint: str, headers: dict[str, str]) -> httpx.Response:
    with httpx.Client(base_url=sim.url, headers=headers, trust_env=False, verify=False, timeout=5) as client:
        if endpoint == "submit":
            return client.post("/person/interactions", json=BODY)
        if endpoint == "status":
            return client.get("/person/interactions", params={"request_id": "req_unknown"})
        return client.get("/usage")


@pytest.mark.parametrize("endpoint", ["submit", "status", "usage"])
@pytest.mark.parametrize(
    ("headers", "code"),
    [
        pytest.param({}, "missing_api_key", id="no-headers"),
        pytest.param({"X-API-Secret": "{secret}"}, "missing_api_key", id="no-key"),
        pytest.param({"X-API-Key": "{key}"}, "missing_api_secret", id="no-secret"),
        pytest.param({"X-API-Key": "nope", "X-API-Secret": "{secret}"}, "invalid_api_key", id="unknown-key"),
        pytest.param(
            {"X-API-Key": "{key}", "X-API-Secret": "wrong"}, "invalid_api_secret", id="wrong-secret"
        ),
        pytest.param(
            {"Authorization": "Bearer {key}"},
            "missing_api_key",
            id="bearer-token-is-not-enough",
        ),
    ],
)
def test_401_names_the_wrong_credential(
    sim: NyneSimulator, endpoint: str, headers: dict[str, str], code: str
) -> None:
    filled = {k: v.format(key=sim.api_key, secret=sim.api_secret) for k, v in headers.items()}

    response = _call(sim, endpoint, filled)

    assert response.status_code == 401
    assert error_code(response) == code
    assert sim.ledger.submissions() == []


@pytest.mark.parametrize(
    ("flags", "code", "endpoints"),
    [
        pytest.param(
            {"subscription_active": False},
            "subscription_required",
            ("submit", "status"),
            id="no-subscription",
        ),
        pytest.param({"disabled": True}, "api_key_disabled", ("submit", "status", "usage"), id="disabled"),
        pytest.param(
            {"permissions": ["usage"]}, "permission_denied", ("submit", "status"), id="no-interactions-perm"
        ),
        pytest.param({"permissions": ["interactions"]}, "permission_denied", ("usage",), id="no-usage-perm"),
        pytest.param(
            {"allowed_ips": ["10.1.2.3"]}, "ip_not_allowed", ("submit", "status", "usage"), id="ip-locked"
        ),
    ],
)
def test_403_account_restrictions(
    sim: NyneSimulator, flags: dict[str, Any], code: str, endpoints: tuple[str, ...]
) -> None:
    sim.add_account("restricted-key", "restricted-secret", **flags)
    headers = {"X-API-Key": "restricted-key", "X-API-Secret": "restricted-secret"}

    for endpoint in ("submit", "status", "usage"):
        response = _call(sim, endpoint, headers)
        if endpoint in endpoints:
            assert response.status_code == 403, endpoint
            assert error_code(response) == code
        else:
            assert response.status_code in (200, 202, 404), endpoint
    submitted = 0 if "submit" in endpoints else 1
    assert len(sim.ledger.submissions("restricted-key")) == submitted


def test_ip_allow_list_admits_loopback(sim: NyneSimulator) -> None:
    sim.add_account("locked-key", "locked-secret", allowed_ips=["127.0.0.1"])

    response = _call(sim, "usage", {"X-API-Key": "locked-key", "X-API-Secret": "locked-secret"})

    assert response.status_code == 200


def test_no_credits_answers_402_on_submit_only(api: Api, sim: NyneSimulator) -> None:
    request_id = api.submit_ok(username="jack")
    sim.set_credits(0)

    refused = api.submit(**BODY)

    assert refused.status_code == 402
    assert error_code(refused) == "insufficient_credits"
    assert api.poll(request_id).status_code == 200
    assert api.usage().status_code == 200
    assert len(sim.ledger.submissions()) == 1


def test_credits_are_checked_per_account(api: Api, sim: NyneSimulator) -> None:
    sim.add_account("broke-key", "broke-secret", credits=0)

    broke = _call(sim, "submit", {"X-API-Key": "broke-key", "X-API-Secret": "broke-secret"})

    assert broke.status_code == 402
    assert api.submit(**BODY).status_code == 202


def test_negative_balance_after_charge_blocks_next_submit(api: Api, sim: NyneSimulator) -> None:
    sim.set_credits(2)
    api.wait(api.submit_ok(username="jack"))

    assert sim.account().credits == -1
    assert error_code(api.submit(**BODY)) == "insufficient_credits"


def test_usage_reports_account(api: Api, sim: NyneSimulator) -> None:
    api.wait(api.submit_ok(username="jack"))
    api.wait(api.submit_ok(username="empty_account"))

    response = api.usage()

    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    data = body["data"]
    assert data["credits_remaining"] == 997
    assert data["credits_used"] == 3
    assert data["requests_this_period"] == 2
    assert data["limits"]["requests_per_minute"] == sim.settings.rate_limit_per_minute
    assert sim.api_secret not in response.text
    assert len(sim.ledger.usage_calls()) == 1
