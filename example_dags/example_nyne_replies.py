"""Replies to one tweet, fetched and waited for by a single task, then landed as CSV.

Knobs (environment, read at parse time without I/O): ``NYNE_EXAMPLE_OUTPUT_BASE`` (default
``file:///tmp/nyne-examples``; the Variable ``nyne_example_output_base`` wins at run time),
``NYNE_EXAMPLE_POLL_INTERVAL`` (seconds before the first status poll, default 10).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator
from airflow_provider_nyne.transfers.interactions_to_storage import NyneInteractionsToObjectStorageOperator

OUTPUT_BASE = os.environ.get("NYNE_EXAMPLE_OUTPUT_BASE", "file:///tmp/nyne-examples").rstrip("/")
POLL_INTERVAL = float(os.environ.get("NYNE_EXAMPLE_POLL_INTERVAL", "10"))


def tweet_key(tweet_url: str) -> str:
    """``<account>_<tweet id>`` from a status URL, safe as a path segment."""
    match = re.search(r"/([^/?#]+)/status(?:es)?/(\d+)", str(tweet_url))
    key = f"{match.group(1)}_{match.group(2)}" if match else str(tweet_url).rstrip("/").rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key) or "unknown"


def path_safe(value: str) -> str:
    """A run id such as ``manual__2025-01-01T00:00:00+00:00`` as a portable object key segment."""
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", str(value))


DESTINATION = (
    "{{ var.value.get('nyne_example_output_base', '" + OUTPUT_BASE + "') }}"
    "/replies/{{ params.tweet_url | tweet_key }}"
    "/dt={{ (dag_run.logical_date or dag_run.run_after) | ds }}"
    "/{{ run_id | path_safe }}.csv"
)

with DAG(
    dag_id="example_nyne_replies",
    description="Replies to a tweet, refreshed every six hours, landed as CSV",
    # Replies pile up in the first hours after a tweet: refresh a few times a day.
    schedule="0 */6 * * *",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["example", "nyne", "replies"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    params={
        "tweet_url": Param(
            "https://x.com/ApacheAirflow/status/1877777777777777777",
            type="string",
            pattern=r"/status(es)?/\d{10,25}",
            description="URL of the tweet whose replies to fetch (.../status/<id>)",
        ),
        "max_results": Param(200, type="integer", minimum=10, maximum=1000, description="10-1000"),
    },
    user_defined_filters={"tweet_key": tweet_key, "path_safe": path_safe},
    doc_md="""
### Nyne replies to a tweet

Fetches the replies to the tweet in the `tweet_url` param every six hours and lands them as
CSV (`reply_text`, `reply_date` and the repliers' profile columns):

`<base>/replies/<account>_<tweet id>/dt=<YYYY-MM-DD>/<run_id>.csv`

1. **fetch_replies** submits and waits in one task (`wait_for_completion=True`): the request
   id is kept before the wait (XCom `request_id`, and the task's state store on Airflow 3.3+),
   then the task defers to the triggerer until Nyne is done. A retry reconnects to the same
   request instead of paying for a new one.
2. **land_replies** writes the CSV whole and records it as an Asset.

Set `tweet_url` to a real tweet when you trigger the DAG; the default is only a placeholder of
the right shape. `<base>` is the Variable `nyne_example_output_base`, else the environment
variable `NYNE_EXAMPLE_OUTPUT_BASE`, else `file:///tmp/nyne-examples`.
""",
) as dag:
    # [START nyne_fetch_replies]
    fetch = NyneSubmitInteractionsOperator(
        task_id="fetch_replies",
        social_media_url="{{ params.tweet_url }}",
        interaction_type="replies",
        max_results="{{ params.max_results }}",
        wait_for_completion=True,
        poll_interval=POLL_INTERVAL,
        timeout=timedelta(hours=1),
    )
    # [END nyne_fetch_replies]
    # [START nyne_land_replies]
    land = NyneInteractionsToObjectStorageOperator(
        task_id="land_replies",
        request_id="{{ ti.xcom_pull(task_ids='fetch_replies', key='request_id') }}",
        path=DESTINATION,
        format="csv",
    )
    # [END nyne_land_replies]
    fetch >> land
