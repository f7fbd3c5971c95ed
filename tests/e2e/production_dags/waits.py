"""Mapped lookups that wait in the triggerer, for the production-shaped deployment tests.

* ``prod_fan_out``: 100 followers lookups, one mapped task each (submit, then defer until
  the lookup finishes; polls 1 s apart at first, at most 5 s apart).
* ``prod_triggerer_takeover``: the same with 10 lookups, for the triggerer crash.

The usernames (``holdfan000``, ...) start with ``hold``: the simulator keeps those lookups running until the test
releases them, so every wait is in a triggerer at the same moment, however slow the machine.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator

START = pendulum.datetime(2025, 1, 1, tz="UTC")
LOOKUPS = {"prod_fan_out": ("holdfan", 100), "prod_triggerer_takeover": ("holdtko", 10)}

for dag_id, (prefix, count) in LOOKUPS.items():
    with DAG(dag_id, schedule=None, start_date=START, catchup=False, max_active_runs=1):
        NyneSubmitInteractionsOperator.partial(
            task_id="lookup",
            interaction_type="followers",
            wait_for_completion=True,
            poll_interval=1,
            max_poll_interval=5,
            timeout=900,
        ).expand(username=[f"{prefix}{n:03d}" for n in range(count)])
