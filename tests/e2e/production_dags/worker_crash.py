"""One lookup that waits in its worker (not deferred), retried once, for the worker crash test.

The username starts with ``hold``: the simulator keeps the lookup running until the test
releases it, so the task is still waiting in the worker when the worker is killed.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator

with DAG(
    "prod_worker_crash", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False
):
    NyneSubmitInteractionsOperator(
        task_id="lookup",
        username="holdworker",
        interaction_type="followers",
        wait_for_completion=True,
        deferrable=False,
        poll_interval=1,
        max_poll_interval=2,
        timeout=600,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
