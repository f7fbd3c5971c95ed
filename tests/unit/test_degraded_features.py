"""Features that older supported Airflow versions lack, and the path the provider takes there.

Each test asserts the path taken on the Airflow version it runs on, so the version matrix
(``make matrix``: the lowest supported 3.1 and the newest 3.x) checks both sides:

* ``task_state_store`` (Airflow 3.3+): ``get_task_state_store(context)`` returns the store
  in a real task context, and ``None`` before 3.3, where the operators keep the submitted
  request id in an Airflow Variable instead (``utils/request_state.py``).
* The connection form: Airflow 3.2+ builds it from ``conn-fields``/``ui-field-behaviour``
  in ``get_provider_info()`` (and warns about hooks that only define form methods); 3.1
  builds it from ``NyneHook.get_connection_form_widgets()``/``get_ui_field_behaviour()``.
  Either way the user sees the same form (its contents are checked in
  ``tests/integration/test_provider_install.py``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from packaging.version import Version

from airflow_provider_nyne._compat import get_task_state_store
from airflow_provider_nyne.get_provider_info import CONN_FIELDS

AIRFLOW = Version(importlib.metadata.version("apache-airflow"))
HAS_TASK_STATE_STORE = Version("3.3.0") <= AIRFLOW
FORM_FROM_PROVIDER_INFO = Version("3.2.0") <= AIRFLOW

_STATE_STORE_DAG = """
from __future__ import annotations

import json

import pendulum
from airflow.sdk import dag, get_current_context, task

from airflow_provider_nyne._compat import get_task_state_store
from airflow_provider_nyne.get_provider_info import CONN_FIELDS


@dag(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False)
def probe():
    @task
    def check():
        store = get_task_state_store(get_current_context())
        report = {{"has_store": store is not None, "request_store": None}}
        try:
            from airflow_provider_nyne.utils.request_state import request_state_store
        except ImportError:
            pass
        else:
            report["request_store"] = request_state_store(get_current_context()).kind
        if store is not None:
            store.set("nyne_probe", {{"request_id": "req-123"}})
            report["read_back"] = store.get("nyne_probe")
        with open({out!r}, "w") as handle:
            json.dump(report, handle)

    check()


probe_dag = probe()
"""


def test_task_state_store_in_a_real_task(load_dag: Any, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    dag = load_dag(
        _STATE_STORE_DAG.format(dag_id="nyne_state_store_probe", out=str(out)), "nyne_state_store_probe"
    )
    run = dag.test()
    assert run.state == "success"
    report = json.loads(out.read_text())
    # Where the operators keep a submitted request id across tries (never pay twice).
    request_store = report.pop("request_store")
    if HAS_TASK_STATE_STORE:
        assert report == {"has_store": True, "read_back": {"request_id": "req-123"}}
    else:
        assert report == {"has_store": False}, f"Airflow {AIRFLOW} has no task_state_store"
    if importlib.util.find_spec("airflow_provider_nyne.utils.request_state") is not None:
        assert request_store == ("task_state_store" if HAS_TASK_STATE_STORE else "variable")


@pytest.mark.parametrize(
    "context",
    [
        pytest.param({}, id="key-missing"),
        pytest.param({"task_state_store": None}, id="none"),
        pytest.param({"task_state_store": object()}, id="no-get-set"),
        pytest.param(object(), id="not-a-mapping"),
    ],
)
def test_no_usable_store_means_none(context: Any) -> None:
    assert get_task_state_store(context) is None


# A fresh interpreter: the api-server's form builder replaces wtforms/flask_appbuilder in
# sys.modules with mocks when they are missing, and caches what it found.
_FORM_PROBE = """
import json, warnings

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
    from airflow.providers_manager import ProvidersManager

    meta = {m.connection_type: m for m in HookMetaService.hook_meta_data()}
    widgets = ProvidersManager().connection_form_widgets

nyne = meta.get("nyne")
widget = widgets.get("extra__nyne__timeout")
print(json.dumps({
    "found": nyne is not None,
    "hook_class_name": nyne.hook_class_name if nyne else None,
    "standard_fields": nyne.standard_fields.model_dump() if nyne and nyne.standard_fields else None,
    "extra_fields": nyne.extra_fields if nyne else None,
    "widget_source": None if widget is None else (
        "provider-info" if isinstance(widget.field, dict) else "hook-methods"
    ),
    "warnings": [
        f"{w.category.__name__}: {w.message}" for w in caught
        if "airflow_provider_nyne" in str(w.message) or "airflow_provider_nyne" in (w.filename or "")
    ],
}, default=str))
"""


@pytest.fixture(scope="module")
def connection_form(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """What the api-server's connection form endpoint knows about the ``nyne`` type."""
    cwd = tmp_path_factory.mktemp("form")
    result = subprocess.run(
        [sys.executable, "-c", _FORM_PROBE],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ},
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    (line,) = [ln for ln in result.stdout.splitlines() if ln.startswith('{"found"')]
    return json.loads(line)


def test_connection_form_source_matches_the_airflow_version(connection_form: dict[str, Any]) -> None:
    assert connection_form["found"]
    assert connection_form["hook_class_name"] == "airflow_provider_nyne.hooks.nyne.NyneHook"
    if FORM_FROM_PROVIDER_INFO:
        assert connection_form["widget_source"] == "provider-info"
        # 3.2+ deprecates form methods on hooks; with conn-fields declared they are never called.
        assert connection_form["warnings"] == []
    else:
        assert connection_form["widget_source"] == "hook-methods", f"Airflow {AIRFLOW} ignores conn-fields"
    # Whichever path built it, the form carries every field (contents: test_provider_install.py).
    assert set(connection_form["extra_fields"]) == set(CONN_FIELDS)
    assert connection_form["standard_fields"]["login"]["title"] == "API Key"
