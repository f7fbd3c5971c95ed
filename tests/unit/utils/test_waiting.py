"""utils.waiting: error mapping, event checks, deadlines, defer and the wait dispatcher."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest

from airflow_provider_nyne._compat import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)
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
from airflow_provider_nyne.client.models import JobStatus
from airflow_provider_nyne.client.polling import WaitOutcome, error_outcome
from airflow_provider_nyne.triggers.interactions import NyneInteractionsTrigger
from airflow_provider_nyne.utils import waiting
from airflow_provider_nyne.utils.waiting import (
    DEFER_TIMEOUT_GRACE,
    check_event,
    deadline_after,
    defer_to_trigger,
    fail_for,
    outcome_from_status,
    result_summary,
    wait_for_request,
)


def is_exactly(exc: Exception, cls: type[Exception]) -> bool:
    # AirflowFailException and AirflowSensorTimeout subclass AirflowException: compare exactly.
    return type(exc) is cls


# --- fail_for -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected", "fragments"),
    [
        (
            NyneValidationError("tweet_id: must be 10 to 25 digits", field="tweet_id"),
            AirflowFailException,
            ["tweet_id"],
        ),
        (
            NyneAuthError("the API secret was rejected", status_code=401, code="invalid_api_secret"),
            AirflowFailException,
            ["HTTP 401", "API secret", "'nyne_prod'"],
        ),
        (
            NyneCreditsError("out of credits", status_code=402),
            AirflowFailException,
            ["HTTP 402", "'nyne_prod'"],
        ),
        (
            NyneForbiddenError("IP not allow-listed", status_code=403, code="ip_not_allowed"),
            AirflowFailException,
            ["ip_not_allowed", "'nyne_prod'"],
        ),
        (
            NyneNotFoundError("request expired", status_code=404),
            AirflowFailException,
            ["HTTP 404", "expired"],
        ),
        (NyneJobFailedError("job failed: private"), AirflowException, ["private"]),
        (NyneRateLimitError("slow down", status_code=429), AirflowException, ["HTTP 429"]),
        (NyneServerError("boom", status_code=500), AirflowException, ["HTTP 500"]),
        (NyneServerError("unavailable", status_code=503), AirflowException, ["HTTP 503"]),
        (NyneResponseError("not JSON", status_code=200), AirflowException, ["not JSON"]),
        (NyneTransportError("connection reset"), AirflowException, ["connection reset"]),
    ],
    ids=[
        "validation",
        "401",
        "402",
        "403-ip",
        "404",
        "job-failed",
        "429",
        "500",
        "503",
        "unreadable",
        "transport",
    ],
)
def test_fail_for_keeps_retries_for_what_a_retry_can_fix(
    error: NyneError, expected: type[Exception], fragments: list[str]
) -> None:
    exc = fail_for(error, nyne_conn_id="nyne_prod")
    assert is_exactly(exc, expected)
    for fragment in fragments:
        assert fragment in str(exc)


def test_fail_for_names_the_connection_only_for_account_errors() -> None:
    assert "nyne_prod" not in str(
        fail_for(NyneServerError("boom", status_code=500), nyne_conn_id="nyne_prod")
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (NyneTransportError("read timeout", request_sent=True), AirflowFailException),
        (NyneServerError("internal error", status_code=500), AirflowFailException),
        (NyneResponseError("answer without request_id", status_code=202), AirflowFailException),
        (NyneTransportError("connection refused", request_sent=False), AirflowException),
        (NyneServerError("unavailable", status_code=503), AirflowException),
        (NyneRateLimitError("slow down", status_code=429), AirflowException),
    ],
    ids=["read-timeout", "500", "no-request-id", "refused", "503", "429"],
)
def test_submission_failures_that_may_have_been_processed_are_not_retried(
    error: NyneError, expected: type[Exception]
) -> None:
    exc = fail_for(error, submitting=True)
    assert is_exactly(exc, expected)
    if expected is AirflowFailException:
        assert "may have been processed" in str(exc)
        assert "reuse_request_id" in str(exc)


# --- check_event --------------------------------------------------------------------------


def event(status: str, **fields: Any) -> dict[str, Any]:
    return WaitOutcome(status, "req-1", **fields).to_event()  # type: ignore[arg-type]


class Task:
    nyne_conn_id = "nyne_task_conn"

    def __init__(self) -> None:
        import logging

        self.log = logging.getLogger("test.task")


def test_success_returns_only_the_summary() -> None:
    summary = check_event(event("success", total_count=42, polls=7), task=Task())
    assert summary == {"request_id": "req-1", "status": "completed", "total_count": 42}
    assert summary == result_summary("req-1", 42)


@pytest.mark.parametrize(
    ("sensor", "expected", "fragment"),
    [
        (False, AirflowException, "a retry of this task submits it again"),
        (True, AirflowFailException, "costs no credits"),
    ],
    ids=["operator", "sensor"],
)
def test_failed_job_carries_the_reason(sensor: bool, expected: type[Exception], fragment: str) -> None:
    with pytest.raises(AirflowException) as info:
        check_event(event("failed", message="request req-1 failed: Profile is private"), sensor=sensor)
    assert is_exactly(info.value, expected)
    assert "failed: Profile is private" in str(info.value)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("sensor", "expected", "fragment"),
    [(False, AirflowException, "a retry of this task reconnects"), (True, AirflowSensorTimeout, "Timed out")],
    ids=["operator", "sensor"],
)
def test_timeout(sensor: bool, expected: type[Exception], fragment: str) -> None:
    with pytest.raises(AirflowException) as info:
        check_event(event("timeout", message="request req-1 still processing at the deadline"), sensor=sensor)
    assert is_exactly(info.value, expected)
    assert fragment in str(info.value)
    assert "still processing" in str(info.value)


@pytest.mark.parametrize(
    ("http_status", "code", "expected", "fragment"),
    [
        (401, "invalid_api_key", AirflowFailException, "'nyne_task_conn'"),
        (404, "request_not_found", AirflowFailException, "HTTP 404"),
        (503, "service_unavailable", AirflowException, "HTTP 503"),
        (None, None, AirflowException, "connection reset"),
    ],
    ids=["401", "404", "503-after-tolerance", "transport"],
)
def test_error_events_map_like_client_errors(
    http_status: int | None, code: str | None, expected: type[Exception], fragment: str
) -> None:
    with pytest.raises(AirflowException) as info:
        check_event(
            event("error", message="connection reset", error_code=code, http_status=http_status), task=Task()
        )
    assert is_exactly(info.value, expected)
    assert fragment in str(info.value)


@pytest.mark.parametrize("status", ["failed", "timeout", "error"])
def test_soft_fail_skips_every_non_success(status: str) -> None:
    with pytest.raises(AirflowSkipException, match="soft_fail"):
        check_event(
            event(status, message="why", http_status=404 if status == "error" else None), soft_fail=True
        )


@pytest.mark.parametrize(
    "bad",
    [None, "success", {"status": "running", "request_id": "r"}, {"request_id": "r"}],
    ids=["none", "string", "unknown-status", "no-status"],
)
def test_malformed_events_are_rejected(bad: Any) -> None:
    with pytest.raises(AirflowException, match="unexpected event"):
        check_event(bad)


def test_event_for_another_request_is_rejected() -> None:
    with pytest.raises(AirflowException, match="while waiting for 'req-2'"):
        check_event(event("success", total_count=1), request_id="req-2")


# --- outcomes, deadlines, defer -----------------------------------------------------------


def test_outcome_from_terminal_status() -> None:
    done = JobStatus.from_api({"status": "completed", "result": {"total_count": 5}}, request_id="r")
    assert outcome_from_status(done) == WaitOutcome(
        "success", "r", total_count=5, message="request r completed"
    )
    failed = JobStatus.from_api({"status": "failed", "error": "private"}, request_id="r")
    assert outcome_from_status(failed).message == "request r failed: private"
    with pytest.raises(ValueError, match="still processing"):
        outcome_from_status(JobStatus.from_api({"status": "processing"}, request_id="r"))


def test_error_outcome_gives_local_validation_errors_a_code() -> None:
    outcome = error_outcome("r", NyneValidationError("connection 'x' does not exist", field="nyne_conn_id"))
    assert (outcome.status, outcome.error_code, outcome.http_status) == (
        "error",
        "invalid_nyne_conn_id",
        None,
    )


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [(90, 1090.0), (timedelta(minutes=2), 1120.0), (None, 1000.0 + 86400)],
    ids=["seconds", "timedelta", "default-24h"],
)
def test_deadline_is_absolute(timeout: Any, expected: float) -> None:
    assert deadline_after(timeout, now=1000.0) == expected


class DeferringTask(Task):
    def defer(
        self, *, trigger: Any, method_name: str, timeout: timedelta | None = None, **kwargs: Any
    ) -> None:
        raise TaskDeferred(trigger=trigger, method_name=method_name, timeout=timeout)


def test_defer_carries_the_deadline_into_the_trigger() -> None:
    deadline = time.time() + 600
    with pytest.raises(TaskDeferred) as info:
        defer_to_trigger(
            DeferringTask(),
            "req-1",
            deadline=deadline,
            nyne_conn_id="c",
            poll_interval=1,
            max_poll_interval=5,
        )
    trigger = info.value.trigger
    assert isinstance(trigger, NyneInteractionsTrigger)
    assert trigger.serialize()[1] == {
        "request_id": "req-1",
        "nyne_conn_id": "c",
        "end_time": deadline,
        "poll_interval": 1.0,
        "max_poll_interval": 5.0,
        "backoff_factor": 1.5,
        "max_transient_errors": 10,
    }
    assert info.value.method_name == "execute_complete"
    # Airflow's own timeout is a safety net just beyond the trigger's deadline.
    assert 600 - 5 < info.value.timeout.total_seconds() - DEFER_TIMEOUT_GRACE <= 600


# --- wait_for_request ---------------------------------------------------------------------


class StatusHook:
    def __init__(self, answer: JobStatus | NyneError) -> None:
        self.answer = answer
        self.calls = 0

    def get_interactions_status(self, request_id: str) -> JobStatus:
        self.calls += 1
        if isinstance(self.answer, NyneError):
            raise self.answer
        return self.answer


RUNNING = JobStatus.from_api({"status": "processing"}, request_id="req-1")
DONE = JobStatus.from_api({"status": "completed", "result": {"total_count": 9}}, request_id="req-1")


def test_wait_checks_once_and_returns_at_once_when_done() -> None:
    hook = StatusHook(DONE)
    summary = wait_for_request(
        DeferringTask(), "req-1", deadline=time.time() + 60, deferrable=True, hook=hook
    )  # type: ignore[arg-type]
    assert summary == result_summary("req-1", 9)
    assert hook.calls == 1


def test_wait_defers_when_running_and_deferrable() -> None:
    hook = StatusHook(RUNNING)
    with pytest.raises(TaskDeferred):
        wait_for_request(DeferringTask(), "req-1", deadline=time.time() + 60, deferrable=True, hook=hook)  # type: ignore[arg-type]
    assert hook.calls == 1


def test_wait_polls_in_the_worker_when_not_deferrable(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_wait_sync(request_id: str, **kwargs: Any) -> dict[str, Any]:
        seen.update(kwargs, request_id=request_id)
        return event("success", total_count=3)

    monkeypatch.setattr(waiting, "wait_sync", fake_wait_sync)
    deadline = time.time() + 60
    summary = wait_for_request(
        Task(),
        "req-1",
        deadline=deadline,
        deferrable=False,
        status=RUNNING,
        nyne_conn_id="c",
        max_poll_interval=9,
    )
    assert summary == result_summary("req-1", 3)
    assert (seen["deadline"], seen["nyne_conn_id"], seen["schedule"].max_poll_interval) == (deadline, "c", 9)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (NyneNotFoundError("gone", status_code=404), AirflowFailException),
        (NyneServerError("x", status_code=502), AirflowException),
    ],
    ids=["404", "502"],
)
def test_first_check_failure_fails_the_task(error: NyneError, expected: type[Exception]) -> None:
    with pytest.raises(AirflowException) as info:
        wait_for_request(Task(), "req-1", deadline=time.time() + 60, deferrable=True, hook=StatusHook(error))  # type: ignore[arg-type]
    assert is_exactly(info.value, expected)
    with pytest.raises(AirflowSkipException):
        wait_for_request(
            Task(),
            "req-1",
            deadline=time.time() + 60,
            deferrable=True,
            hook=StatusHook(error),
            soft_fail=True,  # type: ignore[arg-type]
        )
