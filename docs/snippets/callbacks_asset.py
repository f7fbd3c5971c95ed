"""Callbacks, asset mode: one DAG submits and returns; the callback starts another that lands the result.

Run by ``tests/integration/test_docs_snippets.py``: the first DAG against the local simulator,
which calls back a real receiver on loopback; the Asset it names is the one the second DAG is
scheduled on.
"""

from __future__ import annotations

# [START nyne_callback_asset]
import pendulum
from airflow.sdk import DAG, task

from airflow_provider_nyne.callbacks.assets import interactions_asset, request_id_from_asset_events
from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator
from airflow_provider_nyne.transfers.callback_to_storage import NyneCallbackResultToObjectStorageOperator

START = pendulum.datetime(2025, 1, 1)

with DAG("ask_for_nasa_followers", schedule="@daily", start_date=START, catchup=False) as ask:
    NyneSubmitInteractionsOperator(
        task_id="submit",
        social_media_url="https://x.com/nasa",
        interaction_type="followers",
        wait_mode="callback",  # asset mode: returns once submitted
    )

# Starts when the callback arrives; no task waited anywhere.
with DAG(
    "land_nasa_followers",
    schedule=[interactions_asset(social_media_url="https://x.com/nasa", type="followers")],
    start_date=START,
    catchup=False,
) as land_dag:
    NyneCallbackResultToObjectStorageOperator(
        task_id="land", path="s3://aws_default@bucket/nyne/{{ run_id }}.jsonl"
    )

    @task
    def which(**context) -> str:
        """The request id of the lookup that started this run."""
        return request_id_from_asset_events(context)  # the latest Nyne callback event of the run

    which()
# [END nyne_callback_asset]
