"""Pure-Python client of the Nyne Social Interactions API (no Airflow imports)."""

from __future__ import annotations

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
