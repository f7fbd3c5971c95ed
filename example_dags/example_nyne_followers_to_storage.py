"""Followers of one profile, landed daily in object storage: submit, wait in the triggerer, write.

Knobs (read when the file is parsed; environment only, so parsing does no I/O):

* ``NYNE_EXAMPLE_OUTPUT_BASE``: default output base (``file:///tmp/nyne-examples``). The
  Airflow Variable ``nyne_example_output_base`` wins over it at run time (``s3://aws_default@bucket/nyne``
  works too, with the ``s3`` extra).
* ``NYNE_EXAMPLE_POLL_INTERVAL``: seconds before the first status poll (default 10; the
  wait backs off from there). Small values suit the local simulator.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator
from airflow_provider_nyne.sensors.interactions import NyneInteractionsSensor
from airflow_provider_nyne.transfers.interactions_to_storage import NyneInteractionsToObjectStorageOperator

OUTPUT_BASE = os.environ.get("NYNE_EXAMPLE_OUTPUT_BASE", "file:///tmp/nyne-examples").rstrip("/")
POLL_INTERVAL = float(os.environ.get("NYNE_EXAMPLE_POLL_INTERVAL", "10"))


def handle(profile_url: str) -> str:
    """The account name at the end of a profile URL (or an ``@name``), safe as a path segment."""
    name = str(profile_url).rstrip("/").rsplit("/", 1)[-1].lstrip("@")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "unknown"


def path_safe(value: str) -> str:
    """A run id such as ``manual__2025-01-01T00:00:00+00:00`` as a portable object key segment."""
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", str(value))


# [START nyne_followers_destination]
# One file per run, partitioned by target and date: re-running a day never clobbers another run.
DESTINATION = (
    "{{ var.value.get('nyne_example_output_base', '" + OUTPUT_BASE + "') }}"
    "/followers/{{ params.profile_url | handle }}"
    "/dt={{ (dag_run.logical_date or dag_run.run_after) | ds }}"
    "/{{ run_id | path_safe }}.jsonl"
)
REQUEST_ID = "{{ ti.xcom_pull(task_ids='submit_followers', key='request_id') }}"
# [END nyne_followers_destination]

with DAG(
    dag_id="example_nyne_followers_to_storage",
    description="Followers of a Twitter/X profile, landed in object storage every day",
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["example", "nyne", "object-storage"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    params={
        "profile_url": Param(
            "https://x.com/ApacheAirflow",
            type="string",
            description="Twitter/X or Instagram profile URL whose followers to fetch",
        ),
        "max_results": Param(100, type="integer", minimum=10, maximum=1000, description="10-1000"),
    },
    user_defined_filters={"handle": handle, "path_safe": path_safe},
    doc_md="""
### Nyne followers to object storage

Fetches the followers of one profile (`profile_url` param, default `https://x.com/ApacheAirflow`)
once a day and lands them as JSON Lines, one file per run:

`<base>/followers/<account>/dt=<YYYY-MM-DD>/<run_id>.jsonl`

1. **submit_followers** validates the input (a bad URL fails here, before any credit is spent)
   and submits the lookup; the request id goes to XCom (`request_id`).
2. **wait_for_followers** defers to the triggerer: no worker slot is held while Nyne works.
3. **land_followers** writes the result whole (never a half-written file) and records the file
   as an Asset, so downstream DAGs can be scheduled on it.

Connection `nyne_default` (type `nyne`): API key as login, API secret as password.
`<base>` is the Variable `nyne_example_output_base`, else the environment variable
`NYNE_EXAMPLE_OUTPUT_BASE`, else `file:///tmp/nyne-examples`.
""",
) as dag:
    # [START nyne_submit_followers]
    submit = NyneSubmitInteractionsOperator(
        task_id="submit_followers",
        social_media_url="{{ params.profile_url }}",
        interaction_type="followers",
        max_results="{{ params.max_results }}",
    )
    # [END nyne_submit_followers]
    # [START nyne_wait_for_followers]
    wait = NyneInteractionsSensor(
        task_id="wait_for_followers",
        request_id=REQUEST_ID,
        poll_interval=POLL_INTERVAL,
        timeout=timedelta(hours=2),
    )
    # [END nyne_wait_for_followers]
    # [START nyne_land_followers]
    land = NyneInteractionsToObjectStorageOperator(
        task_id="land_followers",
        request_id=REQUEST_ID,
        path=DESTINATION,
        format="jsonl",
    )
    # [END nyne_land_followers]
    submit >> wait >> land
