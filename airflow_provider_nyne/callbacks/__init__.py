"""Nyne callbacks received inside Airflow: no polling at all.

* :mod:`~airflow_provider_nyne.callbacks.tokens`: capability URLs (correlation id + HMAC token).
* :mod:`~airflow_provider_nyne.callbacks.receiver`: the FastAPI app the api-server mounts at ``/nyne``.
* :mod:`~airflow_provider_nyne.callbacks.service`: what the receiver does with a delivery, independent of HTTP.
* :mod:`~airflow_provider_nyne.callbacks.plugin`: the Airflow plugin that mounts it.
* :mod:`~airflow_provider_nyne.callbacks.store`: the provider's table of received callbacks.
* :mod:`~airflow_provider_nyne.callbacks.db_manager`: that table under ``airflow db migrate``/``reset``.
* :mod:`~airflow_provider_nyne.callbacks.plan`: plan a submission's callback URL (the operator defers on it).
* :mod:`~airflow_provider_nyne.callbacks.assets`: Asset names and helpers for DAGs scheduled on callbacks.
* :mod:`~airflow_provider_nyne.callbacks.dispatch`: the receiver's use of Airflow internals (api-server only).

The trigger a waiting task defers on is :mod:`airflow_provider_nyne.triggers.callbacks`; the
transfer that lands a callback's result is :mod:`airflow_provider_nyne.transfers.callback_to_storage`
(``callbacks.triggers`` and ``callbacks.transfers`` re-export them under their 1.0 paths).

Nothing is imported here, so that importing one module does not pull in the others.
"""

from __future__ import annotations
