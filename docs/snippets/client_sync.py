"""The API client without Airflow: submit one lookup, wait for it, print the people it found.

Reads ``NYNE_API_KEY``, ``NYNE_API_SECRET`` and, optionally, ``NYNE_API_URL`` (another base
URL, such as the local simulator's). Run by ``tests/integration/test_docs_snippets.py``
against the simulator.
"""

from __future__ import annotations

# [START nyne_client_sync]
import os
import time

from airflow_provider_nyne.client import InteractionRequest, JobState, NyneClient, NyneError

request = InteractionRequest.create("https://x.com/nasa", "followers", max_results=200)  # validated here

with NyneClient(
    os.environ["NYNE_API_KEY"],
    os.environ["NYNE_API_SECRET"],
    base_url=os.environ.get("NYNE_API_URL", "https://api.nyne.ai"),
) as client:
    try:
        request_id = client.submit(request)  # costs 3 credits if it completes with results
        status = client.get_status(request_id)  # polling is free
        while not status.is_terminal:
            time.sleep(2)
            status = client.get_status(request_id)
    except NyneError as err:
        raise SystemExit(f"Nyne call failed: {err}") from err

if status.state is JobState.FAILED:
    raise SystemExit(f"lookup failed: {status.error}")
print(status.total_count, "people")
for person in status.result or []:
    print(person.username, person.followers_count, person.verified)
# [END nyne_client_sync]
