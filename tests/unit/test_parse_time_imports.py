"""What a DAG file loads from the provider when it is parsed.

The DAG processor imports the operator modules (and the callback transfer) on every parse, so they load only what
building the tasks needs (argument defaults and checks); the hook, the HTTP client, the
waiting helpers, the writers and the callback machinery load when a task runs. The
benchmark's parse table (``make bench``) measures the time; this test keeps the list from
growing unnoticed.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import airflow_provider_nyne

# The package under test (the source tree, or the installed wheel in the version matrix).
PACKAGE = Path(airflow_provider_nyne.__file__).resolve().parent

# Loaded when the DAG-facing modules are imported (packages included).
PARSE_TIME_MODULES = {
    "airflow_provider_nyne",
    "airflow_provider_nyne._compat",
    "airflow_provider_nyne.client",
    "airflow_provider_nyne.client.schedule",
    "airflow_provider_nyne.operators",
    "airflow_provider_nyne.operators.interactions",
    "airflow_provider_nyne.sensors",
    "airflow_provider_nyne.sensors.interactions",
    "airflow_provider_nyne.transfers",
    "airflow_provider_nyne.transfers.callback_to_storage",
    "airflow_provider_nyne.transfers.interactions_to_storage",
    "airflow_provider_nyne.utils",
    "airflow_provider_nyne.utils.arguments",
    "airflow_provider_nyne.utils.waiting",
}

_CHILD = """
import json, sys
import airflow_provider_nyne.operators.interactions as o
import airflow_provider_nyne.sensors.interactions as s
import airflow_provider_nyne.transfers.interactions_to_storage as t
import airflow_provider_nyne.transfers.callback_to_storage as c

loaded = sorted(m for m in sys.modules if m.startswith("airflow_provider_nyne"))
# Building tasks with their checks (poll schedule, wait mode, format, timeout) loads nothing more.
o.NyneSubmitInteractionsOperator(task_id="submit", username="nasa", interaction_type="followers",
                                 wait_for_completion=True, wait_mode="poll", timeout=60)
s.NyneInteractionsSensor(task_id="wait", request_id="r", poll_interval=5, max_poll_interval=30)
t.NyneInteractionsToObjectStorageOperator(task_id="land", request_id="r", path="file:///tmp/x.csv",
                                          format="csv", timeout=60)
c.NyneCallbackResultToObjectStorageOperator(task_id="land_callback", path="file:///tmp/{{ run_id }}.jsonl")
after = sorted(m for m in sys.modules if m.startswith("airflow_provider_nyne"))
print(json.dumps({"imported": loaded, "after_tasks": after, "pyarrow": "pyarrow" in sys.modules}))
"""


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {**os.environ, "AIRFLOW_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-c", _CHILD],
        capture_output=True,
        text=True,
        env=env,
        cwd=home,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_importing_the_operator_modules_loads_only_what_parsing_needs(loaded: dict[str, object]) -> None:
    imported = set(loaded["imported"])  # type: ignore[call-overload]
    # Airflow itself may read the provider's metadata (its version decides when), and with it
    # the rate-limit defaults the connection form shows.
    imported -= {"airflow_provider_nyne.get_provider_info", "airflow_provider_nyne.client.ratelimit"}
    assert imported == PARSE_TIME_MODULES


def test_building_tasks_loads_nothing_more(loaded: dict[str, object]) -> None:
    assert loaded["after_tasks"] == loaded["imported"]
    assert loaded["pyarrow"] is False


DAG_FACING = (
    "operators/interactions.py",
    "sensors/interactions.py",
    "transfers/interactions_to_storage.py",
    "transfers/callback_to_storage.py",
)


def test_names_imported_inside_methods_exist() -> None:
    # The imports deferred to run time are not exercised by parsing: check each one resolves.
    checked = 0
    for relative in DAG_FACING:
        tree = ast.parse((PACKAGE / relative).read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and node.module:
                    module = importlib.import_module(node.module)
                    for alias in node.names:
                        found = hasattr(module, alias.name) or importlib.util.find_spec(
                            f"{node.module}.{alias.name}"
                        )
                        assert found, f"{relative}: from {node.module} import {alias.name}"
                        checked += 1
    assert checked > 20


def test_client_package_loads_its_names_on_first_use() -> None:
    child = """
import json, sys
import airflow_provider_nyne.client as client
before = "airflow_provider_nyne.client.http" in sys.modules
names = {name: getattr(client, name).__module__ if hasattr(getattr(client, name), "__module__") else None
         for name in client.__all__}
print(json.dumps({"http_before": before, "names": names, "dir": sorted(set(client.__all__) - set(dir(client)))}))
"""
    done = subprocess.run(
        [sys.executable, "-c", child], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["http_before"] is False
    assert result["dir"] == []
    assert result["names"]["NyneClient"] == "airflow_provider_nyne.client.http"
    assert result["names"]["JobState"] == "airflow_provider_nyne.client.models"
    assert result["names"]["InteractionRequest"] == "airflow_provider_nyne.client.request"
    assert result["names"]["NyneError"] == "airflow_provider_nyne.client.errors"
    assert result["names"]["RateLimits"] == "airflow_provider_nyne.client.ratelimit"
    assert result["names"]["RequestBudget"] == "airflow_provider_nyne.client.budget"
    assert len(result["names"]) == 23
