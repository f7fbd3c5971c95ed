"""The pool an API key's async clients share in an event loop closes with the last of them.

A triggerer that goes quiet, or an event loop that ends (``dag.test()`` runs each trigger in
its own loop), must keep no sockets and leave no "Unclosed client" behind.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from airflow_provider_nyne.client import http as http_module
from airflow_provider_nyne.client.http import AsyncNyneClient
from airflow_provider_nyne.testing.simulator import NyneSimulator
from airflow_provider_nyne.triggers.interactions import NyneInteractionsTrigger

pytestmark = pytest.mark.integration


def _pools() -> list[httpx.AsyncBaseTransport]:
    return [entry[0] for shared in http_module._KEYS.values() for entry in shared._pools.values()]


async def test_triggers_share_one_pool_that_closes_after_the_last_one(
    simulator_connection: NyneSimulator, monkeypatch: pytest.MonkeyPatch, closed_pools: set[int]
) -> None:
    sim = simulator_connection
    ids = [sim_submit(sim, f"user{i}") for i in range(3)]
    seen: list[httpx.AsyncBaseTransport] = []
    lease = http_module._SharedKey.lease

    def spy(
        self: http_module._SharedKey, loop: asyncio.AbstractEventLoop, make: object
    ) -> httpx.AsyncBaseTransport:
        pool = lease(self, loop, make)
        seen.append(pool)
        return pool

    monkeypatch.setattr(http_module._SharedKey, "lease", spy)
    triggers = [
        NyneInteractionsTrigger(rid, end_time=time.time() + 30, poll_interval=0.05, max_poll_interval=0.1)
        for rid in ids
    ]

    async def first_event(trigger: NyneInteractionsTrigger) -> dict[str, object]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    events = await asyncio.gather(*(first_event(t) for t in triggers))
    assert [e["status"] for e in events] == ["success"] * 3
    assert [e["request_id"] for e in events] == ids
    assert len(seen) == 3
    assert len({id(p) for p in seen}) == 1, "the three waits did not share one pool"
    assert id(seen[0]) in closed_pools, "the pool stays open after the last waiting trigger finished"
    assert _pools() == []


async def test_a_loop_that_ended_leaves_nothing_behind(
    simulator: NyneSimulator, closed_pools: set[int]
) -> None:
    pools: list[httpx.AsyncBaseTransport] = []

    def in_another_loop() -> None:
        async def use() -> None:
            async with AsyncNyneClient(
                simulator.api_key, simulator.api_secret, base_url=simulator.url
            ) as client:
                await client.get_usage()
                pools.append(await client._pool())

        asyncio.run(use())

    thread = threading.Thread(target=in_another_loop)
    thread.start()
    thread.join()
    assert pools
    assert id(pools[0]) in closed_pools
    assert _pools() == []
    async with AsyncNyneClient(simulator.api_key, simulator.api_secret, base_url=simulator.url) as client:
        assert (await client.get_usage()) is not None
        assert await client._pool() is not pools[0]


def test_behind_a_proxy_the_pool_sends_through_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)

    async def pool() -> httpx.AsyncBaseTransport:
        async with AsyncNyneClient("key-123", "secret-456", base_url="https://api.nyne.ai") as client:
            return await client._pool()

    assert type(getattr(asyncio.run(pool()), "_pool", None)).__name__ == "AsyncHTTPProxy"


def sim_submit(sim: NyneSimulator, username: str) -> str:
    answer = httpx.post(
        f"{sim.url}/person/interactions",
        json={"type": "followers", "social_media_url": f"https://x.com/{username}"},
        headers={"X-API-Key": sim.api_key, "X-API-Secret": sim.api_secret},
    )
    answer.raise_for_status()
    return str(answer.json()["data"]["request_id"])
