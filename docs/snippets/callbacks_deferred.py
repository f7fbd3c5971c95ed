"""Callbacks, deferred mode: the submitting task waits for Nyne's callback, then the result lands.

Run by ``tests/integration/test_docs_snippets.py`` against the local simulator, which calls
back a real receiver on loopback (the destination replaced by the test's).
"""

from __future__ import annotations

# [START nyne_callback_deferred]
import pendulum
from airflow.sdk import DAG

from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator
from airflow_provider_nyne.transfers.callback_to_storage import NyneCallbackResultToObjectStorageOperator

with DAG("nasa_followers", schedule="@daily", start_date=pendulum.datetime(2025, 1, 1), catchup=False) as dag:
    submit = NyneSubmitInteractionsOperator(
        task_id="submit",
        social_media_url="https://x.com/nasa",
        interaction_type="followers",
        wait_for_completion=True,
        wait_mode="callback",  # defer until the callback; no polling
        timeout=2 * 60 * 60,  # then one status request settles it
    )
    land = NyneCallbackResultToObjectStorageOperator(
        task_id="land",
        request_id="{{ ti.xcom_pull(task_ids='submit', key='request_id') }}",
        correlation_id="{{ ti.xcom_pull(task_ids='submit', key='callback_correlation_id') }}",
        path="s3://aws_default@bucket/nyne/{{ run_id }}/nasa.jsonl",
    )
    submit >> land
# [END nyne_callback_deferred]
