"""Provider metadata read by Airflow's providers manager.

This module must not import ``airflow``: the providers manager imports it while Airflow
itself is still initialising.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_nyne import __version__
from airflow_provider_nyne.client.ratelimit import RateLimits

PACKAGE_NAME = "airflow-provider-nyne"
CONN_TYPE = "nyne"
HOOK_CLASS = "airflow_provider_nyne.hooks.nyne.NyneHook"
#: Creates, upgrades and drops the callback receiver's table with ``airflow db migrate``/``reset``.
DB_MANAGER_CLASS = "airflow_provider_nyne.callbacks.db_manager.NyneCallbackDBManager"

#: The ``nyne://`` Asset scheme: Airflow normalises its URIs with the handler (and rejects a
#: malformed one), builds Assets with the factory, and the OpenLineage provider turns them into
#: datasets with the converter (see :mod:`airflow_provider_nyne.assets`).
ASSET_URIS: list[dict[str, Any]] = [
    {
        "schemes": ["nyne"],
        "handler": "airflow_provider_nyne.assets.sanitize_uri",
        "factory": "airflow_provider_nyne.assets.create_asset",
        "to_openlineage_converter": "airflow_provider_nyne.assets.convert_asset_to_openlineage",
    }
]

# What the hook uses when the connection does not say: the timeout and retries are its own
# defaults (tests/unit/test_provider_info.py holds them equal), the rate limits the client's.
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_RETRY_BACKOFF = 1.0
_LIMITS = RateLimits()

#: Extra fields of the ``nyne`` connection (stored in ``Connection.extra``). Each schema's
#: ``default`` is what the hook uses when the field is absent: Airflow 3.2+ starts the form's
#: "Extra Fields JSON" from these values, which would otherwise all be ``null``. An empty string
#: reads as absent.
CONN_FIELDS: dict[str, dict[str, Any]] = {
    "timeout": {
        "label": "Request timeout (seconds)",
        "description": "Seconds to wait for each API answer (default 30).",
        "schema": {"type": ["number", "null"], "minimum": 1, "maximum": 600, "default": DEFAULT_TIMEOUT},
    },
    "max_retries": {
        "label": "Max retries",
        "description": (
            "Retries of a failed status or usage call (429, 5xx, network errors; default 3). "
            "A submission is retried only when it provably did not reach the API."
        ),
        "schema": {"type": ["integer", "null"], "minimum": 0, "maximum": 20, "default": DEFAULT_MAX_RETRIES},
    },
    "retry_backoff": {
        "label": "Retry backoff (seconds)",
        "description": "First delay between retries; it doubles each retry up to 30 s (default 1).",
        "schema": {"type": ["number", "null"], "minimum": 0, "maximum": 60, "default": DEFAULT_RETRY_BACKOFF},
    },
    "rate_limit_per_minute": {
        "label": "Requests per minute",
        "description": (
            "The account's rate limit per minute, polls and submissions together (default 60; 0: no "
            "minute limit). Requests are paced under it per API key; the API's rate-limit headers correct it."
        ),
        "schema": {"type": ["integer", "null"], "minimum": 0, "default": _LIMITS.per_minute or 0},
    },
    "rate_limit_per_hour": {
        "label": "Requests per hour",
        "description": "The account's rate limit per hour (default 1000; 0: no hour limit).",
        "schema": {"type": ["integer", "null"], "minimum": 0, "default": _LIMITS.per_hour or 0},
    },
    "max_in_flight": {
        "label": "Requests in flight",
        "description": "Requests sent at once per API key by one triggerer or worker (default 4; 0: no cap).",
        "schema": {"type": ["integer", "null"], "minimum": 0, "default": _LIMITS.max_in_flight or 0},
    },
    "callback_allowed_hosts": {
        "label": "Allowed callback hosts",
        "description": "Comma-separated host names (or *.domain wildcards) a callback_url may point at.",
        "schema": {"type": ["string", "null"], "default": ""},
    },
    "callback_secret": {
        "label": "Callback signing secret",
        "description": "Secret used to sign callback URLs received by the Airflow api-server.",
        # No default: Airflow's form shows a sensitive default as "***" and an untouched form would
        # save that mask as the secret. The field starts empty (null) and stays unset unless filled.
        "schema": {"type": ["string", "null"], "format": "password"},
    },
}

UI_FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "port"],
    "relabeling": {"login": "API Key", "password": "API Secret", "host": "Base URL"},
    "placeholders": {
        "host": "https://api.nyne.ai",
        "login": "your Nyne API key",
        "password": "your Nyne API secret",
        "extra": '{"timeout": 30, "max_retries": 3}',
    },
}


def _option(description: str, example: str | None = None, *, sensitive: bool = False) -> dict[str, Any]:
    # Defaults stay None: the code applies them, so an unset option and a default one read the same.
    option: dict[str, Any] = {
        "description": description,
        "version_added": "1.0.0",
        "type": "string",
        "example": example,
        "default": None,
    }
    if sensitive:
        option["sensitive"] = True
    return option


#: Options of the ``[nyne]`` configuration section (callback mode and the credit guard).
CONFIG_OPTIONS: dict[str, dict[str, Any]] = {
    "callback_base_url": _option(
        "Public root URL of the Airflow api-server as Nyne reaches it; required for wait_mode='callback'. "
        "Until it is set, the callback receiver answers 404 to everything.",
        "https://airflow.example.com",
    ),
    "callback_secret": _option(
        "Deployment-wide secret that signs callback URLs and the credit guard's requests (recommended); "
        "a nyne connection's own callback_secret extra wins but signs only for that connection's tasks "
        "and nyne:// Assets. Setting it also turns on the credit guard's routes in the api-server.",
        sensitive=True,
    ),
    "callback_internal_url": _option(
        "api-server root as triggerers and workers reach it, for the callback mailbox and the credit "
        "guard (default: the root of [core] execution_api_server_url).",
        "http://airflow-api-server:8080",
    ),
    "callback_max_body_bytes": _option("Largest callback body accepted (default 10485760).", "10485760"),
    "callback_retention_days": _option("Days a received callback is kept (default 7).", "7"),
    "callback_resume_deferred": _option(
        "Whether the receiver resumes a waiting task itself (default True).", "True"
    ),
}


def get_provider_info() -> dict[str, Any]:
    """Describe this provider to Airflow: package, version, connection type and its form, classes."""
    return {
        "package-name": PACKAGE_NAME,
        "name": "Nyne",
        "description": "Nyne Social Interactions API: map who a Twitter/X or Instagram account interacts with.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Nyne",
                "external-doc-url": "https://api.nyne.ai",
                "tags": ["service"],
            }
        ],
        "operators": [
            {
                "integration-name": "Nyne",
                "python-modules": [
                    "airflow_provider_nyne.operators.interactions",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "Nyne",
                "python-modules": ["airflow_provider_nyne.sensors.interactions"],
            }
        ],
        "hooks": [
            {
                "integration-name": "Nyne",
                "python-modules": ["airflow_provider_nyne.hooks.nyne"],
            }
        ],
        "triggers": [
            {
                "integration-name": "Nyne",
                "python-modules": [
                    "airflow_provider_nyne.triggers.interactions",
                    "airflow_provider_nyne.triggers.callbacks",
                ],
            }
        ],
        "transfers": [
            {
                "source-integration-name": "Nyne",
                "target-integration-name": "Common IO",
                "python-module": "airflow_provider_nyne.transfers.interactions_to_storage",
            },
            {
                "source-integration-name": "Nyne",
                "target-integration-name": "Common IO",
                "python-module": "airflow_provider_nyne.transfers.callback_to_storage",
            },
        ],
        "asset-uris": ASSET_URIS,
        # Discovered by Airflow 3.2+; 3.1 needs [database] external_db_managers (docs/callbacks.md, Set-up).
        "db-managers": [DB_MANAGER_CLASS],
        "config": {
            "nyne": {
                "description": "Nyne callbacks and the credit guard, in the api-server.",
                "options": CONFIG_OPTIONS,
            }
        },
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": HOOK_CLASS,
                "hook-name": "Nyne",
                "ui-field-behaviour": UI_FIELD_BEHAVIOUR,
                "conn-fields": CONN_FIELDS,
            }
        ],
    }
