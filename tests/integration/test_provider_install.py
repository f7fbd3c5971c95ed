"""The installed provider as Airflow itself sees it: CLI commands in fresh processes.

Runs the venv's own ``airflow`` (so the same test checks 3.1 and 3.3, whichever venv runs
pytest) with a throwaway ``AIRFLOW_HOME``, plus the api-server's connection-form service
(``HookMetaService``, what the UI's connection form is built from) with FAB mocked the way the
api-server mocks it when FAB is not installed. Deprecation warnings are switched on in every
process, and none may be about how this provider declares its connection form.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import airflow_provider_nyne

pytestmark = pytest.mark.integration

AIRFLOW = str(Path(sys.executable).with_name("airflow"))

UI_FORM_SCRIPT = r"""
import json, warnings
warnings.simplefilter("default")
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

from airflow import __version__

# The form the UI shows. On 3.1 this imports the hooks under mocked FAB (possible once per
# process); on 3.2+ it reads provider info, so the mocked-FAB hook import is run as well: it is
# where a provider without declarative metadata gets its deprecation warnings.
(meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == "nyne"]
if tuple(int(p) for p in __version__.split(".")[:2]) >= (3, 2):
    hooks, widgets, behaviours = HookMetaService._get_hooks_with_mocked_fab()
    hook = hooks["nyne"].hook_class_name if hooks.get("nyne") else None
    behaviour = behaviours.get("nyne")
else:
    hook, behaviour = meta.hook_class_name, None
