"""Followers of many profiles in one weekly run: one mapped lookup per profile, paced by the API's rate limit.

Every lookup submits, then waits in the triggerer; all of them share the API key's request
budget (the ``nyne`` connection's ``rate_limit_per_minute``/``rate_limit_per_hour`` extras,
defaults 60 and 1,000, corrected by the API's rate-limit headers), so hundreds of lookups run
at the pace the account allows and none fails on a 429. No pool is needed for that.

Credits: the planning task reads the account's balance (the free ``GET /usage``) and fails
the run before anything is mapped when it does not cover 3 credits per profile plus the
``min_credit_balance`` param. The ``credit_budget`` param (credits, empty for none) caps what
the run's lookups may spend, enforced by the provider's plugin in the api-server (it needs
``[nyne] callback_secret`` on the workers and the api-server).

Knobs (environment, read at parse time without I/O): ``NYNE_EXAMPLE_OUTPUT_BASE`` (default
``file:///tmp/nyne-examples``; the Variable ``nyne_example_output_base`` wins at run time),
``NYNE_EXAMPLE_POLL_INTERVAL`` (seconds before the first status poll, default 10).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, get_current_context, task

from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator
from airflow_provider_nyne.transfers.interactions_to_storage import NyneInteractionsToObjectStorageOperator

OUTPUT_BASE = os.environ.get("NYNE_EXAMPLE_OUTPUT_BASE", "file:///tmp/nyne-examples").rstrip("/")
POLL_INTERVAL = float(os.environ.get("NYNE_EXAMPLE_POLL_INTERVAL", "10"))


def _segment(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", str(value)) or "unknown"


def _handle(profile_url: str) -> str:
    return _segment(str(profile_url).rstrip("/").rsplit("/", 1)[-1].lstrip("@"))


def _submit_kwargs(target: dict[str, Any]) -> dict[str, Any]:
    """The lookup fields of one planned target."""
    return {"social_media_url": target["url"], "max_results": target["max_results"]}


def _land_kwargs(pair: tuple[dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    """Pair each finished lookup with the destination planned for its target."""
    summary, target = pair
    return {"request_id": summary["request_id"], "path": target["path"]}


with DAG(
    dag_id="example_nyne_fan_out",
    description="Followers of a list of profiles, one mapped lookup per profile, at the pace the API allows",
    schedule="@weekly",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["example", "nyne", "dynamic-task-mapping"],
    default_args={"retries": 2, "retry_delay": timedelta(minutes=2)},
    params={
        "profiles": Param(
            ["https://x.com/ApacheAirflow", "https://x.com/astronomerio", "https://x.com/dagster"],
            type="array",
            items={"type": "string"},
            minItems=1,
            description="Twitter/X or Instagram profile URLs: one lookup each",
        ),
        "max_results": Param(100, type="integer", minimum=10, maximum=1000, description="10-1000"),
        "min_credit_balance": Param(
            0, type="integer", minimum=0, description="credits that must remain after the whole fan-out"
        ),
        "credit_budget": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            description="credits this run's lookups may spend in all (3 each); empty: no cap",
        ),
    },
    doc_md="""
### Nyne fan-out: many profiles, one run

Maps one followers lookup over every profile URL in the `profiles` param (edit it when you
trigger the DAG), lands each result in its own file and reports the counts:

`<base>/fan_out/dt=<YYYY-MM-DD>/<run_id>/<account>.jsonl`

* **plan_targets** de-duplicates the list, decides each destination, and checks that the
  account's balance covers the whole fan-out (3 credits a profile, plus `min_credit_balance`)
  before anything is mapped: reading the balance is free, a refused run costs nothing.
* **lookup** / **land** are mapped: one instance per profile. Each lookup submits, then waits in
  the triggerer (no worker slot held). Every request of every lookup takes its turn in the API
  key's request budget (60/minute and 1,000/hour unless the connection says otherwise), so the
  fan-out runs at the pace the account allows, and a `429` never fails a lookup.
* **report** logs a table of records per profile and returns the totals.

Set `credit_budget` to cap what one run may spend, even when runs overlap: each lookup
reserves its 3 credits at the Airflow api-server before it submits, and a lookup past the
budget fails without sending anything.

`<base>` is the Variable `nyne_example_output_base`, else the environment variable
`NYNE_EXAMPLE_OUTPUT_BASE`, else `file:///tmp/nyne-examples`.
""",
) as dag:

    @task
    def plan_targets() -> list[dict[str, Any]]:
        """One entry per distinct profile (from the ``profiles`` param): its URL and destination."""
        from airflow.sdk import Variable

        context = get_current_context()
        params = context["params"]
        base = Variable.get("nyne_example_output_base", default=OUTPUT_BASE).rstrip("/")
        run_date = (context.get("logical_date") or context["dag_run"].run_after).strftime("%Y-%m-%d")
        prefix = f"{base}/fan_out/dt={run_date}/{_segment(context['run_id'])}"
        seen: dict[str, dict[str, Any]] = {}
        for raw in params["profiles"]:
            url = str(raw).strip()
            if url and url not in seen:
                path = f"{prefix}/{_handle(url)}.jsonl"
                seen[url] = {"url": url, "max_results": int(params["max_results"]), "path": path}
        # [START nyne_fan_out_balance]
        from airflow_provider_nyne.utils.credits import require_balance_for

        balance = require_balance_for(len(seen), minimum=int(params["min_credit_balance"]))
        # [END nyne_fan_out_balance]
        print(f"Balance {balance} credits covers {len(seen)} lookups of up to 3 credits each")
        return list(seen.values())

    targets = plan_targets()

    # [START nyne_fan_out_lookups]
    lookup = NyneSubmitInteractionsOperator.partial(
        task_id="lookup",
        interaction_type="followers",
        wait_for_completion=True,
        poll_interval=POLL_INTERVAL,
        timeout=timedelta(hours=2),
        credit_budget="{{ params.credit_budget }}",  # "None" when empty: no cap
    ).expand_kwargs(targets.map(_submit_kwargs))

    land = NyneInteractionsToObjectStorageOperator.partial(task_id="land", format="jsonl").expand_kwargs(
        lookup.output.zip(targets).map(_land_kwargs)
    )
    # [END nyne_fan_out_lookups]

    @task
    def report(landed: list[dict[str, Any]]) -> dict[str, Any]:
        """Log records per profile and return the totals."""
        rows = [(str(item["uri"]).rsplit("/", 1)[-1], int(item["records"])) for item in landed]
        width = max([len(name) for name, _ in rows] + [7])
        lines = [f"{'profile':<{width}}  records", *(f"{name:<{width}}  {count:>7}" for name, count in rows)]
        print("\n".join(lines))
        return {"targets": len(rows), "records": sum(count for _, count in rows)}

    report(land.output)
