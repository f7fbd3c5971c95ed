"""A DAG scheduled on the Asset that ``followers_to_s3.py`` lands its files in.

Checked by ``tests/integration/test_docs_snippets.py``: the Asset is the one the transfer in
``followers_to_s3.py`` declares, and the task reads back the file a real landing's event names.
"""

from __future__ import annotations

# [START nyne_followers_consumer]
import pendulum
from airflow.sdk import DAG, Asset, task

from airflow_provider_nyne.assets import landed_files_from_asset_events

# The transfer's Asset: the fixed folder of its templated path, the same for every run.
FOLLOWERS = Asset(uri="s3://my-lake/nyne/followers")

with DAG(
    dag_id="use_followers",
    schedule=[FOLLOWERS],
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
) as dag:

    @task
    def count_followers(**context) -> int:
        """Runs when files land; each triggering event names its file, request and record count."""
        total = 0
        for landed in landed_files_from_asset_events(context, FOLLOWERS):
            # landed.path(conn_id="...") would read through another storage connection.
            size = landed.path().stat().st_size
            print(f"{landed.file}: {landed.records} followers of request {landed.request_id}, {size} bytes")
            total += landed.records
        return total

    count_followers()
# [END nyne_followers_consumer]
