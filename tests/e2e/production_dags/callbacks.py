"""Callback-mode lookups for the production-shaped deployment tests.

* ``prod_callback_deferred``: four mapped lookups that defer until their callback (no
  polling); ``hold`` usernames, so each is waiting in a triggerer when the test releases it.
* ``prod_callback_producer``: two lookups in asset mode (the task returns once submitted);
  each callback records an event on ``nyne://interactions/twitter/<username>/followers``.
* ``prod_callback_consumer_<username>``: scheduled on that Asset, lands the result the
  receiver stored under ``$NYNE_PRODUCTION_OUTPUT/<username>/<run_id>.jsonl``.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from airflow_provider_nyne.callbacks.assets import interactions_asset
from airflow_provider_nyne.callbacks.transfers import NyneCallbackResultToObjectStorageOperator
from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator

START = pendulum.datetime(2025, 1, 1, tz="UTC")
OUTPUT = os.environ.get("NYNE_PRODUCTION_OUTPUT", "file:///tmp/nyne-production").rstrip("/")
DEFERRED = [f"holdcb{n}" for n in range(4)]
ASSET_MODE = ["cbasset_a", "cbasset_b"]

with DAG("prod_callback_deferred", schedule=None, start_date=START, catchup=False):
    NyneSubmitInteractionsOperator.partial(
        task_id="submit",
        interaction_type="followers",
        wait_for_completion=True,
        wait_mode="callback",
        timeout=600,
    ).expand(username=DEFERRED)

with DAG("prod_callback_producer", schedule=None, start_date=START, catchup=False):
    NyneSubmitInteractionsOperator.partial(
        task_id="submit", interaction_type="followers", wait_mode="callback"
    ).expand(username=ASSET_MODE)

for username in ASSET_MODE:
    with DAG(
        f"prod_callback_consumer_{username}",
        schedule=[interactions_asset(username=username, type="followers")],
        start_date=START,
        catchup=False,
    ):
        NyneCallbackResultToObjectStorageOperator(
            task_id="land",
            path=f"{OUTPUT}/{username}/{{{{ run_id }}}}.jsonl",
            fallback_to_api=False,
        )
