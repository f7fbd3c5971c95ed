"""The shared async client's pool is closed when its last user is done, and reopens on demand.

A triggerer that goes quiet, or an event loop that ends (``dag.test()`` runs each trigger in
its own loop), must keep no sockets and leave no "Unclosed client session" behind.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from airflow_provider_nyne.client.http import AsyncNyneClient
from airflow_provider_nyne.testing.simulator import NyneSimulator
from airflow_provider_nyne.triggers import interactions as trigger_module
from airflow_provider_nyne.triggers.interactions import NyneInteractionsTrigger

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("transport", ["auto", "httpx"])
async def test_idle_close_reopens_on_next_request(simulator: NyneSimulator, transport: Any) -> None:
    client = AsyncNyneClient(
        simulator.api_key, simulator.api_secret, base_url=simulator.url, transport=transport
    )
    await client.get_usage()

    assert await client.aclose_idle() is True
    assert client.is_closed  # shared() hands out a fresh client from now on
    assert (await client.get_usage()) is not None  # ...but holders of this one still work
    assert len(simulator.ledger.usage_calls()) == 2

    await client.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await client.get_usage()


async def test_last_trigger_of_a_connection_closes_the_shared_pool(
    simulator_connection: NyneSimulator,
) -> None:
    sim = simulator_connection
    ids = [sim_submit(sim, f"user{i}") for i in range(3)]
    triggers = [
        NyneInteractionsTrigger(rid, end_time=time.time() + 30, poll_interval=0.05, max_poll_interval=0.1)
        for rid in ids
    ]
    shared = await trigger_module._shared_client("nyne_default")  # the one the triggers will use
    events = []
    for trigger in triggers:
        async for event in trigger.run():
            events.append(event.payload)
    assert [e["status"] for e in events] == ["success"] * 3
    assert [e["request_id"] for e in events] == ids

    assert shared.is_closed, "the pool stays open after the last waiting trigger finished"
    assert not trigger_module._WAITING.get(asyncio.get_running_loop())
    assert await trigger_module._shared_client("nyne_default") is not shared  # the next wait gets a new pool


def sim_submit(sim: NyneSimulator, username: str) -> str:
    import httpx

    answer = httpx.post(
        f"{sim.url}/person/interactions",
        json={"type": "followers", "social_media_url": f"https://x.com/{username}"},
        headers={"X-API-Key": sim.api_key, "X-API-Secret": sim.api_secret},
    )
    answer.raise_for_status()
    return str(answer.json()["data"]["request_id"])


def test_auto_transport_honours_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind a proxy (HTTPS_PROXY set) the auto transport is httpx's own, which honours it."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    direct = AsyncNyneClient("key-123", "secret-456", base_url="https://api.nyne.ai")
    assert type(direct._transport).__name__ == "AiohttpTransport"

    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    proxied = AsyncNyneClient("key-123", "secret-456", base_url="https://api.nyne.ai")
    assert proxied._transport is None  # httpx.AsyncClient's default transport, with env proxies
    assert proxied._http._mounts, "httpx mounted no proxy transport from HTTPS_PROXY"


async def test_closed_loops_are_dropped_from_the_shared_registry(simulator: NyneSimulator) -> None:
    import threading

    from airflow_provider_nyne.client import http as http_module

    def in_another_loop() -> None:
        async def use() -> None:
            client = AsyncNyneClient.shared(simulator.api_key, simulator.api_secret, base_url=simulator.url)
            await client.get_usage()
            await client.aclose()  # closed pool, but the entry (and its loop) would stay without pruning

        asyncio.run(use())

    thread = threading.Thread(target=in_another_loop)
    thread.start()
    thread.join()
    assert any(loop.is_closed() for loop in http_module._SHARED)
    AsyncNyneClient.shared(simulator.api_key, simulator.api_secret, base_url=simulator.url)
    assert not any(loop.is_closed() for loop in http_module._SHARED)
