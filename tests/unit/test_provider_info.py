"""Provider metadata: what Airflow's providers manager reads from ``get_provider_info()``."""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest

import airflow_provider_nyne
from airflow_provider_nyne.get_provider_info import CONN_FIELDS, UI_FIELD_BEHAVIOUR, get_provider_info

DIST = "airflow-provider-nyne"


def test_package_name_and_version_match_the_distribution() -> None:
    info = get_provider_info()
    dist = importlib.metadata.distribution(DIST)
    assert info["package-name"] == dist.metadata["Name"] == DIST
    assert info["versions"] == [airflow_provider_nyne.__version__]
    assert dist.version == airflow_provider_nyne.__version__


def test_entry_point_is_registered() -> None:
    (entry,) = [
        ep for ep in importlib.metadata.entry_points(group="apache_airflow_provider") if ep.dist.name == DIST
    ]
    assert entry.value == "airflow_provider_nyne.get_provider_info:get_provider_info"
    assert entry.load() is get_provider_info


def test_info_validates_against_airflow_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import airflow

    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_connection_type() -> None:
    (conn_type,) = get_provider_info()["connection-types"]
    assert conn_type["connection-type"] == "nyne"
    assert conn_type["hook-name"] == "Nyne"
    module, _, name = conn_type["hook-class-name"].rpartition(".")
    hook_class = getattr(importlib.import_module(module), name)
    assert hook_class.conn_type == "nyne"
    assert conn_type["conn-fields"] is CONN_FIELDS
    # The declarative form (3.2+) and the hook methods (3.1) describe the same form.
    assert conn_type["ui-field-behaviour"] == {
        "hidden-fields": hook_class.get_ui_field_behaviour()["hidden_fields"],
        "relabeling": hook_class.get_ui_field_behaviour()["relabeling"],
        "placeholders": hook_class.get_ui_field_behaviour()["placeholders"],
    }
    assert UI_FIELD_BEHAVIOUR["relabeling"] == {
        "login": "API Key",
        "password": "API Secret",
        "host": "Base URL",
    }


def test_conn_fields_are_the_extras_the_hook_reads() -> None:
    assert list(CONN_FIELDS) == [
        "timeout",
        "max_retries",
        "retry_backoff",
        "rate_limit_per_minute",
        "rate_limit_per_hour",
        "max_in_flight",
        "callback_allowed_hosts",
        "callback_secret",
    ]
    for name, spec in CONN_FIELDS.items():
        assert spec["label"], name
        assert spec["description"], name
        assert "null" in spec["schema"]["type"], f"{name} must be optional"
    assert CONN_FIELDS["callback_secret"]["schema"]["format"] == "password"


def test_every_listed_module_imports() -> None:
    info = get_provider_info()
    modules = [
        m
        for kind in ("operators", "sensors", "hooks", "triggers")
        for entry in info[kind]
        for m in entry["python-modules"]
    ]
    modules += [entry["python-module"] for entry in info["transfers"]]
    for module in modules:
        importlib.import_module(module)


def test_module_does_not_import_airflow() -> None:
    code = (
        "import sys\n"
        "from airflow_provider_nyne.get_provider_info import get_provider_info\n"
        "info = get_provider_info()\n"
        "assert info['package-name'] == 'airflow-provider-nyne'\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def _settings(extra: dict[str, object]) -> object:
    from types import SimpleNamespace

    from airflow_provider_nyne.hooks.nyne import settings_from_connection

    conn = SimpleNamespace(
        conn_id="nyne_form", login="key", password="secret", host=None, port=None, extra_dejson=extra
    )
    return settings_from_connection(conn)


def test_form_defaults_are_what_the_hook_uses_without_extras() -> None:
    """A connection saved from an untouched form reads exactly like one with no extras at all."""
    defaults = {name: spec["schema"].get("default") for name, spec in CONN_FIELDS.items()}
    # Only the secret starts empty: Airflow's form would show a sensitive default as "***" and an
    # untouched form would save that mask as the signing secret.
    assert [name for name, value in defaults.items() if value is None] == ["callback_secret"]
    assert _settings(defaults) == _settings({})


def test_connection_form_starts_with_the_defaults_not_nulls() -> None:
    """What Airflow 3.2+'s UI seeds "Extra Fields JSON" with: each field's value, here the hook's default."""
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    if not hasattr(manager, "_connection_form_widgets_from_metadata"):
        pytest.skip("Airflow 3.1 builds the form from the hook's methods, not from conn-fields")
    from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService

    fields = HookMetaService._convert_extra_fields(manager._connection_form_widgets_from_metadata)["nyne"]
    values = {name: field["value"] for name, field in fields.items()}
    assert values == {name: spec["schema"].get("default") for name, spec in CONN_FIELDS.items()}
    assert [name for name, value in values.items() if value is None] == ["callback_secret"]
