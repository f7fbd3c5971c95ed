from __future__ import annotations

from importlib.metadata import entry_points

from fastapi import FastAPI

from airflow_provider_nyne.callbacks.plugin import NynePlugin


def test_plugin_is_registered_through_the_airflow_plugins_entry_point() -> None:
    found = [ep for ep in entry_points(group="airflow.plugins") if ep.name == "nyne"]
    assert [ep.value for ep in found] == ["airflow_provider_nyne.callbacks.plugin:NynePlugin"]
    assert found[0].load() is NynePlugin


def test_plugin_mounts_the_receiver_under_nyne() -> None:
    [spec] = NynePlugin().fastapi_apps
    assert spec["url_prefix"] == "/nyne"
    assert isinstance(spec["app"], FastAPI)
    paths = {route.path for route in spec["app"].routes}
    assert {"/health", "/v1/callback/{correlation_id}/{token}"} <= paths
    assert NynePlugin().fastapi_apps[0]["app"] is spec["app"]  # one app per process
