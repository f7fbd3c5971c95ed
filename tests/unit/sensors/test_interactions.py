"""NyneInteractionsSensor: poke, reschedule and deferrable modes; soft_fail; the backoff schedule."""

from __future__ import annotations

import time
from typing import Any

import pytest
from airflow.sdk import PokeReturnValue

from airflow_provider_nyne._compat import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)
from airflow_provider_nyne.client.errors import (
    NyneAuthError,
    NyneError,
    NyneNotFoundError,
    NyneRateLimitError,
    NyneServerError,
)
from airflow_provider_nyne.client.models import JobStatus
from airflow_provider_nyne.sensors.interactions import NyneInteractionsSensor
from airflow_provider_nyne.triggers.interactions import NyneInteractionsTrigger


def status(state: str, **data: Any) -> JobStatus:
    return JobStatus.from_api({"status": state, **data}, request_id="req-1")


COMPLETED = status(
    "completed", completed=True, result={"total_count": 21, "interactions": [{"username": "a"}]}
)
SUMMARY = {"request_id": "req-1", "status": "completed", "total_count": 21}


class ScriptedHook:
    def __init__(self, *answers: JobStatus | NyneError) -> None:
        self.answers = list(answers)
        self.polled: list[str] = []

    def get_interactions_status(self, request_id: str, *, deadline: float | None = None) -> JobStatus:
        self.polled.append(request_id)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, NyneError):
            raise answer
        return answer


def make(*answers: JobStatus | NyneError, **kwargs: Any) -> NyneInteractionsSensor:
    sensor = NyneInteractionsSensor(**{"task_id": "sense", "request_id": "req-1", **kwargs})
    sensor.__dict__["hook"] = ScriptedHook(*answers)
    return sensor


# --- construction -------------------------------------------------------------------------


def test_defaults_and_templating() -> None:
    sensor = NyneInteractionsSensor(task_id="s", request_id="{{ ti.xcom_pull('submit') }}")
    assert tuple(sensor.template_fields) == ("request_id",)
    assert (sensor.deferrable, sensor.nyne_conn_id, sensor.timeout) == (True, "nyne_default", 86400.0)
    assert (sensor.poll_interval, sensor.max_poll_interval, sensor.poke_interval) == (2.0, 60.0, 2.0)


def test_the_hook_polls_without_client_retries() -> None:
    sensor = NyneInteractionsSensor(task_id="s", request_id="r", nyne_conn_id="c")
    assert sensor.hook.retry is not None
    assert sensor.hook.retry.max_retries == 0
    assert sensor.hook.nyne_conn_id == "c"


# --- poke ---------------------------------------------------------------------------------


def test_poke_is_false_while_running_then_returns_the_summary() -> None:
    sensor = make(status("queued"), status("processing"), COMPLETED)
    assert sensor.poke({}) is False
    assert sensor.poke({}) is False
    done = sensor.poke({})
    assert isinstance(done, PokeReturnValue)
    assert done.is_done
    assert done.xcom_value == SUMMARY


@pytest.mark.parametrize(
    ("answer", "fragment"),
    [
        (status("failed", error="Profile is private"), "failed: Profile is private"),
        (NyneNotFoundError("request 'req-1' was not found", status_code=404), "HTTP 404"),
        (NyneAuthError("the API key was rejected", status_code=401, code="invalid_api_key"), "HTTP 401"),
    ],
    ids=["job-failed", "expired", "credentials"],
)
def test_poke_fails_without_retry_on_what_a_retry_cannot_fix(
    answer: JobStatus | NyneError, fragment: str
) -> None:
    # AirflowFailException: no retry burned, and soft_fail turns it into a skip (Airflow's poke loop).
    with pytest.raises(AirflowFailException, match=fragment):
        make(answer).poke({})


def test_poke_tolerates_transient_errors_up_to_the_limit() -> None:
    boom = NyneServerError("unavailable", status_code=503, code="service_unavailable")
    sensor = make(boom, boom, status("processing"), boom, boom, COMPLETED, max_transient_errors=2)
    assert [sensor.poke({}) for _ in range(5)] == [False] * 5
    assert isinstance(sensor.poke({}), PokeReturnValue)
    sensor = make(boom, max_transient_errors=2)
    assert sensor.poke({}) is False
    assert sensor.poke({}) is False
    with pytest.raises(AirflowException, match="HTTP 503") as info:
        sensor.poke({})
    assert type(info.value) is AirflowException


@pytest.mark.parametrize("rendered", ["", "None", "  "], ids=["empty", "none-string", "blank"])
def test_empty_request_id_is_named(rendered: str) -> None:
    sensor = make(COMPLETED)
    sensor.request_id = rendered
    with pytest.raises(AirflowFailException, match="request_id is empty"):
        sensor.poke({})
    assert sensor.hook.polled == []  # type: ignore[attr-defined]


# --- the delay between pokes (poke and reschedule modes) ----------------------------------


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [(0.0, 2.0), (2.5, 3.0), (6.0, 4.5), (5000.0, 60.0)],
    ids=["first", "second", "third", "capped"],
)
def test_poke_interval_follows_the_backoff_schedule(elapsed: float, expected: float) -> None:
    sensor = make(COMPLETED)
    # By elapsed time (reschedule mode has no poke counter across pokes), whatever poke_count says.
    assert sensor._get_next_poke_interval(time.monotonic(), lambda: elapsed, 1) == pytest.approx(expected)
    assert sensor._get_next_poke_interval(time.monotonic(), lambda: elapsed, 99) == pytest.approx(expected)


