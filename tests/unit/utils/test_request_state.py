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
    RequestStateError,
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

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


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


def test_unreachable_variables_degrade_loudly(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(request_state._VariableStore, "_variable", staticmethod(lambda: BrokenVariable))
    caplog.set_level(logging.WARNING, logger=request_state.__name__)
    store = request_state_store({"ti": TI()})
    assert (store.durable, store.required) == (True, False)
    # The degraded 3.1/3.2 fallback: logged, never raised, the submission goes ahead.
    assert store.load(strict=True) is None
    store.begin_submission("fp", try_number=1)
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "sending anyway: if this try dies before the answer arrives, a retry will submit again" in (
        error.getMessage()
    )
    store.save(SubmittedRequest("req-1"))
    store.clear_submission()
    store.release()
    assert "a retry of this task will stop and ask how to resume: set reuse_request_id='req-1'" in caplog.text
    assert "delete it by hand" in caplog.text


def test_broken_task_state_store_blocks_the_submission(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def get(self, *args: Any) -> Any:
            raise RuntimeError("api down")

        set = get

    caplog.set_level(logging.WARNING, logger=request_state.__name__)
    store = request_state_store({"task_state_store": Broken()})
    assert (store.durable, store.required) == (True, True)
    # Before the POST: not knowing, or not being able to record, means not sending.
    with pytest.raises(RequestStateError, match="could not read the task state 'nyne_interactions_request'"):
        store.load(strict=True)
    with pytest.raises(RequestStateError, match="RuntimeError: api down"):
        store.begin_submission("fp")
    # After it: logged, never raised (the lookup is paid for; its id must still reach the task).
    assert store.load() is None
    store.save(SubmittedRequest("req-1"))
    assert "a retry of this task will stop and ask how to resume" in caplog.text


def test_the_intent_goes_through_both_stores(fake_variable: type[FakeVariable]) -> None:
    backing = DictStore()
    for store in (request_state_store({"task_state_store": backing}), request_state_store({"ti": TI()})):
        store.begin_submission("fp", try_number=2)
        record = store.load(strict=True)
        assert record is not None
        assert (record.submitting, record.request_id, record.fingerprint, record.try_number) == (
            True,
            None,
            "fp",
            2,
        )
        store.save(SubmittedRequest("req-1", "fp"))
        assert store.load(strict=True) == SubmittedRequest("req-1", "fp")
        store.begin_submission("fp")
        store.clear_submission()
        assert store.load(strict=True) is None
    assert backing.data == {}
    assert fake_variable.values == {}


def test_an_accessor_without_delete_is_cleared_with_an_empty_value() -> None:
    class NoDelete:
        def __init__(self) -> None:
            self.data: dict[str, Any] = {}

        def get(self, key: str) -> Any:
            return self.data.get(key)

        def set(self, key: str, value: Any) -> None:
            self.data[key] = value

    backing = NoDelete()
    store = request_state_store({"task_state_store": backing})
    store.begin_submission("fp")
    store.clear_submission()
    assert backing.data == {STATE_KEY: {}}
    assert store.load(strict=True) is None


def test_without_a_store_the_submission_goes_ahead() -> None:
    store = RequestStateStore()
    store.begin_submission("fp")  # nothing to write, nothing raised
    assert store.load(strict=True) is None


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
        (
            {
                "state": "submitting",
                "fingerprint": "f",
                "since": "2024-01-01T00:00:00+00:00",
                "try_number": 1,
            },
            SubmittedRequest(None, "f", since="2024-01-01T00:00:00+00:00", try_number=1),
        ),
        ('{"state": "submitting"}', SubmittedRequest(None)),
        ({"state": "submitting", "since": 5, "try_number": "1"}, SubmittedRequest(None)),
        ({"state": "done"}, None),
        ({}, None),
    ],
    ids=[
        "dict",
        "json-string",
        "bad-fingerprint",
        "empty-id",
        "garbage",
        "list",
        "none",
        "intent",
        "intent-json-string",
        "intent-bad-fields",
        "unknown-state",
        "cleared",
    ],
)
def test_stored_values_are_read_tolerantly(stored: Any, expected: SubmittedRequest | None) -> None:
    assert SubmittedRequest.from_json(stored) == expected


def test_records_round_trip() -> None:
    intent = SubmittedRequest.intent("fp", try_number=4)
    assert intent.submitting
    assert SubmittedRequest.from_json(intent.to_json()) == intent
    assert SubmittedRequest.from_json(json.dumps(intent.to_json())) == intent
    done = SubmittedRequest("req-1", "fp")
    assert not done.submitting
    # The submitted form is unchanged, so a retry of a task that started on an older release reads it.
    assert done.to_json() == {"request_id": "req-1", "fingerprint": "fp"}
