"""Test the ``nyne_default`` connection from Python, as the UI's test and the CLI do.

Run by ``tests/integration/test_docs_snippets.py`` with the connection pointing at the simulator.
"""

from __future__ import annotations

# [START nyne_hook_test_connection]
from airflow_provider_nyne.hooks.nyne import NyneHook

ok, message = NyneHook("nyne_default").test_connection()  # the free GET /usage
print(ok, message)  # True Connection to the Nyne API works (97 credits remaining)
# [END nyne_hook_test_connection]
