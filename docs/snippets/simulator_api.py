"""The simulator's Python API: start it, point Airflow at it, script faults, read the ledger.

Run by ``tests/integration/test_docs_snippets.py``; needs nothing but loopback.
"""

from __future__ import annotations

# [START nyne_simulator_api]
import os

from airflow_provider_nyne.client import NyneClient
from airflow_provider_nyne.testing.simulator import NyneSimulator

with NyneSimulator(job_duration=0.2) as sim:  # or sim.start() ... sim.stop(); port 0 = a free port
    print(sim.url)  # http://127.0.0.1:PORT
    os.environ.update(sim.airflow_env())  # AIRFLOW_CONN_NYNE_DEFAULT: a connection to this simulator
    uri = sim.connection_uri()  # the same connection as a URI: nyne://KEY:SECRET@127.0.0.1:PORT?scheme=http

    sim.faults.unavailable(endpoint="submit", times=1)  # the next submission answers 503
    with NyneClient(sim.api_key, sim.api_secret, base_url=sim.url) as client:
        request_id = client.submit({"username": "jack", "type": "followers"})  # retried after the 503
    sim.ledger.wait_for(lambda ledger: ledger.credits_charged() > 0)

    assert len(sim.ledger.submissions()) == 1  # one accepted submission, despite the retries
    assert sim.ledger.status_counts(endpoint="submit") == {503: 1, 202: 1}
    assert sim.ledger.credits_charged() == 3  # one job with results
# [END nyne_simulator_api]
