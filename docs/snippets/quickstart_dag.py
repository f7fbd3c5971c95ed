"""The quick-start DAG of the README and the overview page: submit, wait in the triggerer, land.

Run by ``tests/integration/test_docs_snippets.py`` against the local simulator.
"""

from __future__ import annotations

# [START nyne_quickstart]
import pendulum
from airflow.sdk import DAG

from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator
from airflow_provider_nyne.sensors.interactions import NyneInteractionsSensor
from airflow_provider_nyne.transfers.interactions_to_storage import NyneInteractionsToObjectStorageOperator

REQUEST_ID = "{{ ti.xcom_pull(task_ids='submit', key='request_id') }}"

with DAG(
    "nyne_quickstart", schedule="@daily", start_date=pendulum.datetime(2025, 1, 1), catchup=False
) as dag:
    submit = NyneSubmitInteractionsOperator(
        task_id="submit",  # checks the input, submits, keeps the request id for retries
        social_media_url="https://x.com/ApacheAirflow",
        interaction_type="followers",
        max_results=100,
    )
    # Deferrable: the wait runs in the triggerer, no worker slot is held while Nyne works.
    wait = NyneInteractionsSensor(task_id="wait", request_id=REQUEST_ID)
    land = NyneInteractionsToObjectStorageOperator(
        task_id="land",  # written whole or not at all, recorded as an Asset
        request_id=REQUEST_ID,
        path="file:///tmp/nyne/followers/{{ run_id }}.jsonl",
    )
    submit >> wait >> land
# [END nyne_quickstart]
