"""The Airflow plugin that mounts the Nyne callback receiver in the api-server under ``/nyne``.

Registered through the ``airflow.plugins`` entry point of this package, so installing the
provider is enough: no file in the plugins folder. Airflow loads plugins in many processes
(scheduler, workers, ...); only the api-server reads ``fastapi_apps``, so the receiver (and
FastAPI) is imported on that first read and nowhere else.
"""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_nyne.callbacks.tokens import URL_PREFIX

__all__ = ["NynePlugin", "fastapi_app_spec"]

_APP: list[dict[str, Any]] = []


def fastapi_app_spec() -> list[dict[str, Any]]:
    """The ``fastapi_apps`` entry: one receiver app per process, built on first use."""
    if not _APP:
        from airflow_provider_nyne.callbacks.receiver import create_app

        _APP.append({"app": create_app(), "url_prefix": URL_PREFIX, "name": "Nyne callbacks"})
    return list(_APP)


class NynePlugin(AirflowPlugin):
    """Mounts the Nyne callback receiver (``/nyne/v1/callback/...``, ``/nyne/health``) in the api-server."""

    name = "nyne"

    @property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The receiver app, mounted under ``/nyne``."""
        return fastapi_app_spec()
