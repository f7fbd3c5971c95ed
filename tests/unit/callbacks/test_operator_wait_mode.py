"""NyneSubmitInteractionsOperator(wait_mode="callback"): checks at parse time and before any request."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_nyne._compat import AirflowFailException, TaskDeferred
from airflow_provider_nyne.callbacks.defer import CORRELATION_XCOM_KEY
from airflow_provider_nyne.callbacks.tokens import decode_correlation_id
from airflow_provider_nyne.hooks.nyne import NyneHook
from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator
from airflow_provider_nyne.triggers.callbacks import NyneCallbackTrigger
from tests.unit.callbacks.test_defer import FakeTI

FIELDS = {"social_media_url": "https://x.com/nasa", "interaction_type": "followers"}


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_NYNE_DEFAULT",
        json.dumps({"conn_type": "nyne", "login": "k", "password": "p", "host": "http://127.0.0.1:9"}),
    )
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_SECRET", "op-secret")
    monkeypatch.setenv("AIRFLOW__NYNE__CALLBACK_BASE_URL", "https://airflow.example.com")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every API call the operator makes; submissions return ``req-7``."""
    made: list[str] = []

    def submit(self: NyneHook, request: Any) -> str:
        made.append(f"submit {request.callback_url}")
        return "req-7"

    def status(self: NyneHook, request_id: str) -> Any:
        made.append(f"status {request_id}")
        raise AssertionError("callback mode must not poll")

    monkeypatch.setattr(NyneHook, "submit_interactions", submit)
    monkeypatch.setattr(NyneHook, "get_interactions_status", status)
    return made


def _context(ti: FakeTI) -> dict[str, Any]:
    return {"ti": ti}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"wait_mode": "push"}, "wait_mode must be one of", id="unknown-mode"),
        pytest.param(
            {"wait_mode": "callback", "wait_for_completion": True, "deferrable": False},
            "needs deferrable=True",
            id="callback-without-triggerer",
        ),
    ],
)
def test_bad_combinations_fail_at_parse_time(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NyneSubmitInteractionsOperator(task_id="submit", **FIELDS, **kwargs)


def test_deferred_mode_submits_with_the_callback_url_and_defers_without_polling(calls: list[str]) -> None:
    op = NyneSubmitInteractionsOperator(
        task_id="submit", **FIELDS, wait_for_completion=True, wait_mode="callback"
    )
    ti = FakeTI()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(_context(ti))
    assert len(calls) == 1
    assert calls[0].startswith("submit https://airflow.example.com/nyne/v1/callback/")
    assert isinstance(deferred.value.trigger, NyneCallbackTrigger)
    assert deferred.value.method_name == "execute_complete"
    assert ti.xcoms["request_id"] == "req-7"
    assert decode_correlation_id(ti.xcoms[CORRELATION_XCOM_KEY]).wait is True


def test_asset_mode_returns_the_request_id(calls: list[str]) -> None:
    op = NyneSubmitInteractionsOperator(task_id="submit", **FIELDS, wait_mode="callback")
    ti = FakeTI()
    assert op.execute(_context(ti)) == "req-7"
    target = decode_correlation_id(ti.xcoms[CORRELATION_XCOM_KEY])
    assert target.asset_uri == "nyne://interactions/twitter/nasa/followers"
    assert [c.split(" ")[0] for c in calls] == ["submit"]


def test_callback_event_completes_like_a_polling_event(calls: list[str]) -> None:
    op = NyneSubmitInteractionsOperator(
        task_id="submit", **FIELDS, wait_for_completion=True, wait_mode="callback"
    )
    event = {
        "status": "success",
        "request_id": "req-7",
        "total_count": 12,
        "message": "request req-7 completed",
        "error_code": None,
        "http_status": None,
        "polls": 0,
        "source": "callback",
        "correlation_id": "cid",
    }
    assert op.execute_complete({"ti": FakeTI()}, event) == {
        "request_id": "req-7",
        "status": "completed",
        "total_count": 12,
    }


def test_missing_base_url_fails_before_any_request(calls: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__NYNE__CALLBACK_BASE_URL")
    op = NyneSubmitInteractionsOperator(
        task_id="submit", **FIELDS, wait_for_completion=True, wait_mode="callback"
    )
    with pytest.raises(AirflowFailException, match="callback_base_url"):
        op.execute(_context(FakeTI()))
    assert calls == []
