"""``callbacks.transfers`` keeps DAG files written for 1.0 importing the callback transfer."""

from __future__ import annotations

from airflow_provider_nyne.callbacks import transfers as old
from airflow_provider_nyne.transfers.callback_to_storage import NyneCallbackResultToObjectStorageOperator


def test_old_path_is_the_same_class() -> None:
    assert old.NyneCallbackResultToObjectStorageOperator is NyneCallbackResultToObjectStorageOperator
    assert old.__all__ == ["NyneCallbackResultToObjectStorageOperator"]
