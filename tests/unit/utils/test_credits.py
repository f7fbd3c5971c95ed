"""utils.credits: the balance floor, and the task's client of the api-server's credit guard over real sockets."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import create_engine

from airflow_provider_nyne.callbacks import store
from airflow_provider_nyne.callbacks.receiver import create_app
from airflow_provider_nyne.callbacks.service import CallbackService
from airflow_provider_nyne.callbacks.tokens import URL_PREFIX
from airflow_provider_nyne.utils.credits import (
    CreditGuardError,
    CreditLimitError,
    CreditReservations,
    ReservationKey,
    balance_from_usage,
    check_balance,
)
from tests.fixtures.airflow_processes import free_port
from tests.fixtures.asgi import serve
from tests.unit.callbacks.conftest import SECRET, FakeBackend


@pytest.mark.parametrize(
    ("usage", "balance"),
    [
        pytest.param({"credits_remaining": 42}, 42, id="credits_remaining"),
        pytest.param({"remaining_credits": "17"}, 17, id="numeric-string"),
        pytest.param({"balance": 9.0}, 9, id="balance-float"),
        pytest.param({"credits": True, "balance": 5}, 5, id="a-bool-is-not-a-balance"),
        pytest.param({"plan": "pro"}, None, id="none"),
    ],
)
def test_the_balance_is_read_from_any_documented_field(usage: dict[str, Any], balance: int | None) -> None:
    assert balance_from_usage(usage) == balance


def test_the_floor_counts_every_lookup_about_to_be_sent() -> None:
    check_balance(30, 0, lookups=10)
    with pytest.raises(CreditLimitError, match=r"balance is 30 credits; 11 lookups may cost 33 \(3 each\)"):
        check_balance(30, 0, lookups=11)
    with pytest.raises(CreditGuardError, match="without a credit balance") as info:
        check_balance(None, 0)
    assert info.value.retryable is False


@pytest.fixture
def guard_backend(tmp_path: Path) -> Iterator[FakeBackend]:
    engine = create_engine(f"sqlite:///{tmp_path / 'guard.db'}")
    store.metadata.create_all(engine)
    yield FakeBackend(engine)
    engine.dispose()


@pytest.fixture
def guard_url(guard_backend: FakeBackend) -> Iterator[str]:
    """The receiver app (credit routes on, callbacks off) on a SQLite file, served on loopback."""
    # Callbacks off, a deployment secret on: the credit routes answer (nyne_default signs with its own).
    service = CallbackService(guard_backend, enabled=False, config_secret=lambda: "deployment-secret")
    api_server = FastAPI()
    api_server.mount(URL_PREFIX, create_app(service))  # as the api-server mounts the plugin's app
    with serve(api_server) as url:
        yield url


def _key(map_index: int) -> ReservationKey:
    return ReservationKey("fan_out", "run-1", "lookup", map_index, "nyne_default", "f1")


def test_reserve_and_release_over_http(guard_url: str) -> None:
    guard = CreditReservations(guard_url, SECRET)
    held = guard.reserve(_key(0), 3)
    assert (held.reservation.granted, held.reservation.reserved, held.reservation.budget) == (True, 3, 3)
    with pytest.raises(CreditLimitError) as info:
        guard.reserve(_key(1), 3)
    assert "is 3 credits, 3 are reserved by its other lookups and 0 left" in str(info.value)
    assert guard.release(held) is True
    assert guard.reserve(_key(1), 3).reservation.granted


def test_a_wrong_secret_names_the_settings_to_check(guard_url: str) -> None:
    with pytest.raises(
        CreditGuardError, match="answered 404: install airflow-provider-nyne on the api-server"
    ) as info:
        CreditReservations(guard_url, "not-the-secret").reserve(_key(0), 3)
    assert info.value.retryable is False
    assert "not-the-secret" not in str(info.value)


def test_a_task_instance_that_is_not_running_is_refused_for_good(
    guard_url: str, guard_backend: FakeBackend
) -> None:
    guard_backend.not_running.add(("fan_out", "lookup", "run-1", 0))
    with pytest.raises(CreditGuardError, match=r"fan_out\.lookup\[0\] @ run-1 is not running") as info:
        CreditReservations(guard_url, SECRET).reserve(_key(0), 3)
    assert info.value.retryable is False
    assert SECRET not in str(info.value)


def test_an_unreachable_api_server_is_tried_again_then_reported_as_retryable() -> None:
    guard = CreditReservations(f"http://127.0.0.1:{free_port()}", SECRET, attempts=2, retry_delay=0.01)
    with pytest.raises(CreditGuardError, match=r"could not be asked: unreachable \(ConnectError\)") as info:
        guard.reserve(_key(0), 3)
    assert info.value.retryable is True
    assert SECRET not in repr(guard)


def test_the_guard_is_reached_at_the_internal_url_with_the_connection_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_INTERNAL_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_SECRET", "deployment-secret")
    from_connection = CreditReservations.for_connection("nyne_prod", "connection-secret")
    assert from_connection.root_url == "http://127.0.0.1:9"
    assert from_connection._secret == "connection-secret"
    assert "secret" not in repr(from_connection)
    assert CreditReservations.for_connection("nyne_prod", None)._secret == "deployment-secret"


def test_a_guard_without_address_or_secret_names_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("CALLBACK_INTERNAL_URL", "CALLBACK_BASE_URL", "CALLBACK_SECRET"):
        monkeypatch.delenv(f"AIRFLOW__NYNE__{key}", raising=False)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "")
    with pytest.raises(CreditGuardError, match=r"set \[nyne\] callback_internal_url") as info:
        CreditReservations.for_connection("nyne_prod", "connection-secret")
    assert info.value.retryable is False
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_INTERNAL_URL", "http://127.0.0.1:9")
    with pytest.raises(CreditGuardError, match="callback_secret extra of connection 'nyne_prod'") as info:
        CreditReservations.for_connection("nyne_prod", None)
    assert info.value.retryable is False
