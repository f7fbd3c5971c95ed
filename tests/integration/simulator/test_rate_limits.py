"""Per-account rate limits: headers, 429 with Retry-After, scopes and disabling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.integration.simulator.helpers import Api, error_code

pytestmark = pytest.mark.integration

HEADER_NAMES = (
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
)


def test_headers_count_down(api: Api, sim: NyneSimulator) -> None:
    sim.configure(rate_limit_per_minute=10, rate_limit_per_hour=1000)

    first = api.usage()
    second = api.submit(username="jack", type="followers")

    for response in (first, second):
        assert all(name in response.headers for name in HEADER_NAMES)
    assert first.headers["X-RateLimit-Limit"] == first.headers["RateLimit-Limit"] == "10"
    assert first.headers["X-RateLimit-Remaining"] == "9"
    assert second.headers["RateLimit-Remaining"] == "8"
    reset_at = int(first.headers["X-RateLimit-Reset"])
    assert time.time() < reset_at <= time.time() + 61
    assert 0 < int(first.headers["RateLimit-Reset"]) <= 60


def test_429_with_retry_after_when_minute_limit_spent(api: Api, sim: NyneSimulator) -> None:
    sim.configure(rate_limit_per_minute=3)
    answers = [api.usage() for _ in range(3)]

    limited = api.submit(username="jack", type="followers")

    assert [a.status_code for a in answers] == [200, 200, 200]
    assert limited.status_code == 429
    assert error_code(limited) == "rate_limit_exceeded"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert sim.ledger.submissions() == []
    assert [r.status for r in sim.ledger.rejections("rate_limit_exceeded")] == [429]


def test_hour_limit_gives_longer_retry_after(api: Api, sim: NyneSimulator) -> None:
    sim.configure(rate_limit_per_minute=100, rate_limit_per_hour=2)
    api.usage()
    api.usage()

    limited = api.usage()

    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 60
    assert limited.headers["X-RateLimit-Limit"] == "2"


def test_limits_are_per_account(api: Api, sim: NyneSimulator) -> None:
    sim.configure(rate_limit_per_minute=1)
    sim.add_account("second-key", "second-secret")
    api.usage()

    other = api.client.get("/usage", headers={"X-API-Key": "second-key", "X-API-Secret": "second-secret"})

    assert api.usage().status_code == 429
    assert other.status_code == 200


def test_polls_can_be_exempted(api: Api, sim: NyneSimulator) -> None:
    sim.configure(rate_limit_per_minute=2, rate_limited_endpoints=["submit"])
    request_id = api.submit_ok(username="jack")

    polls = [api.poll(request_id) for _ in range(5)]

    assert {p.status_code for p in polls} == {200}
    assert "X-RateLimit-Limit" not in polls[0].headers
    assert api.submit(username="jack", type="followers").status_code == 202
    assert api.submit(username="jack", type="followers").status_code == 429


def test_limits_can_be_disabled(api: Api, sim: NyneSimulator) -> None:
    sim.configure(rate_limit_per_minute=None, rate_limit_per_hour=0)

    answers = [api.usage() for _ in range(80)]

    assert {a.status_code for a in answers} == {200}
    assert "X-RateLimit-Limit" not in answers[-1].headers


#: A client process: eight usage calls as one account; prints (status, remaining) per answer.
_CLIENT = textwrap.dedent(
    """
    import json, os, httpx
    auth = {"X-API-Key": os.environ["SIM_KEY"], "X-API-Secret": os.environ["SIM_SECRET"]}
    with httpx.Client(base_url=os.environ["SIM_URL"], headers=auth, trust_env=False) as client:
        answers = [client.get("/usage") for _ in range(8)]
    print(json.dumps([[a.status_code, a.headers.get("X-RateLimit-Remaining")] for a in answers]))
    """
)


def test_two_client_processes_of_one_account_share_its_windows(sim: NyneSimulator) -> None:
    # A ten-minute "minute": the window cannot reopen while the processes start, however slowly.
    sim.configure(rate_limit_per_minute=10, rate_limit_time_scale=10.0)
    env = {**os.environ, "SIM_URL": sim.url, "SIM_KEY": sim.api_key, "SIM_SECRET": sim.api_secret}
    clients = [
        subprocess.Popen([sys.executable, "-c", _CLIENT], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        outputs = [client.communicate(timeout=60)[0] for client in clients]
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
                client.wait()

    answers = [answer for output in outputs for answer in json.loads(output)]
    assert [client.returncode for client in clients] == [0, 0]
    assert sorted(status for status, _ in answers) == [200] * 10 + [429] * 6
    # One window: the ten accepted answers counted down 9..0 across both processes.
    assert sorted(int(remaining) for status, remaining in answers if status == 200) == list(range(10))
    assert sim.ledger.status_counts("usage") == {200: 10, 429: 6}
