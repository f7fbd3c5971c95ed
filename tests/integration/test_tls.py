"""The clients, the hook and the trigger over HTTPS, as they talk to the real API.

The simulator serves TLS with a certificate from a throwaway CA; the processes trust it the
way a deployment trusts a private CA (a TLS-inspecting proxy, say): ``SSL_CERT_FILE``, which
httpx reads when the provider builds its TLS context. An untrusted certificate must fail
before anything is sent: no submission, no credits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from airflow_provider_nyne.client import http as http_module
from airflow_provider_nyne.client.errors import NyneTransportError
from airflow_provider_nyne.client.http import AsyncNyneClient, NyneClient
from airflow_provider_nyne.client.models import JobState
from airflow_provider_nyne.client.request import InteractionRequest
from airflow_provider_nyne.client.retry import RetryPolicy
from airflow_provider_nyne.hooks.nyne import NyneHook
from airflow_provider_nyne.testing.simulator import NyneSimulator
from airflow_provider_nyne.triggers.interactions import NyneInteractionsTrigger

pytestmark = pytest.mark.integration

FAST = RetryPolicy(max_retries=1, backoff_base=0.01, jitter=0.0)
REQUEST = InteractionRequest.create("https://x.com/nasa", "followers", max_results=25)


@pytest.fixture(scope="module")
def tls_sim() -> Iterator[NyneSimulator]:
    with NyneSimulator(tls=True, job_duration=0.2) as sim:
        yield sim


@pytest.fixture
def sim(tls_sim: NyneSimulator) -> NyneSimulator:
    tls_sim.reset()
    return tls_sim


@pytest.fixture
def fresh_tls_context() -> Iterator[None]:
    """The TLS context is built once per process: rebuild it for this test's environment."""
    http_module._default_ssl_context.cache_clear()
    yield
    http_module._default_ssl_context.cache_clear()


@pytest.fixture
def trusted(sim: NyneSimulator, monkeypatch: pytest.MonkeyPatch, fresh_tls_context: None) -> NyneSimulator:
    monkeypatch.setenv("SSL_CERT_FILE", str(sim.ca_file))
    return sim


def test_simulator_serves_https_and_cleans_up_its_keys() -> None:
    sim = NyneSimulator(tls=True)
    with pytest.raises(RuntimeError, match="tls=True"):
        sim.ca_file  # noqa: B018 - not started yet
    with sim:
        assert sim.url.startswith("https://127.0.0.1:")
        folder = sim.ca_file.parent
        assert sorted(p.name for p in folder.iterdir()) == ["ca.pem", "server-key.pem", "server.pem"]
        assert (folder / "server-key.pem").stat().st_mode & 0o077 == 0
        assert sim.airflow_env()["SSL_CERT_FILE"] == str(sim.ca_file)
        assert "?scheme=https&" in sim.connection_uri()
        assert '"host": "https://127.0.0.1:' in sim.connection_json()
    assert not folder.exists()


def test_sync_client_over_https(trusted: NyneSimulator) -> None:
    with NyneClient(trusted.api_key, trusted.api_secret, base_url=trusted.url, retry=FAST) as client:
        request_id = client.submit(REQUEST)
        deadline = time.monotonic() + 10
        while not (status := client.get_status(request_id)).is_terminal and time.monotonic() < deadline:
            time.sleep(0.05)
    assert status.state is JobState.COMPLETED
    assert status.result is not None
    assert len(status.result) > 0
    assert [s.request_id for s in trusted.ledger.submissions()] == [request_id]


async def test_async_client_over_https(trusted: NyneSimulator) -> None:
    async with AsyncNyneClient(
        trusted.api_key, trusted.api_secret, base_url=trusted.url, retry=FAST
    ) as client:
        request_id = await client.submit(REQUEST)
        deadline = time.monotonic() + 10
        while not (status := await client.get_status(request_id)).is_terminal:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        assert (await client.get_usage())["credits_remaining"] == 997
    assert status.state is JobState.COMPLETED
    assert status.total_count == len(status.result or [])


async def test_trigger_polls_over_https(trusted: NyneSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in trusted.airflow_env().items():
        monkeypatch.setenv(name, value)
    with NyneClient(trusted.api_key, trusted.api_secret, base_url=trusted.url) as client:
        request_id = client.submit(REQUEST)
    trigger = NyneInteractionsTrigger(
        request_id, end_time=time.time() + 30, poll_interval=0.05, max_poll_interval=0.1
    )

    events = [event.payload async for event in trigger.run()]

    assert [(e["status"], e["request_id"]) for e in events] == [("success", request_id)]
    assert events[0]["total_count"] > 0
    assert trusted.ledger.poll_count(request_id) >= 1


def test_hook_connection_test_over_https(trusted: NyneSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in trusted.airflow_env().items():
        monkeypatch.setenv(name, value)

    ok, message = NyneHook().test_connection()

    assert ok, message
    assert len(trusted.ledger.usage_calls()) == 1


def test_untrusted_certificate_fails_before_anything_is_sent(
    sim: NyneSimulator, monkeypatch: pytest.MonkeyPatch, fresh_tls_context: None
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    with (
        NyneClient(sim.api_key, sim.api_secret, base_url=sim.url, retry=FAST) as client,
        pytest.raises(NyneTransportError, match=r"(?i)certificate"),
    ):
        client.submit(REQUEST)

    assert sim.ledger.requests() == []  # the TLS handshake failed: no request reached the API
    assert sim.ledger.credits_charged() == 0
