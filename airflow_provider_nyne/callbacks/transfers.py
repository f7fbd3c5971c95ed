"""Where the callback transfer lived in 1.0; it is now in :mod:`airflow_provider_nyne.transfers.callback_to_storage`.

Kept (without a warning: DAG test suites run with ``-W error``) so that DAG files written
for 1.0 keep importing it from here.
"""

from __future__ import annotations

from airflow_provider_nyne.transfers.callback_to_storage import NyneCallbackResultToObjectStorageOperator

__all__ = ["NyneCallbackResultToObjectStorageOperator"]
