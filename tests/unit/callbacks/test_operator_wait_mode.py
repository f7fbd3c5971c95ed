"""NyneSubmitInteractionsOperator(wait_mode="callback"): checks at parse time and before any request."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from airflow_provider_nyne._compat import AirflowFailException, TaskDeferred
from airflow_provider_nyne.callbacks.plan import CORRELATION_XCOM_KEY
from airflow_provider_nyne.callbacks.tokens import decode_correlation_id
from airflow_provider_nyne.hooks.nyne import NyneHook
from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator
from airflow_provider_nyne.triggers.callbacks import NyneCallbackTrigger
from tests.unit.callbacks.test_plan import FakeTI

FIELDS = {"social_media_url": "https://x.com/nasa", "interaction_type": "followers"}
#: The contexts the tests ran the operator with (the fake API reads the last one's XComs).
CONTEXTS: list[dict[str, Any]] = []


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

    def submit(self: NyneHook, request: Any, **_: Any) -> str:
        recorded = bool(CONTEXTS) and CORRELATION_XCOM_KEY in CONTEXTS[-1]["ti"].xcoms
        made.append(f"submit {request.callback_url} correlation={'recorded' if recorded else 'missing'}")
        return "req-7"

    def status(self: NyneHook, request_id: str, **_: Any) -> Any:
        made.append(f"status {request_id}")
        raise AssertionError("callback mode must not poll")

    monkeypatch.setattr(NyneHook, "submit_interactions", submit)
    monkeypatch.setattr(NyneHook, "get_interactions_status", status)
    return made


def _context(ti: FakeTI, **more: Any) -> dict[str, Any]:
    context = {"ti": ti, **more}
    CONTEXTS.append(context)
    return context


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


def test_the_url_is_recorded_before_the_submission(calls: list[str]) -> None:
    # The receiver accepts a callback only on the URL the task recorded, and Nyne may call back
    # before the API's answer reaches the task.
    op = NyneSubmitInteractionsOperator(task_id="submit", **FIELDS, wait_mode="callback")
    op.execute(_context(FakeTI()))
    assert calls[0].endswith("correlation=recorded")


def test_deferred_mode_waits_until_the_timeout_reading_the_mailbox_as_asked(calls: list[str]) -> None:
    op = NyneSubmitInteractionsOperator(
        task_id="submit",
        **FIELDS,
        wait_for_completion=True,
        wait_mode="callback",
        timeout=600,
        callback_mailbox_interval=30,
    )
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(_context(FakeTI()))
    trigger = deferred.value.trigger
    assert isinstance(trigger, NyneCallbackTrigger)
    assert (trigger.request_id, trigger.mailbox_interval) == ("req-7", 30.0)
    assert before + 600 <= trigger.end_time <= time.time() + 600
    assert deferred.value.timeout is not None
    assert deferred.value.timeout.total_seconds() > 600  # Airflow's own timeout is only a safety net


def test_a_given_callback_url_and_callback_mode_exclude_each_other(calls: list[str]) -> None:
    op = NyneSubmitInteractionsOperator(
        task_id="submit", **FIELDS, callback_url="https://elsewhere.example/cb", wait_mode="callback"
    )
    with pytest.raises(AirflowFailException, match="exclude each other"):
        op.execute(_context(FakeTI()))
    assert calls == []


def test_a_connection_secret_may_not_name_a_foreign_asset_checked_before_spending(
    calls: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_NYNE_DEFAULT",
        json.dumps(
            {
                "conn_type": "nyne",
                "login": "k",
                "password": "p",
                "host": "http://127.0.0.1:9",
                "extra": {"callback_secret": "conn-secret"},
            }
        ),
    )
    op = NyneSubmitInteractionsOperator(
        task_id="submit", **FIELDS, wait_mode="callback", callback_asset="s3://finance/ledger.csv"
    )
    ti = FakeTI()
    with pytest.raises(AirflowFailException, match="nyne:// Assets or the task's outlets"):
        op.execute(_context(ti))
    assert calls == []
    assert ti.xcoms == {}


def test_a_reconnected_request_that_already_completed_is_not_waited_for(calls: list[str]) -> None:
    from airflow_provider_nyne.callbacks.plan import plan_callback
    from airflow_provider_nyne.client.models import JobStatus

    op = NyneSubmitInteractionsOperator(
        task_id="submit", **FIELDS, wait_for_completion=True, wait_mode="callback"
    )
    plan = plan_callback(_context(FakeTI()), op.hook, wait=True)
    done = JobStatus.from_api(
        {"request_id": "req-1", "status": "completed", "result": {"interactions": [{}], "total_count": 1}}
    )
    assert op._wait_for_callback("req-1", plan, done) == {
        "request_id": "req-1",
        "status": "completed",
        "total_count": 1,
    }
