"""Nyne callbacks received inside Airflow: no polling at all.

* :mod:`~airflow_provider_nyne.callbacks.tokens`: capability URLs (correlation id + HMAC token).
* :mod:`~airflow_provider_nyne.callbacks.receiver`: the FastAPI app the api-server mounts at ``/nyne``.
* :mod:`~airflow_provider_nyne.callbacks.plugin`: the Airflow plugin that mounts it.
* :mod:`~airflow_provider_nyne.callbacks.store`: the provider's table of received callbacks.
* :mod:`~airflow_provider_nyne.callbacks.triggers`: :class:`NyneCallbackTrigger` for tasks that wait.
* :mod:`~airflow_provider_nyne.callbacks.defer`: submit with a callback URL and defer on it.
* :mod:`~airflow_provider_nyne.callbacks.assets`: Asset names and helpers for DAGs scheduled on callbacks.
* :mod:`~airflow_provider_nyne.callbacks.transfers`: land a callback's result in object storage (no API call).
* :mod:`~airflow_provider_nyne.callbacks.dispatch`: the receiver's use of Airflow internals (api-server only).

Nothing is imported here, so that importing one module does not pull in the others.
"""

from __future__ import annotations
