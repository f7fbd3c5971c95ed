"""Client options: retries, declared rate limits, and the API key's request budget.

Builds clients only (nothing is sent). Run by ``tests/integration/test_docs_snippets.py``.
"""

from __future__ import annotations

import os

KEY = os.environ.get("NYNE_API_KEY", "YOUR_API_KEY")
SECRET = os.environ.get("NYNE_API_SECRET", "YOUR_API_SECRET")

# [START nyne_client_rate_limits]
from airflow_provider_nyne.client import NyneClient, RateLimits  # noqa: E402

# What the account allows (the defaults are the API's published limits: 60/minute, 1,000/hour,
# 4 in flight). Every client of this key in this process takes its turn in one budget.
limits = RateLimits(per_minute=120, per_hour=3000, max_in_flight=8)
first = NyneClient(KEY, SECRET, rate_limits=limits)
second = NyneClient(KEY, SECRET, rate_limits=limits)
assert first.budget is second.budget  # one budget per API key (and base URL) in this process
declared = first.budget.limits  # == limits; a client declaring stricter limits for the key lowers them
# [END nyne_client_rate_limits]

# [START nyne_client_retries]
from airflow_provider_nyne.client import NyneClient, RetryPolicy  # noqa: E402
from airflow_provider_nyne.client.retry import NO_RETRY  # noqa: E402

patient = NyneClient(KEY, SECRET, retry=RetryPolicy(max_retries=5, backoff_base=2.0))
fail_fast = NyneClient(KEY, SECRET, retry=NO_RETRY)
# [END nyne_client_retries]

for client in (patient, fail_fast, first, second):
    client.close()
