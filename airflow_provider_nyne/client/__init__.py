"""Pure-Python client of the Nyne Social Interactions API (no Airflow imports).

The names below are loaded on first use: importing one submodule (say, the polling
schedule an operator checks when its DAG file is parsed) does not load the HTTP client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_nyne.client.auth import Credentials
    from airflow_provider_nyne.client.budget import RequestBudget
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
    from airflow_provider_nyne.client.http import DEFAULT_BASE_URL, AsyncNyneClient, NyneClient
    from airflow_provider_nyne.client.models import Interaction, InteractionsResult, JobState, JobStatus
    from airflow_provider_nyne.client.ratelimit import RateLimits
    from airflow_provider_nyne.client.request import InteractionRequest
    from airflow_provider_nyne.client.retry import RetryPolicy

#: Where the names of ``__all__`` are defined, searched in this order (cheapest first).
_SUBMODULES = ("errors", "ratelimit", "retry", "auth", "models", "request", "budget", "http")

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
    "RateLimits",
    "RequestBudget",
    "RetryPolicy",
]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    for submodule in _SUBMODULES:
        module = importlib.import_module(f"{__name__}.{submodule}")
        if hasattr(module, name):
            value = getattr(module, name)
            globals()[name] = value
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")  # pragma: no cover


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
