"""utils.request_state: where a request id survives a retry, per Airflow version."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from airflow_provider_nyne.utils import request_state
from airflow_provider_nyne.utils.request_state import (
    STATE_KEY,
    VARIABLE_PREFIX,
    RequestStateStore,
    SubmittedRequest,
    request_state_store,
    variable_key,
)


class DictStore:
    """What Airflow 3.3's ``task_state_store`` offers."""

    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value


class FakeVariable:
    """``airflow.sdk.Variable`` with a dict behind it (Airflow 3.1/3.2 path)."""

    values: dict[str, str] = {}
    descriptions: dict[str, str | None] = {}

    @classmethod
    def get(cls, key: str, default: Any = None) -> Any:
        return cls.values.get(key, default)

    @classmethod
    def set(cls, key: str, value: str, description: str | None = None) -> None:
        cls.values[key] = value
        cls.descriptions[key] = description

    @classmethod
    def delete(cls, key: str) -> None:
        cls.values.pop(key, None)


class BrokenVariable:
    @classmethod
    def get(cls, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no task runtime")

    set = delete = get


class TI:
    dag_id = "dag_a"
    task_id = "task_b"
    run_id = "manual__2024-01-01T00:00:00+00:00"
    map_index = 3


@pytest.fixture
def fake_variable(monkeypatch: pytest.MonkeyPatch) -> type[FakeVariable]:
    FakeVariable.values = {}
    FakeVariable.descriptions = {}
    monkeypatch.setattr(request_state._VariableStore, "_variable", staticmethod(lambda: FakeVariable))
    return FakeVariable


def test_task_state_store_is_used_when_airflow_has_one() -> None:
    backing = DictStore()
    store = request_state_store({"task_state_store": backing, "ti": TI()})
    assert (store.kind, store.durable) == ("task_state_store", True)
    assert store.load() is None
    store.save(SubmittedRequest("req-1", "fp"))
    # Plain JSON under one key, as Airflow stores it.
    assert backing.data == {STATE_KEY: {"request_id": "req-1", "fingerprint": "fp"}}
    assert store.load() == SubmittedRequest("req-1", "fp")
    store.release()  # Airflow's retention / clear_on_success cleans up: nothing deleted here.
    assert store.load() == SubmittedRequest("req-1", "fp")


def test_without_task_state_store_a_variable_keeps_the_request(fake_variable: type[FakeVariable]) -> None:
    store = request_state_store({"ti": TI()})
    assert (store.kind, store.durable) == ("variable", True)
    store.save(SubmittedRequest("req-1", "fp"))
    [(key, value)] = fake_variable.values.items()
    assert key == variable_key("dag_a", TI.run_id, "task_b", 3)
    assert json.loads(value) == {"request_id": "req-1", "fingerprint": "fp"}
    assert "dag_a.task_b" in (fake_variable.descriptions[key] or "")
    # A retry builds a new store from its own context and finds it.
    assert request_state_store({"ti": TI()}).load() == SubmittedRequest("req-1", "fp")
    # Success deletes it.
    store.release()
    assert fake_variable.values == {}


def test_variable_keys_are_per_task_instance_and_bounded() -> None:
    key = variable_key("dag_a", "run_1", "task_b", -1)
    assert key.startswith(f"{VARIABLE_PREFIX}dag_a__task_b__")
    others = {
        variable_key("dag_a", "run_2", "task_b", -1),
        variable_key("dag_a", "run_1", "task_c", -1),
        variable_key("dag_a", "run_1", "task_b", 0),
        variable_key("dag_z", "run_1", "task_b", -1),
    }
    assert key not in others
    assert len(others) == 4
    assert len(variable_key("d" * 250, "r" * 250, "t" * 250, 12345)) <= 250


def test_unreachable_variables_degrade_to_no_record(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(request_state._VariableStore, "_variable", staticmethod(lambda: BrokenVariable))
    caplog.set_level(logging.WARNING, logger=request_state.__name__)
    store = request_state_store({"ti": TI()})
    store.save(SubmittedRequest("req-1"))
    assert store.load() is None
    store.release()
    assert "a retry of this task will submit a new lookup" in caplog.text


def test_broken_task_state_store_degrades_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def get(self, key: str) -> Any:
            raise RuntimeError("api down")

        set = get

    caplog.set_level(logging.WARNING, logger=request_state.__name__)
    store = request_state_store({"task_state_store": Broken()})
    assert store.load() is None
    store.save(SubmittedRequest("req-1"))
    assert "a retry of this task will submit a new lookup" in caplog.text


def test_no_context_means_no_store() -> None:
    store = request_state_store({})
    assert type(store) is RequestStateStore
    assert (store.kind, store.durable, store.load()) == ("none", False, None)


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ({"request_id": "r", "fingerprint": "f"}, SubmittedRequest("r", "f")),
        ('{"request_id": "r"}', SubmittedRequest("r", None)),
        ({"request_id": "r", "fingerprint": 7}, SubmittedRequest("r", None)),
        ({"request_id": ""}, None),
        ("not json", None),
        (["r"], None),
        (None, None),
    ],
    ids=["dict", "json-string", "bad-fingerprint", "empty-id", "garbage", "list", "none"],
)
def test_stored_values_are_read_tolerantly(stored: Any, expected: SubmittedRequest | None) -> None:
    assert SubmittedRequest.from_json(stored) == expected
