"""utils.waiting: the waiting operators' typed base (errors, events, deadlines, defer, the worker wait)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from airflow.sdk import BaseOperator

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
from airflow_provider_nyne.utils.waiting import (
    DEFER_TIMEOUT_GRACE,
    NyneWaitMixin,
    result_summary,
    terminal_event,
)


class Waiter(NyneWaitMixin, BaseOperator):
    """The smallest operator on the base: what the operator, sensor and transfer inherit."""

    WAITING = ("deferrable", "timeout", "poll_interval", "max_poll_interval", "backoff_factor")

    def __init__(self, *, hook: Any = None, soft_fail: bool = False, **kwargs: Any) -> None:
        waiting = {name: kwargs.pop(name) for name in self.WAITING if name in kwargs}
        super().__init__(task_id="wait", **kwargs)
        self.init_waiting(nyne_conn_id="nyne_prod", **waiting)
        self.soft_fail = soft_fail
        if hook is not None:
            self.__dict__["hook"] = hook  # the cached_property, replaced


class Resubmitter(Waiter):
    resubmits_on_retry = True


class SensorLike(Waiter):
    def timeout_error(self, message: str) -> Exception:
        return AirflowSensorTimeout(message)


def is_exactly(exc: Exception, cls: type[Exception]) -> bool:
    # AirflowFailException and AirflowSensorTimeout subclass AirflowException: compare exactly.
    return type(exc) is cls


# --- failure / fail ---------------------------------------------------------------------------


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
def test_failure_keeps_retries_for_what_a_retry_can_fix(
    error: NyneError, expected: type[Exception], fragments: list[str]
) -> None:
    with pytest.raises(expected) as info:
        Waiter().fail(error)
    assert is_exactly(info.value, expected)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert info.value.__cause__ is error


@pytest.mark.parametrize(
    ("error", "names_connection"),
    [
        (NyneAuthError("bad key", status_code=401), True),
        (NyneCreditsError("no credits", status_code=402), True),
        (NyneForbiddenError("disabled", status_code=403), True),
        (NyneServerError("boom", status_code=500), False),
        (NyneValidationError("bad url"), False),
        (NyneNotFoundError("gone", status_code=404), False),
        (NyneRateLimitError("slow down", status_code=429), False),
        (NyneTransportError("reset"), False),
    ],
)
def test_failure_names_the_connection_only_for_account_errors(
    error: NyneError, names_connection: bool
) -> None:
    assert error.concerns_account is names_connection
    with pytest.raises(AirflowException) as info:
        Waiter().fail(error)
    assert ("Airflow connection 'nyne_prod'" in str(info.value)) is names_connection


def test_fail_skips_with_soft_fail() -> None:
    with pytest.raises(AirflowSkipException, match="soft_fail"):
        Waiter(soft_fail=True).fail(NyneNotFoundError("gone", status_code=404))


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
    with pytest.raises(expected) as info:
        Waiter().fail(error, submitting=True)
    assert is_exactly(info.value, expected)
    assert info.value.__cause__ is error
    if expected is AirflowFailException:
        assert "may have been processed" in str(info.value)
        assert "reuse_request_id" in str(info.value)


# --- finish -------------------------------------------------------------------------------


def event(status: str, **fields: Any) -> dict[str, Any]:
    return WaitOutcome(status, "req-1", **fields).to_event()  # type: ignore[arg-type]


def test_success_returns_only_the_summary() -> None:
    summary = Waiter().finish(event("success", total_count=42, polls=7))
    assert summary == {"request_id": "req-1", "status": "completed", "total_count": 42}
    assert summary == result_summary("req-1", 42)


@pytest.mark.parametrize(
    ("task", "expected", "fragment"),
    [
        (Resubmitter, AirflowException, "a retry of this task submits it again"),
        (Waiter, AirflowFailException, "costs no credits"),
    ],
    ids=["submitting-operator", "waiting-only"],
)
def test_failed_job_carries_the_reason(task: type[Waiter], expected: type[Exception], fragment: str) -> None:
    with pytest.raises(AirflowException) as info:
        task().finish(event("failed", message="request req-1 failed: Profile is private"))
    assert is_exactly(info.value, expected)
    assert "failed: Profile is private" in str(info.value)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("task", "expected", "fragment"),
    [
        (Waiter, AirflowException, "a retry of this task reconnects"),
        (SensorLike, AirflowSensorTimeout, "Timed out"),
    ],
    ids=["operator", "sensor"],
)
def test_timeout(task: type[Waiter], expected: type[Exception], fragment: str) -> None:
    with pytest.raises(AirflowException) as info:
        task().finish(event("timeout", message="request req-1 still processing at the deadline"))
    assert is_exactly(info.value, expected)
    assert fragment in str(info.value)
    assert "still processing" in str(info.value)


@pytest.mark.parametrize(
    ("http_status", "code", "expected", "fragment"),
    [
        (401, "invalid_api_key", AirflowFailException, "'nyne_prod'"),
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
        Waiter().finish(event("error", message="connection reset", error_code=code, http_status=http_status))
    assert is_exactly(info.value, expected)
    assert fragment in str(info.value)


@pytest.mark.parametrize("status", ["failed", "timeout", "error"])
def test_soft_fail_skips_every_non_success(status: str) -> None:
    with pytest.raises(AirflowSkipException, match="soft_fail"):
        Waiter(soft_fail=True).finish(
            event(status, message="why", http_status=404 if status == "error" else None)
        )


@pytest.mark.parametrize(
    "bad",
    [None, "success", {"status": "running", "request_id": "r"}, {"request_id": "r"}],
    ids=["none", "string", "unknown-status", "no-status"],
)
def test_malformed_events_are_rejected(bad: Any) -> None:
    with pytest.raises(AirflowException, match="unexpected event"):
        Waiter().finish(bad)


def test_event_for_another_request_is_rejected() -> None:
    with pytest.raises(AirflowException, match="while waiting for 'req-2'"):
        Waiter().finish(event("success", total_count=1), request_id="req-2")


# --- outcomes, deadlines, defer -----------------------------------------------------------


def test_terminal_event() -> None:
    done = JobStatus.from_api({"status": "completed", "result": {"total_count": 5}}, request_id="r")
    assert (
        terminal_event(done)
        == WaitOutcome("success", "r", total_count=5, message="request r completed").to_event()
    )
    failed = JobStatus.from_api({"status": "failed", "error": "private"}, request_id="r")
    assert terminal_event(failed)["message"] == "request r failed: private"
    with pytest.raises(ValueError, match="still processing"):
        terminal_event(JobStatus.from_api({"status": "processing"}, request_id="r"))


def test_error_outcome_gives_local_validation_errors_a_code() -> None:
    outcome = error_outcome("r", NyneValidationError("connection 'x' does not exist", field="nyne_conn_id"))
    assert (outcome.status, outcome.error_code, outcome.http_status) == (
        "error",
        "invalid_nyne_conn_id",
        None,
    )


def test_the_deadline_is_absolute_and_computed_once_per_wait() -> None:
    before = time.time()
    deadline = Waiter(timeout=90).deadline()
    assert before + 90 <= deadline <= time.time() + 90


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"timeout": 0}, "timeout must be positive"),
        ({"poll_interval": 0}, "poll_interval must be > 0"),
        ({"max_poll_interval": 1, "poll_interval": 5}, "max_poll_interval"),
        ({"backoff_factor": 0.5}, "backoff_factor"),
    ],
    ids=["timeout", "interval", "cap-below-interval", "shrinking-backoff"],
)
def test_nonsense_waiting_arguments_fail_when_the_dag_is_parsed(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Waiter(**kwargs)


# --- wait_for -----------------------------------------------------------------------------


class StatusHook:
    def __init__(self, answer: JobStatus | NyneError) -> None:
        self.answer = answer
        self.deadlines: list[float | None] = []

    def get_interactions_status(self, request_id: str, *, deadline: float | None = None) -> JobStatus:
        self.deadlines.append(deadline)
        if isinstance(self.answer, NyneError):
            raise self.answer
        return self.answer


RUNNING = JobStatus.from_api({"status": "processing"}, request_id="req-1")
DONE = JobStatus.from_api({"status": "completed", "result": {"total_count": 9}}, request_id="req-1")


def test_wait_checks_once_and_returns_at_once_when_done() -> None:
    hook = StatusHook(DONE)
    assert Waiter(hook=hook).wait_for("req-1") == result_summary("req-1", 9)
    assert len(hook.deadlines) == 1


def test_wait_defers_with_the_schedule_and_an_absolute_deadline() -> None:
    hook = StatusHook(RUNNING)
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        Waiter(hook=hook, timeout=600, poll_interval=1, max_poll_interval=5).wait_for("req-1")
    trigger = info.value.trigger
    assert isinstance(trigger, NyneInteractionsTrigger)
    kwargs = trigger.serialize()[1]
    assert before + 600 <= kwargs.pop("end_time") <= time.time() + 600
    assert kwargs == {
        "request_id": "req-1",
        "nyne_conn_id": "nyne_prod",
        "poll_interval": 1.0,
        "max_poll_interval": 5.0,
        "backoff_factor": 1.5,
        "max_transient_errors": 10,
    }
    assert info.value.method_name == "execute_complete"
    # Airflow's own timeout is a safety net just beyond the trigger's deadline.
    assert 600 - 5 < info.value.timeout.total_seconds() - DEFER_TIMEOUT_GRACE <= 600
    # The first check may wait for room under the rate limit only briefly.
    assert hook.deadlines[0] is not None
    assert hook.deadlines[0] <= time.time() + 10


@pytest.mark.parametrize(
    "error",
    [NyneRateLimitError("no room", retry_after=30), NyneServerError("x", status_code=502)],
    ids=["rate-limit", "502"],
)
def test_a_first_check_that_cannot_be_made_now_does_not_stop_the_wait(error: NyneError) -> None:
    with pytest.raises(TaskDeferred):
        Waiter(hook=StatusHook(error)).wait_for("req-1")


def test_a_first_check_that_no_wait_can_fix_fails_the_task() -> None:
    error = NyneNotFoundError("gone", status_code=404)
    with pytest.raises(AirflowFailException):
        Waiter(hook=StatusHook(error)).wait_for("req-1")
    with pytest.raises(AirflowSkipException):
        Waiter(hook=StatusHook(error), soft_fail=True).wait_for("req-1")


def test_wait_polls_in_the_worker_when_not_deferrable(
    simulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real wait loop against the simulator: the job completes, the summary comes back.
    import httpx

    sim = simulator
    monkeypatch.setenv("AIRFLOW_CONN_NYNE_PROD", sim.connection_json())
    answer = httpx.post(
        f"{sim.url}/person/interactions",
        json={"type": "followers", "social_media_url": "https://x.com/nasa"},
        headers={"X-API-Key": sim.api_key, "X-API-Secret": sim.api_secret},
    )
    rid = answer.json()["data"]["request_id"]
    waiter = Waiter(deferrable=False, timeout=30, poll_interval=0.05, max_poll_interval=0.1)
    waiter.__dict__["hook"] = StatusHook(RUNNING)  # the first check says "running"
    summary = waiter.wait_for(rid)
    assert summary["request_id"] == rid
    assert summary["status"] == "completed"
    assert len(sim.ledger.polls()) >= 1


# --- deferrable: the deployment's default, for every waiting class -----------------------------

DEFERRABLE_ENV = "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"


def _every_waiting_class(**extra: Any) -> dict[str, Any]:
    """One task of each class built on the mixin, as a DAG file builds them (``deferrable`` left out)."""
    from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator
    from airflow_provider_nyne.sensors.interactions import NyneInteractionsSensor
    from airflow_provider_nyne.transfers.callback_to_storage import NyneCallbackResultToObjectStorageOperator
    from airflow_provider_nyne.transfers.interactions_to_storage import (
        NyneInteractionsToObjectStorageOperator,
    )

    return {
        "submit": NyneSubmitInteractionsOperator(
            task_id="submit", username="nasa", interaction_type="followers", **extra
        ),
        "sensor": NyneInteractionsSensor(task_id="sense", request_id="r", **extra),
        "transfer": NyneInteractionsToObjectStorageOperator(
            task_id="land", request_id="r", path="file:///tmp/nyne-a.jsonl", **extra
        ),
        "callback_transfer": NyneCallbackResultToObjectStorageOperator(
            task_id="cb", request_id="r", path="file:///tmp/nyne-b.jsonl", **extra
        ),
        "custom": Waiter(**extra),  # a subclass that calls init_waiting without passing deferrable
    }


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        pytest.param(None, True, id="unset-waits-in-the-triggerer"),
        pytest.param("True", True, id="set-true"),
        pytest.param("False", False, id="set-false"),
    ],
)
def test_every_waiting_class_takes_the_deployment_default(
    monkeypatch: pytest.MonkeyPatch, setting: str | None, expected: bool
) -> None:
    if setting is None:
        monkeypatch.delenv(DEFERRABLE_ENV, raising=False)
    else:
        monkeypatch.setenv(DEFERRABLE_ENV, setting)
    tasks = _every_waiting_class()
    assert {name: task.deferrable for name, task in tasks.items()} == dict.fromkeys(tasks, expected)


@pytest.mark.parametrize("setting", ["True", "False"])
@pytest.mark.parametrize("explicit", [True, False], ids=["explicit-true", "explicit-false"])
def test_an_explicit_argument_wins_over_the_deployment(
    monkeypatch: pytest.MonkeyPatch, setting: str, explicit: bool
) -> None:
    monkeypatch.setenv(DEFERRABLE_ENV, setting)
    tasks = _every_waiting_class(deferrable=explicit)
    assert {name: task.deferrable for name, task in tasks.items()} == dict.fromkeys(tasks, explicit)


def test_default_args_win_over_the_deployment(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.sdk import DAG

    from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator
    from airflow_provider_nyne.transfers.interactions_to_storage import (
        NyneInteractionsToObjectStorageOperator,
    )

    monkeypatch.setenv(DEFERRABLE_ENV, "False")
    with DAG("defaults", schedule=None, default_args={"deferrable": True}):
        submit = NyneSubmitInteractionsOperator(task_id="s", username="nasa", interaction_type="followers")
        land = NyneInteractionsToObjectStorageOperator(
            task_id="t", request_id="r", path="file:///tmp/x.jsonl"
        )
    assert (submit.deferrable, land.deferrable) == (True, True)


def test_a_mapped_task_takes_the_default_when_it_is_unmapped(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator

    monkeypatch.setenv(DEFERRABLE_ENV, "False")
    mapped = NyneSubmitInteractionsOperator.partial(task_id="m", interaction_type="followers").expand(
        username=["a", "b"]
    )
    assert "deferrable" not in mapped.partial_kwargs  # decided when a worker builds each instance
    assert mapped.unmap({"username": "a"}).deferrable is False


def test_waiting_for_a_callback_stays_in_the_triggerer_whatever_the_deployment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator

    monkeypatch.setenv(DEFERRABLE_ENV, "False")
    fields = {"username": "nasa", "interaction_type": "followers", "wait_mode": "callback"}
    waits = NyneSubmitInteractionsOperator(task_id="w", wait_for_completion=True, **fields)
    assert waits.deferrable is True  # a callback wakes a deferred task: there is no worker-side wait
    with pytest.raises(ValueError, match="needs deferrable=True"):
        NyneSubmitInteractionsOperator(task_id="x", wait_for_completion=True, deferrable=False, **fields)


# --- on_kill ------------------------------------------------------------------------------------


def kill_log(task: Any, capsys: pytest.CaptureFixture[str]) -> str:
    """What ``on_kill`` logs (the task logger writes to stdout in tests)."""
    capsys.readouterr()
    task.on_kill()
    return " ".join(line for line in capsys.readouterr().out.splitlines() if "[warning" in line)


def test_killed_before_anything_was_sent_says_nothing_runs(capsys: pytest.CaptureFixture[str]) -> None:
    assert "before any Nyne lookup was submitted" in kill_log(Waiter(), capsys)


def test_killed_while_waiting_names_the_request_the_charge_and_the_retry(
    capsys: pytest.CaptureFixture[str],
) -> None:
    waiter = Waiter(hook=StatusHook(RUNNING))
    with pytest.raises(TaskDeferred):
        waiter.wait_for("req-1")
    message = kill_log(waiter, capsys)
    assert "Nyne request req-1" in message
    assert "keeps running at Nyne (there is no cancel endpoint)" in message
    assert "charged 3 credits if it completes with results" in message
    assert "A retry of this task waits for the same request again." in message
