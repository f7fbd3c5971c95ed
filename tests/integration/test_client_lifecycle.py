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
