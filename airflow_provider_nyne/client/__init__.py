"""Pure-Python client of the Nyne Social Interactions API (no Airflow imports).

The names below are loaded on first use: importing one submodule (say, the polling
schedule an operator checks when its DAG file is parsed) does not load the HTTP client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_nyne.client.errors import (
        NyneAuthError,
        NyneCreditsError,
        NyneError,
        NyneForbiddenError,
        NyneJobFailedError,
        NyneNotFoundError,
        NyneRateLimitError,
        NyneResponseError,
        NyneServerError,
        NyneTransportError,
        NyneValidationError,
    )
    from airflow_provider_nyne.client.http import (
        DEFAULT_BASE_URL,
        AsyncNyneClient,
        Credentials,
        NyneClient,
        RetryPolicy,
    )
    from airflow_provider_nyne.client.models import Interaction, InteractionsResult, JobState, JobStatus
    from airflow_provider_nyne.client.request import InteractionRequest

#: Public name -> the submodule defining it.
_EXPORTS = {
    **dict.fromkeys(
        (
            "NyneAuthError",
            "NyneCreditsError",
            "NyneError",
            "NyneForbiddenError",
            "NyneJobFailedError",
            "NyneNotFoundError",
            "NyneRateLimitError",
            "NyneResponseError",
            "NyneServerError",
            "NyneTransportError",
            "NyneValidationError",
        ),
        "errors",
    ),
    **dict.fromkeys(
        ("DEFAULT_BASE_URL", "AsyncNyneClient", "Credentials", "NyneClient", "RetryPolicy"), "http"
    ),
    **dict.fromkeys(("Interaction", "InteractionsResult", "JobState", "JobStatus"), "models"),
    "InteractionRequest": "request",
}

__all__ = [
    "DEFAULT_BASE_URL",
    "AsyncNyneClient",
    "Credentials",
    "Interaction",
    "InteractionRequest",
    "InteractionsResult",
    "JobState",
    "JobStatus",
    "NyneAuthError",
    "NyneClient",
    "NyneCreditsError",
    "NyneError",
    "NyneForbiddenError",
    "NyneJobFailedError",
    "NyneNotFoundError",
    "NyneRateLimitError",
    "NyneResponseError",
    "NyneServerError",
    "NyneTransportError",
    "NyneValidationError",
    "RetryPolicy",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