def test_poke_interval_never_passes_the_timeout_and_honours_retry_after() -> None:
    sensor = make(NyneRateLimitError("slow down", status_code=429, retry_after=45.0), timeout=100)
    assert sensor.poke({}) is False
    assert sensor._get_next_poke_interval(time.monotonic(), lambda: 1.0, 1) == 45.0
    assert sensor._get_next_poke_interval(time.monotonic(), lambda: 80.0, 1) == 20.0


def test_non_deferrable_poke_mode_runs_airflows_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    clock = [1000.0]

    def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(time, "sleep", fake_sleep)
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    sensor = make(status("queued"), status("processing"), COMPLETED, deferrable=False, mode="poke")
    assert sensor.execute({}) == SUMMARY
    assert len(sleeps) == 2
    # The same schedule as the trigger: 2 s, then 3 s.
    assert sleeps == pytest.approx([2.0, 3.0])


def test_non_deferrable_soft_fail_skips_a_failed_job() -> None:
    sensor = make(status("failed", error="private"), deferrable=False, soft_fail=True)
    with pytest.raises(AirflowSkipException):
        sensor.execute({})


# --- deferrable -----------------------------------------------------------------------------


def test_deferrable_returns_at_once_when_already_complete() -> None:
    assert make(COMPLETED).execute({}) == SUMMARY


def test_deferrable_checks_once_then_defers_with_a_deadline() -> None:
    sensor = make(status("processing"), timeout=300, nyne_conn_id="c", max_transient_errors=4)
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        sensor.execute({})
    assert sensor.hook.polled == ["req-1"]  # type: ignore[attr-defined]
    trigger = info.value.trigger
    assert isinstance(trigger, NyneInteractionsTrigger)
    assert (trigger.request_id, trigger.nyne_conn_id, trigger.max_transient_errors) == ("req-1", "c", 4)
    assert before + 300 <= trigger.end_time <= time.time() + 300
    assert info.value.method_name == "execute_complete"


def test_deferrable_defers_through_a_transient_first_check() -> None:
    sensor = make(NyneServerError("unavailable", status_code=503))
    with pytest.raises(TaskDeferred):
        sensor.execute({})


@pytest.mark.parametrize(
    ("soft_fail", "expected"),
    [(False, AirflowFailException), (True, AirflowSkipException)],
    ids=["fail", "soft-fail"],
)
def test_deferrable_first_check_failure(soft_fail: bool, expected: type[Exception]) -> None:
    with pytest.raises(expected):
        make(NyneNotFoundError("gone", status_code=404), soft_fail=soft_fail).execute({})


@pytest.mark.parametrize(
    ("event", "expected", "fragment"),
    [
        (
            {"status": "failed", "message": "request req-1 failed: Profile is private"},
            AirflowFailException,
            "Profile is private",
        ),
        (
            {"status": "timeout", "message": "request req-1 still processing"},
            AirflowSensorTimeout,
            "Timed out",
        ),
        (
            {"status": "error", "message": "gone", "http_status": 404, "error_code": "request_not_found"},
            AirflowFailException,
            "HTTP 404",
        ),
        (
            {"status": "error", "message": "bad key", "http_status": 401, "error_code": "invalid_api_key"},
            AirflowFailException,
            "HTTP 401",
        ),
        ({"status": "error", "message": "down", "http_status": 503}, AirflowException, "HTTP 503"),
    ],
    ids=["failed", "timeout", "expired", "credentials", "transient"],
)
def test_execute_complete_names_the_cause(
    event: dict[str, Any], expected: type[Exception], fragment: str
) -> None:
    sensor = make(COMPLETED)
    with pytest.raises(AirflowException, match=fragment) as info:
        sensor.execute_complete({}, {"request_id": "req-1", **event})
    assert type(info.value) is expected
    soft = make(COMPLETED, soft_fail=True)
    with pytest.raises(AirflowSkipException):
        soft.execute_complete({}, {"request_id": "req-1", **event})


def test_execute_complete_returns_the_summary() -> None:
    event = {"status": "success", "request_id": "req-1", "total_count": 21, "polls": 4}
    assert make(COMPLETED).execute_complete({}, event) == SUMMARY


# --- on_kill ------------------------------------------------------------------------------


@pytest.mark.parametrize("deferrable", [False, True], ids=["poking-in-the-worker", "first-check"])
def test_killed_while_waiting_says_the_lookup_runs_on_and_a_retry_waits_again(
    deferrable: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    sensor = make(status("processing"), deferrable=deferrable)
    if deferrable:
        with pytest.raises(TaskDeferred):
            sensor.execute({})
    else:
        assert sensor.poke({}) is False
    capsys.readouterr()
    sensor.on_kill()
    message = " ".join(line for line in capsys.readouterr().out.splitlines() if "[warning" in line)
    assert (
        "Nyne request req-1 runs: the lookup keeps running at Nyne (there is no cancel endpoint)" in message
    )
    assert "charged 3 credits if it completes with results" in message
    assert "A retry of this sensor waits for the same request again" in message
    assert sensor.hook.polled == ["req-1"]  # on_kill itself asks nothing
