"""Submit, wait in the triggerer, land Parquet in S3.

Run by ``tests/integration/test_docs_snippets.py`` against the local simulator and a loopback
S3 server (the bucket and AWS connection replaced by the test's).
"""

from __future__ import annotations

# [START nyne_followers_to_s3]
from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator
from airflow_provider_nyne.sensors.interactions import NyneInteractionsSensor
from airflow_provider_nyne.transfers.interactions_to_storage import NyneInteractionsToObjectStorageOperator

REQUEST_ID = "{{ ti.xcom_pull(task_ids='submit', key='request_id') }}"

with DAG(
    dag_id="nyne_followers_to_s3",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
) as dag:
    submit = NyneSubmitInteractionsOperator(
        task_id="submit",
        social_media_url="https://x.com/ApacheAirflow",
        interaction_type="followers",
        max_results=500,
    )
    wait = NyneInteractionsSensor(
        task_id="wait",
        request_id=REQUEST_ID,
        timeout=timedelta(hours=2),  # deferrable by default: no worker held while Nyne works
    )
    land = NyneInteractionsToObjectStorageOperator(
        task_id="land",
        request_id=REQUEST_ID,
        # One file per run, partitioned by date (a manual run has no logical date: its own date).
        path=(
            "s3://aws_default@my-lake/nyne/followers"
            "/dt={{ (dag_run.logical_date or dag_run.run_after) | ds }}/{{ run_id }}.parquet"
        ),
        format="parquet",
    )
    submit >> wait >> land
# [END nyne_followers_to_s3]
