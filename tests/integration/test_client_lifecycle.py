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


def _pools() -> list[httpx.AsyncClient]:
    return [entry[0] for shared in http_module._KEYS.values() for entry in shared._pools.values()]


async def test_triggers_share_one_pool_that_closes_after_the_last_one(
    simulator_connection: NyneSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = simulator_connection
    ids = [sim_submit(sim, f"user{i}") for i in range(3)]
    seen: list[httpx.AsyncClient] = []
    lease = http_module._SharedKey.lease

    def spy(self: http_module._SharedKey, loop: asyncio.AbstractEventLoop, make: object) -> httpx.AsyncClient:
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
    assert seen[0].is_closed, "the pool stays open after the last waiting trigger finished"
    assert _pools() == []


async def test_a_loop_that_ended_leaves_nothing_behind(simulator: NyneSimulator) -> None:
    pools: list[httpx.AsyncClient] = []

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
    assert pools[0].is_closed
    assert _pools() == []
    async with AsyncNyneClient(simulator.api_key, simulator.api_secret, base_url=simulator.url) as client:
        assert (await client.get_usage()) is not None
        assert await client._pool() is not pools[0]


def test_proxy_environment_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behind a proxy (HTTPS_PROXY set) the pool sends through it: httpx reads the environment."""
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")

    async def pool() -> httpx.AsyncClient:
        async with AsyncNyneClient("key-123", "secret-456", base_url="https://api.nyne.ai") as client:
            http = await client._pool()
            assert http._mounts, "httpx mounted no proxy transport from HTTPS_PROXY"
            return http

    assert asyncio.run(pool()).is_closed


def sim_submit(sim: NyneSimulator, username: str) -> str:
    answer = httpx.post(
        f"{sim.url}/person/interactions",
        json={"type": "followers", "social_media_url": f"https://x.com/{username}"},
        headers={"X-API-Key": sim.api_key, "X-API-Secret": sim.api_secret},
    )
    answer.raise_for_status()
    return str(answer.json()["data"]["request_id"])