print(json.dumps({"hook": hook, "behaviour": behaviour, "form": meta.model_dump(mode="json")}))
"""

FORM_DEPRECATIONS = (
    "get_connection_form_widgets",
    "get_ui_field_behaviour",
    "conn-fields",
    "ui-field-behaviour",
)


def airflow_version() -> tuple[int, int]:
    from airflow import __version__

    major, minor = __version__.split(".")[:2]
    return int(major), int(minor)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """Run every command once, concurrently (each is a cold Airflow start)."""
    home = tmp_path_factory.mktemp("airflow-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__"))}
    env.update(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(home / "dags"),
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        PYTHONWARNINGS="default",
    )
    commands = {
        "get": [AIRFLOW, "providers", "get", "airflow-provider-nyne", "-o", "json"],
        "hooks": [AIRFLOW, "providers", "hooks", "-o", "json"],
        "ui-form": [sys.executable, "-c", UI_FORM_SCRIPT],
    }
    if airflow_version() >= (3, 2):
        commands["behaviours"] = [AIRFLOW, "providers", "behaviours", "-o", "json"]
        commands["widgets"] = [AIRFLOW, "providers", "widgets", "-o", "json"]
    procs = {
        name: subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, cmd in commands.items()
    }
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, f"{name} failed:\n{err[-3000:]}"
        results[name] = (out, err)
    return results


def json_out(outputs: dict[str, tuple[str, str]], name: str) -> Any:
    out = outputs[name][0]
    return json.loads(out[out.index("[") :] if name != "ui-form" else out[out.index("{") :])


def test_providers_get_shows_name_and_version(outputs: dict[str, tuple[str, str]]) -> None:
    assert json_out(outputs, "get") == [
        {"Provider": "airflow-provider-nyne", "Version": airflow_provider_nyne.__version__}
    ]


def test_providers_hooks_lists_the_nyne_connection_type(outputs: dict[str, tuple[str, str]]) -> None:
    rows = [r for r in json_out(outputs, "hooks") if r.get("connection_type") == "nyne"]
    assert rows == [
        {
            "connection_type": "nyne",
            "class": "airflow_provider_nyne.hooks.nyne.NyneHook",
            "conn_id_attribute_name": "nyne_conn_id",
            "package_name": "airflow-provider-nyne",
            "hook_name": "Nyne",
        }
    ]


def test_cli_behaviours_and_widgets(outputs: dict[str, tuple[str, str]]) -> None:
    if airflow_version() < (3, 2):
        # 3.1 builds these two lists from hook methods that need FAB (not installed here); its UI
        # uses the mocked-FAB path instead, checked in test_ui_connection_form.
        pytest.skip("Airflow 3.1's CLI lists connection forms only when flask-appbuilder is installed")
    assert {"field_behaviours": "nyne"} in json_out(outputs, "behaviours")
    widgets = {
        r["connection_parameter_name"]: r
        for r in json_out(outputs, "widgets")
        if "__nyne__" in r["connection_parameter_name"]
    }
    assert {name: (r["class"], r["field_type"]) for name, r in widgets.items()} == {
        "extra__nyne__timeout": ("airflow_provider_nyne.hooks.nyne.NyneHook", ["number", "null"]),
        "extra__nyne__max_retries": ("airflow_provider_nyne.hooks.nyne.NyneHook", ["integer", "null"]),
        "extra__nyne__retry_backoff": ("airflow_provider_nyne.hooks.nyne.NyneHook", ["number", "null"]),
        "extra__nyne__rate_limit_per_minute": (
            "airflow_provider_nyne.hooks.nyne.NyneHook",
            ["integer", "null"],
        ),
        "extra__nyne__rate_limit_per_hour": (
            "airflow_provider_nyne.hooks.nyne.NyneHook",
            ["integer", "null"],
        ),
        "extra__nyne__max_in_flight": ("airflow_provider_nyne.hooks.nyne.NyneHook", ["integer", "null"]),
        "extra__nyne__callback_allowed_hosts": (
            "airflow_provider_nyne.hooks.nyne.NyneHook",
            ["string", "null"],
        ),
        "extra__nyne__callback_secret": ("airflow_provider_nyne.hooks.nyne.NyneHook", ["string", "null"]),
    }


def test_ui_connection_form(outputs: dict[str, tuple[str, str]]) -> None:
    data = json_out(outputs, "ui-form")
    assert data["hook"] == "airflow_provider_nyne.hooks.nyne.NyneHook"
    if data["behaviour"] is not None:  # 3.2+: the providers manager's own view
        relabeling = data["behaviour"]["relabeling"]
        assert relabeling == {"login": "API Key", "password": "API Secret", "host": "Base URL"}
    form = data["form"]
    assert form["hook_name"] == "Nyne"
    standard = form["standard_fields"]
    assert (standard["login"]["title"], standard["password"]["title"], standard["host"]["title"]) == (
        "API Key",
        "API Secret",
        "Base URL",
    )
    assert standard["host"]["placeholder"] == "https://api.nyne.ai"
    assert standard["port"]["hidden"] is True
    assert standard["url_schema"]["hidden"] is True
    extra = form["extra_fields"]
    assert list(extra) == [
        "timeout",
        "max_retries",
        "retry_backoff",
        "rate_limit_per_minute",
        "rate_limit_per_hour",
        "max_in_flight",
        "callback_allowed_hosts",
        "callback_secret",
    ]
    titles = {name: field["schema"]["title"] for name, field in extra.items()}
    assert titles == {
        "timeout": "Request timeout (seconds)",
        "max_retries": "Max retries",
        "retry_backoff": "Retry backoff (seconds)",
        "rate_limit_per_minute": "Requests per minute",
        "rate_limit_per_hour": "Requests per hour",
        "max_in_flight": "Requests in flight",
        "callback_allowed_hosts": "Allowed callback hosts",
        "callback_secret": "Callback signing secret",
    }
    assert extra["callback_secret"]["schema"]["format"] == "password"
    assert "integer" in extra["max_retries"]["schema"]["type"]


def test_no_deprecation_warning_about_the_connection_form(outputs: dict[str, tuple[str, str]]) -> None:
    for name, (_, err) in outputs.items():
        for needle in FORM_DEPRECATIONS:
            offending = [line for line in err.splitlines() if needle in line and "nyne" in line.lower()]
            assert offending == [], f"{name}: {offending}"
        warned = [line for line in err.splitlines() if "airflow_provider_nyne" in line and "Warning" in line]
        assert warned == [], f"{name} warned about this provider: {warned}"
