"""Every benchmark's code path at a tiny size, so that ``make bench`` does not rot.

No timing is asserted (benchmarks measure speed, tests do not): only that each table has
its rows and columns and that every waiting task got the right result.
"""

from __future__ import annotations

import pytest

from benchmarks.__main__ import SECTIONS, SIZES, results_markdown, run
from benchmarks._common import Table, machine_info
from benchmarks.parse import PROVIDER_MODULES, example_files

# The repository's own tooling, the same on every Airflow version: run on the source tree only.
pytestmark = pytest.mark.repo

SMALL = SIZES["small"]
FLEET_COLUMNS = [
    "trigger",
    "CPU per status poll",
    "polls per job (mean / max)",
    "detection delay (mean / max)",
    "client CPU in total",
    "peak RSS growth per waiting trigger",
    "longest loop stall",
    "correct events",
]


@pytest.fixture(scope="module")
def tables() -> dict[str, Table]:
    return {table.key: table for table in run(SECTIONS, SMALL, log=lambda _text: None)}


def test_every_section_produces_one_table(tables: dict[str, Table]) -> None:
    assert list(tables) == ["fan_out", "fleet", "fleet_tls", "worker_time", "parse", "schedule"]


@pytest.mark.parametrize(
    ("key", "columns", "rows"),
    [
        pytest.param(
            "fan_out",
            [
                "way of waiting",
                "wall time",
                "vs floor",
                "requests per lookup",
                "429 answers (after the first minute)",
                "failed lookups",
                "duplicate submissions",
                "detection delay p50 / p95",
            ],
            4,
            id="fan-out",
        ),
        pytest.param("fleet", FLEET_COLUMNS, 2, id="fleet"),
        pytest.param("fleet_tls", FLEET_COLUMNS, 2, id="fleet-tls"),
        pytest.param(
            "worker_time",
            [
                "sensor",
                "worker-slot-seconds (all lookups)",
                "per lookup",
                "time to done (mean)",
                "status polls per lookup",
                "task starts per lookup",
                "succeeded",
            ],
            3,
            id="worker-time",
        ),
        pytest.param(
            "parse",
            ["DAG file", "DAGs / tasks", "with the provider", "`EmptyOperator` twin", "overhead"],
            # one row per example DAG, one fresh-interpreter row, one per provider module, then
            # the DAG-facing modules together, all of them together, and an empty module
            max(1, len(example_files())) + 1 + len(PROVIDER_MODULES) + 3,
            id="parse",
        ),
        pytest.param(
            "schedule",
            [
                "schedule",
                "10 s jobs: polls, delay (worst)",
                "1 min jobs: polls, delay (worst)",
                "10 min jobs: polls, delay (worst)",
                "1 h jobs: polls, delay (worst)",
                "polls per hour once settled",
                "waits that fit in 1,000 requests/hour",
            ],
            3,
            id="schedule",
        ),
    ],
)
def test_table_shape(tables: dict[str, Table], key: str, columns: list[str], rows: int) -> None:
    table = tables[key]
    assert table.columns == columns
    assert len(table.rows) == rows
    assert all(len(row) == len(columns) for row in table.rows)
    assert all(cell.strip() for row in table.rows for cell in row)


@pytest.mark.parametrize(
    ("key", "column", "expected"),
    [
        pytest.param("fleet", "correct events", f"{SMALL.fleet}/{SMALL.fleet}", id="fleet-events"),
        pytest.param("fleet_tls", "correct events", f"{SMALL.fleet}/{SMALL.fleet}", id="fleet-tls-events"),
        pytest.param("worker_time", "succeeded", f"{SMALL.worker}/{SMALL.worker}", id="worker-time"),
    ],
)
def test_every_wait_got_the_right_result(
    tables: dict[str, Table], key: str, column: str, expected: str
) -> None:
    assert set(tables[key].column(column)) == {expected}


def test_fan_out_with_the_budget_loses_no_lookup_and_submits_each_once(tables: dict[str, Table]) -> None:
    table = tables["fan_out"]
    labels = table.column("way of waiting")
    assert labels[0].startswith("this provider: one request budget")
    ours = dict(zip(table.columns, table.rows[0], strict=True))
    assert ours["failed lookups"] == f"0/{SMALL.fan_out}"
    assert set(table.column("duplicate submissions")) == {"0"}


@pytest.mark.parametrize("key", ["fleet", "fleet_tls"])
def test_fleet_compares_our_trigger_with_the_http_providers(tables: dict[str, Table], key: str) -> None:
    labels = tables[key].column("trigger")
    assert "NyneInteractionsTrigger" in labels[0]
    assert "HttpEventTrigger" in labels[1]


def test_tls_fleet_is_over_https(tables: dict[str, Table]) -> None:
    assert "over HTTPS" in tables["fleet_tls"].title
    assert any("SSL_CERT_FILE" in note for note in tables["fleet_tls"].notes)


def test_schedule_default_backoff_polls_less_than_fixed_two_seconds(tables: dict[str, Table]) -> None:
    # Computed, not timed: one hour of waiting costs 67 polls with the backoff, 1,800 every 2 s.
    default, fixed_2s, _ = tables["schedule"].rows
    assert default[4].startswith("67.0,")
    assert fixed_2s[4].startswith("1800.")


def test_results_markdown_has_machine_and_tables(tables: dict[str, Table]) -> None:
    info = machine_info()
    text = results_markdown(list(tables.values()), info, 12.0, "make bench")
    for key in ("cores", "cpu", "ram", "python", "apache-airflow", "httpx", "aiohttp"):
        assert f"| {key} |" in text
    for table in tables.values():
        assert f"### {table.title}" in text


def test_parse_table_names_the_provider_modules_a_dag_file_loads(tables: dict[str, Table]) -> None:
    # Measured in the zygote (what a DAG file's imports add to sys.modules), not listed by hand.
    [note] = [n for n in tables["parse"].notes if "provider modules" in n]
    assert "`airflow_provider_nyne.operators.interactions`" in note
    assert "`airflow_provider_nyne.utils.waiting`" in note
    assert "`airflow_provider_nyne.client.http`" not in note  # the client waits for a running task
    assert tables["parse"].rows[-1][0].startswith("10 empty modules")
