"""The client and the hook against the simulator, over real sockets.

The simulator shares no code with the client, so these tests check the client's reading of
the API contract against an independent implementation of it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from airflow_provider_nyne.client.errors import (
    NyneAuthError,
    NyneCreditsError,
    NyneError,
    NyneNotFoundError,
    NyneTransportError,
)
from airflow_provider_nyne.client.http import AsyncNyneClient, NyneClient
from airflow_provider_nyne.client.models import JobState, JobStatus
from airflow_provider_nyne.client.request import InteractionRequest
from airflow_provider_nyne.client.retry import RetryPolicy
from airflow_provider_nyne.hooks.nyne import NyneHook
from airflow_provider_nyne.testing.simulator import NyneSimulator

pytestmark = pytest.mark.integration

FAST = RetryPolicy(max_retries=3, backoff_base=0.01, jitter=0.0)
REQUEST = InteractionRequest.create("https://x.com/nasa", "followers", max_results=25)


def wait_sync(get: Any, request_id: str, timeout: float = 10.0) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        status: JobStatus = get(request_id)
        if status.is_terminal or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


async def wait_async(get: Any, request_id: str, timeout: float = 10.0) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        status: JobStatus = await get(request_id)
        if status.is_terminal or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.05)


def check_completed(status: JobStatus, sim: NyneSimulator, request_id: str) -> None:
    assert status.state is JobState.COMPLETED
    assert status.request_id == request_id
    result = status.result
    assert result is not None
    assert 0 < len(result) <= 25
    assert status.total_count == result.total_count
    assert result.interaction_type == "followers"
    assert result.platform == "twitter"
    assert result.target_username == "nasa"
    assert all(item.username for item in result)
    assert all(isinstance(item.followers_count, int) for item in result)
    assert len(sim.ledger.submissions()) == 1


def test_sync_client_round_trip(simulator: NyneSimulator) -> None:
    with NyneClient(simulator.api_key, simulator.api_secret, base_url=simulator.url, retry=FAST) as client:
        before = client.get_usage()["credits_remaining"]
        rid = client.submit(REQUEST)
        status = wait_sync(client.get_status, rid)
        check_completed(status, simulator, rid)
        assert client.get_usage()["credits_remaining"] == before - 3
    assert simulator.ledger.credits_charged() == 3


async def test_async_client_round_trip(simulator: NyneSimulator) -> None:
    async with AsyncNyneClient(
        simulator.api_key, simulator.api_secret, base_url=simulator.url, retry=FAST
    ) as client:
        before = (await client.get_usage())["credits_remaining"]
        rid = await client.submit(REQUEST)
        check_completed(await wait_async(client.get_status, rid), simulator, rid)
        assert (await client.get_usage())["credits_remaining"] == before - 3


def test_hook_round_trip_and_connection_test(simulator_connection: NyneSimulator) -> None:
    sim = simulator_connection
    hook = NyneHook()
    ok, message = hook.test_connection()
    assert ok is True
    assert message == "Connection to the Nyne API works (1000 credits remaining)"
    rid = hook.submit_interactions(
        hook.build_request(twitter_url="https://x.com/nasa", type="followers", max_results=25)
    )
    check_completed(wait_sync(hook.get_interactions_status, rid), sim, rid)


async def test_hook_async_round_trip(simulator_connection: NyneSimulator) -> None:
    hook = NyneHook()
    rid = await hook.asubmit_interactions(REQUEST)
    check_completed(await wait_async(hook.aget_interactions_status, rid), simulator_connection, rid)
    assert (await hook.aget_usage())["credits_used"] == 3
    await (await hook.aget_conn()).aclose()


@pytest.mark.parametrize("form", ["uri", "json"])
def test_connection_forms_reach_the_simulator(
    simulator: NyneSimulator, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    value = simulator.connection_uri() if form == "uri" else simulator.connection_json()
    monkeypatch.setenv("AIRFLOW_CONN_NYNE_FORM", value)
    hook = NyneHook("nyne_form")
    assert hook.settings.base_url == simulator.url
    assert hook.test_connection()[0] is True


def test_connection_test_names_the_wrong_credential(
    simulator: NyneSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_NYNE_WRONG",
        simulator.connection_json().replace(simulator.api_secret, "not-the-secret"),
    )
    ok, message = NyneHook("nyne_wrong").test_connection()
    assert ok is False
    assert "invalid_api_secret" in message
    assert "check the connection's password (API Secret)" in message
    assert "not-the-secret" not in message


def test_result_shapes_and_job_outcomes(simulator: NyneSimulator) -> None:
    with NyneClient(simulator.api_key, simulator.api_secret, base_url=simulator.url, retry=FAST) as client:
        simulator.faults.result_shape("variant")
        variant = wait_sync(client.get_status, client.submit(REQUEST))
        assert variant.result is not None
        items = variant.result.interactions
        assert len(items) > 0
        assert all(item.username for item in items)
        assert all(isinstance(item.followers_count, int) for item in items)
        assert all(isinstance(item.verified, bool) for item in items)
        failed = wait_sync(
            client.get_status, client.submit({"username": "fail_account", "type": "followers"})
        )
        assert failed.state is JobState.FAILED
        assert failed.error == "Profile is private"
        assert failed.result is None
        empty = wait_sync(
            client.get_status, client.submit({"username": "empty_account", "type": "following"})
        )
        assert empty.state is JobState.COMPLETED
        assert empty.total_count == 0
        assert empty.result is not None
        assert len(empty.result) == 0
    assert simulator.ledger.credits_charged() == 3  # only the lookup with results


def test_retry_policy_against_the_simulator(simulator: NyneSimulator) -> None:
    with NyneClient(simulator.api_key, simulator.api_secret, base_url=simulator.url, retry=FAST) as client:
        simulator.faults.unavailable(endpoint="submit", times=2)
        assert client.submit(REQUEST)  # 503 twice, then accepted
        assert len(simulator.ledger.submissions()) == 1
        simulator.faults.rate_limited(endpoint="submit", retry_after=0.05)
        assert client.submit(REQUEST)
        assert len(simulator.ledger.submissions()) == 2
        # The ambiguous case: processed, then the connection dropped. Reported, never re-sent.
        simulator.faults.drop_connection(endpoint="submit", after_processing=True)
        with pytest.raises(NyneTransportError) as info:
            client.submit(REQUEST)
        assert info.value.request_sent is True
        assert len(simulator.ledger.submissions()) == 3
        assert len(simulator.ledger.requests("submit")) == 6  # 503, 503, ok, 429, ok, dropped
        simulator.faults.server_error(endpoint="status", times=2)
        assert client.get_status(simulator.ledger.submissions()[0].request_id).request_id
        with pytest.raises(NyneNotFoundError, match="request 'req_nope' was not found"):
            client.get_status("req_nope")


def test_errors_from_the_simulator(simulator: NyneSimulator) -> None:
    with NyneClient("unknown-key", "whatever", base_url=simulator.url, retry=FAST) as client:
        with pytest.raises(NyneAuthError) as info:
            client.get_usage()
        assert info.value.code == "invalid_api_key"
    simulator.set_credits(0)
    with NyneClient(simulator.api_key, simulator.api_secret, base_url=simulator.url, retry=FAST) as client:
        with pytest.raises(NyneCreditsError) as credits:
            client.submit(REQUEST)
        assert credits.value.status_code == 402
    assert simulator.ledger.submissions() == []


def test_airflow_connections_test_cli(simulator: NyneSimulator, tmp_path: Any) -> None:
    """``airflow connections test nyne_default`` in a fresh process, with a good and a bad secret."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    base.update(
        AIRFLOW_HOME=str(tmp_path),
        AIRFLOW__CORE__TEST_CONNECTION="Enabled",
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
    )
    cli = [str(Path(sys.executable).with_name("airflow")), "connections", "test", "nyne_default"]
    good = dict(base, AIRFLOW_CONN_NYNE_DEFAULT=simulator.connection_uri())
    bad = dict(
        base,
        AIRFLOW_CONN_NYNE_DEFAULT=simulator.connection_json().replace(simulator.api_secret, "wrong-secret"),
    )
    procs = [
        subprocess.Popen(cli, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for env in (good, bad)
    ]
    (ok_out, _), (bad_out, _) = (p.communicate(timeout=120) for p in procs)
    assert procs[0].returncode == 0
    assert "Connection success!" in ok_out
    assert "Connection failed!" in bad_out
    assert "the API secret was rejected: check the connection's password (API Secret)" in bad_out
    assert "wrong-secret" not in bad_out
    assert len(simulator.ledger.usage_calls()) == 1  # the bad secret never got that far


def test_every_locally_valid_request_is_accepted_by_the_simulator(simulator: NyneSimulator) -> None:
    """The costly direction of disagreement: a request this client accepts but the API refuses."""
    from tests.unit.client.test_request import CASES

    valid = [(case.id, case.values[0]) for case in CASES if case.values[2] is None]
    assert len(valid) >= 20
    refused = {}
    with NyneClient(simulator.api_key, simulator.api_secret, base_url=simulator.url, retry=FAST) as client:
        for case_id, kwargs in valid:
            # No callbacks: the simulator would really deliver them, and only loopback is allowed here.
            fields = {k: v for k, v in kwargs.items() if k not in ("callback_url", "allowed_callback_hosts")}
            try:
                client.submit(InteractionRequest.create(**fields))
            except NyneError as err:
                refused[case_id] = str(err)
    assert refused == {}
    assert len(simulator.ledger.submissions()) == len(valid)
