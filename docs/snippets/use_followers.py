"""A DAG scheduled on the files that ``followers_to_s3.py`` lands (through its Asset alias).

Checked by ``tests/integration/test_docs_snippets.py``: the alias is the one the transfer in
``followers_to_s3.py`` records its files under.
"""

from __future__ import annotations

# [START nyne_asset_alias_consumer]
import pendulum
from airflow.sdk import DAG, AssetAlias, task

# A templated path is known only at run time, so the transfer records each file through an
# alias named nyne_interactions__<dag_id>__<task_id>.
with DAG(
    dag_id="use_followers",
    schedule=[AssetAlias("nyne_interactions__nyne_followers_to_s3__land")],
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
) as dag:

    @task
    def read_new_file() -> None:
        """Runs once for each file the transfer lands."""

    read_new_file()
# [END nyne_asset_alias_consumer]
