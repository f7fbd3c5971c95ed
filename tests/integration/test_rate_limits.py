"""Many lookups on one API key under a tight rate limit, over real sockets.

The simulator's rate-limit windows are scaled down (a minute lasts 1.2 s), so that a
budget-bound fan-out runs in seconds; the connections declare the same limits and scale, as
a deployment's connection declares its account's.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_nyne.client.http import AsyncNyneClient
from airflow_provider_nyne.client.ratelimit import RateLimits
from airflow_provider_nyne.operators import interactions as operator_module
from airflow_provider_nyne.testing.simulator import NyneSimulator
from airflow_provider_nyne.triggers.interactions import NyneInteractionsTrigger
from tests.integration._dagrun import DAG_HEADER, task_instances, xcom

pytestmark = pytest.mark.integration

#: 30 requests per "minute" of 1.2 s: 25 requests a second, tight for a hundred waits.
TIGHT = {"rate_limit_per_minute": 30, "rate_limit_per_hour": 100_000, "rate_limit_time_scale": 0.02}
LIMITS = RateLimits(per_minute=30, per_hour=100_000, time_scale=0.02)


def rejected(sim: NyneSimulator) -> int:
    return sim.ledger.status_counts().get(429, 0)


async def _fan_out(sim: NyneSimulator, count: int) -> list[dict[str, Any]]:
    """Submit ``count`` lookups through the budget, then wait for each in a trigger, all at once."""
    async with AsyncNyneClient(sim.api_key, sim.api_secret, base_url=sim.url, rate_limits=LIMITS) as client:
        ids = await asyncio.gather(
            *(
                client.submit({"social_media_url": f"https://x.com/tight{i}", "type": "followers"})
                for i in range(count)
            )
        )
    triggers = [
        NyneInteractionsTrigger(rid, end_time=time.time() + 120, poll_interval=0.05, max_poll_interval=0.5)
        for rid in ids
    ]

    async def first_event(trigger: NyneInteractionsTrigger) -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    return await asyncio.gather(*(first_event(t) for t in triggers))


async def test_a_hundred_waits_of_one_key_all_succeed_with_few_429s(
    simulator_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = simulator_factory(**TIGHT, job_duration=0.3)
    monkeypatch.setenv("AIRFLOW_CONN_NYNE_DEFAULT", sim.connection_json())
    events = await _fan_out(sim, 100)
    assert [e["status"] for e in events] == ["success"] * 100
    assert len(sim.ledger.submissions()) == 100
    requests = sum(sim.ledger.status_counts().values())
    # Paced under the limit from the first request: a 429 is the exception, not the rule.
    assert rejected(sim) <= 0.01 * requests, sim.ledger.status_counts()


_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    sys.path.insert(0, {root!r})
    from tests.integration.test_rate_limits import _fan_out
    from airflow_provider_nyne.testing.simulator import NyneSimulator

    class Remote:
        url, api_key, api_secret = {url!r}, {key!r}, {secret!r}

    events = asyncio.run(_fan_out(Remote, {count}))
    print(json.dumps([e["status"] for e in events]))
    """
)


def test_two_processes_sharing_one_key_converge_through_the_headers(
    simulator_factory: Any, tmp_path: Path
) -> None:
    # Each process declares the whole account's limit: together they would send twice too
    # much; what the server says on every answer (remaining, reset) slows both down.
    sim = simulator_factory(**TIGHT, job_duration=0.3)
    env = {**os.environ, "AIRFLOW_CONN_NYNE_DEFAULT": sim.connection_json()}
    root = str(Path(__file__).resolve().parents[2])
    code = _CHILD.format(root=root, url=sim.url, key=sim.api_key, secret=sim.api_secret, count=50)
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True, cwd=tmp_path
        )
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=240)[0] for child in children]
    assert [child.returncode for child in children] == [0, 0]
    statuses = [s for out in outputs for s in json.loads(out.strip().splitlines()[-1])]
    assert statuses == ["success"] * 100
    assert len(sim.ledger.submissions()) == 100
    requests = sum(sim.ledger.status_counts().values())
    assert rejected(sim) <= 0.10 * requests, sim.ledger.status_counts()


def test_a_submission_told_to_come_back_later_defers_then_submits_exactly_once(
    simulator_connection: NyneSimulator, load_dag: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = simulator_connection
    # Wait in the worker for room at most 0.2 s, so that a 1 s Retry-After makes the task defer.
    monkeypatch.setattr(operator_module, "SUBMIT_WAIT_IN_WORKER", 0.2)
    sim.faults.rate_limited(endpoint="submit", times=1, retry_after=1)
    source = DAG_HEADER + textwrap.dedent(
        """
        with DAG("nyne_submit_after_429", schedule=None, start_date=START, catchup=False) as dag:
            NyneSubmitInteractionsOperator(
                task_id="lookup", username="nasa", interaction_type="followers", retries=0, **CALLBACKS
            )
        """
    )
    run = load_dag(source, "nyne_submit_after_429").test()
    # One try, no retry used: it deferred until the window reopened, then submitted once.
    assert task_instances(run)["lookup"] == ("success", 1)
    [submission] = sim.ledger.submissions()
    assert xcom(run, "lookup", "request_id") == submission.request_id
    assert rejected(sim) == 1
