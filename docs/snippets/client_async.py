"""The async client: the same calls as coroutines, never blocking the event loop.

Reads ``NYNE_API_KEY``, ``NYNE_API_SECRET`` and, optionally, ``NYNE_API_URL``. Run by
``tests/integration/test_docs_snippets.py`` against the simulator.
"""

from __future__ import annotations

# [START nyne_client_async]
import asyncio
import os
import time

from airflow_provider_nyne.client import AsyncNyneClient, JobStatus


async def following_of_natgeo() -> JobStatus:
    # Clients of one API key in one event loop share one connection pool, closed with the last of them.
    async with AsyncNyneClient(
        os.environ["NYNE_API_KEY"],
        os.environ["NYNE_API_SECRET"],
        base_url=os.environ.get("NYNE_API_URL", "https://api.nyne.ai"),
    ) as client:
        # Wait up to a minute for room under the rate limit; past it, NyneRateLimitError.retry_after
        # says when to come back.
        deadline = time.time() + 60
        request_id = await client.submit(
            {"username": "natgeo", "platform": "instagram", "type": "following"}, deadline=deadline
        )
        status = await client.get_status(request_id)
        while not status.is_terminal:
            await asyncio.sleep(2)
            status = await client.get_status(request_id)
        return status


status = asyncio.run(following_of_natgeo())
print(status.state.value, status.total_count)
# [END nyne_client_async]
