"""The polling schedule and the wait loop, with a fake clock: no real sleeping."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_nyne.client import models
from airflow_provider_nyne.client.errors import (
    NyneAuthError,
    NyneError,
    NyneForbiddenError,
    NyneNotFoundError,
    NyneRateLimitError,
    NyneResponseError,
    NyneServerError,
    NyneTransportError,
)
from airflow_provider_nyne.client.models import JobStatus
from airflow_provider_nyne.client.polling import (
    PollSchedule,
    WaitOutcome,
    wait_for_job,
    wait_for_job_sync,
)

START = 1_700_000_000.0
EXACT = PollSchedule(jitter=0)


def running(state: str = "processing") -> JobStatus:
    return JobStatus.from_api({"status": state}, request_id="req-1")


def completed(total: int | None = 3) -> JobStatus:
    result: dict[str, Any] = {
        "interaction_type": "followers",
        "interactions": [{"username": "a"}, {"username": "b"}, {"username": "c"}],
    }
    if total is not None:
        result["total_count"] = total
    return JobStatus.from_api(
        {"status": "completed", "completed": True, "result": result}, request_id="req-1"
    )


def failed(reason: str = "Profile is private") -> JobStatus:
    return JobStatus.from_api({"status": "failed", "error": reason}, request_id="req-1")


class FakeClock:
    """A wall clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = START
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


class ScriptedClient:
    """Answers polls from a script; the last entry repeats forever. Records when each poll happened."""

    def __init__(self, clock: FakeClock, script: list[JobStatus | NyneError]) -> None:
        self.clock = clock
        self.script = list(script)
        self.poll_times: list[float] = []
        self.deadlines: list[float | None] = []

    def _next(self, request_id: str) -> JobStatus:
        assert request_id == "req-1"
        self.poll_times.append(self.clock.now - START)
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, NyneError):
            raise item
        return item

    def get_status(self, request_id: str, *, deadline: float | None = None) -> JobStatus:
        self.deadlines.append(deadline)
        return self._next(request_id)


class AsyncScriptedClient(ScriptedClient):
    async def get_status(self, request_id: str, *, deadline: float | None = None) -> JobStatus:  # type: ignore[override]
        self.deadlines.append(deadline)
        return self._next(request_id)


Runner = Callable[..., Any]


async def _run_async(clock: FakeClock, script: list[JobStatus | NyneError], **kwargs: Any) -> tuple:
    client = AsyncScriptedClient(clock, script)
    kwargs.setdefault("schedule", EXACT)
    kwargs.setdefault("deadline", START + 3600)
    outcome = await wait_for_job(client, "req-1", clock=clock.time, sleep=clock.asleep, **kwargs)
    return outcome, client


async def _run_sync(clock: FakeClock, script: list[JobStatus | NyneError], **kwargs: Any) -> tuple:
    client = ScriptedClient(clock, script)
    kwargs.setdefault("schedule", EXACT)
    kwargs.setdefault("deadline", START + 3600)
    outcome = wait_for_job_sync(client, "req-1", clock=clock.time, sleep=clock.sleep, **kwargs)
    return outcome, client


@pytest.fixture(params=[_run_async, _run_sync], ids=["async", "sync"])
def run(request: pytest.FixtureRequest) -> Runner:
    """Both drivers of the one loop must behave the same."""
    return request.param


# --- PollSchedule -------------------------------------------------------------------------


def test_default_schedule_is_fast_then_exponential_then_capped() -> None:
    delays = [EXACT.base_delay(n) for n in range(12)]
    assert delays == pytest.approx(
        [2.0, 3.0, 4.5, 6.75, 10.125, 15.1875, 22.78125, 34.171875, 51.2578125, 60.0, 60.0, 60.0]
    )


def test_poll_times_accumulate_the_delays() -> None:
    assert EXACT.poll_times(30) == pytest.approx([2.0, 5.0, 9.5, 16.25, 26.375])
    assert PollSchedule(poll_interval=5, max_poll_interval=5, jitter=0).poll_times(20) == [5, 10, 15, 20]


def test_fixed_interval_when_backoff_factor_is_one() -> None:
    schedule = PollSchedule(poll_interval=4, max_poll_interval=60, backoff_factor=1, jitter=0)
    assert [schedule.base_delay(n) for n in range(5)] == [4, 4, 4, 4, 4]


def test_huge_poll_index_stays_at_the_cap() -> None:
    assert EXACT.base_delay(10_000) == 60.0


def test_jitter_spreads_each_delay_within_bounds() -> None:
    schedule = PollSchedule(poll_interval=10, max_poll_interval=10, jitter=0.1)
    assert schedule.delay(0, rng=lambda lo, hi: lo) == pytest.approx(9.0)
    assert schedule.delay(0, rng=lambda lo, hi: hi) == pytest.approx(11.0)
    assert all(9.0 <= schedule.delay(3) <= 11.0 for _ in range(200))


@pytest.mark.parametrize(
    ("elapsed", "expected"),
    [(0, 2.0), (1.9, 2.0), (2.0, 3.0), (5.5, 4.5), (100, 51.2578125), (10_000, 60.0)],
    ids=["start", "before-first", "at-first", "third", "late", "capped"],
)
def test_delay_after_elapsed_time_follows_the_schedule(elapsed: float, expected: float) -> None:
    assert EXACT.delay_after(elapsed) == pytest.approx(expected)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"poll_interval": 0},
        {"poll_interval": -1},
        {"poll_interval": 10, "max_poll_interval": 5},
        {"backoff_factor": 0.5},
        {"jitter": 1.0},
        {"jitter": -0.1},
    ],
    ids=[
        "zero-interval",
        "negative-interval",
        "cap-below-interval",
        "shrinking",
        "jitter-1",
        "jitter-negative",
    ],
)
def test_schedule_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PollSchedule(**kwargs)


def test_schedules_are_values() -> None:
    same = PollSchedule(poll_interval=5, max_poll_interval=30)
    assert same == PollSchedule(5, 30)
    assert hash(same) == hash(PollSchedule(5, 30))
    assert same != PollSchedule(5, 30, jitter=0)
    assert same != (5, 30, 1.5, 0.1)
    assert repr(same) == "PollSchedule(poll_interval=5, max_poll_interval=30, backoff_factor=1.5, jitter=0.1)"


# --- Terminal outcomes --------------------------------------------------------------------


async def test_completes_and_reports_total_count_and_polls(run: Runner) -> None:
    clock = FakeClock()
    outcome, client = await run(clock, [running("queued"), running(), running(), completed(42)])
    assert outcome == WaitOutcome(
        status="success", request_id="req-1", total_count=42, message="request req-1 completed", polls=4
    )
    # Sleeps follow the schedule, and each poll happens right after its sleep.
    assert clock.sleeps == pytest.approx([2.0, 3.0, 4.5, 6.75])
    assert client.poll_times == pytest.approx([2.0, 5.0, 9.5, 16.25])


async def test_failed_job_carries_the_api_reason(run: Runner) -> None:
    outcome, _ = await run(FakeClock(), [running(), failed("Profile is private")])
    assert outcome.status == "failed"
    assert outcome.message == "request req-1 failed: Profile is private"
    assert outcome.polls == 2
    assert outcome.total_count is None


async def test_pending_and_unknown_states_keep_waiting(run: Runner) -> None:
    weird = JobStatus.from_api({"status": "warming_up"}, request_id="req-1")
    outcome, _ = await run(FakeClock(), [running("pending"), weird, completed(1)])
    assert (outcome.status, outcome.polls) == ("success", 3)


async def test_waiting_never_parses_the_interactions(run: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("Interaction objects must not be built while waiting")

    monkeypatch.setattr(models.Interaction, "from_api", classmethod(boom))
    outcome, _ = await run(FakeClock(), [running(), completed(total=None)])
    # total_count falls back to the number of items, counted without parsing them.
    assert (outcome.status, outcome.total_count) == ("success", 3)


# --- Deadline -----------------------------------------------------------------------------


async def test_deadline_is_never_slept_past_and_last_poll_is_at_it(run: Runner) -> None:
    clock = FakeClock()
    outcome, client = await run(clock, [running()], deadline=START + 20)
    assert outcome.status == "timeout"
    # 2 + 3 + 4.5 + 6.75 = 16.25, then only 3.75 s remain: the last sleep is shortened.
    assert clock.sleeps == pytest.approx([2.0, 3.0, 4.5, 6.75, 3.75])
    assert sum(clock.sleeps) == pytest.approx(20.0)
    assert client.poll_times[-1] == pytest.approx(20.0)
    assert outcome.polls == 5
    assert "still processing at the deadline after 5 polls" in (outcome.message or "")


async def test_job_completing_at_the_deadline_poll_is_a_success(run: Runner) -> None:
    outcome, client = await run(FakeClock(), [running()] * 4 + [completed(7)], deadline=START + 20)
    assert (outcome.status, outcome.total_count, outcome.polls) == ("success", 7, 5)
    assert client.poll_times[-1] == pytest.approx(20.0)


async def test_deadline_already_passed_polls_once_without_sleeping(run: Runner) -> None:
    clock = FakeClock()
    outcome, _ = await run(clock, [running()], deadline=START - 5)
    assert (outcome.status, outcome.polls) == ("timeout", 1)
    assert clock.sleeps == []
    clock = FakeClock()
    outcome, _ = await run(clock, [completed(2)], deadline=START - 5)
    assert (outcome.status, outcome.polls) == ("success", 1)


# --- Rate limits and transient errors -------------------------------------------------------


def rate_limited(retry_after: float | None) -> NyneRateLimitError:
    return NyneRateLimitError(
        "rate limit exceeded", retry_after=retry_after, status_code=429, code="rate_limit_exceeded"
    )


async def test_retry_after_is_honoured_when_longer_than_the_schedule(run: Runner) -> None:
    clock = FakeClock()
    outcome, client = await run(clock, [rate_limited(17), running(), completed()])
    assert outcome.status == "success"
    assert clock.sleeps == pytest.approx([2.0, 17.0, 4.5])
    assert client.poll_times == pytest.approx([2.0, 19.0, 23.5])


async def test_short_retry_after_does_not_shorten_the_schedule(run: Runner) -> None:
    clock = FakeClock()
    await run(clock, [running(), running(), rate_limited(0.5), completed()])
    assert clock.sleeps == pytest.approx([2.0, 3.0, 4.5, 6.75])


async def test_retry_after_beyond_the_deadline_is_cut_at_the_deadline(run: Runner) -> None:
    clock = FakeClock()
    outcome, _ = await run(clock, [rate_limited(600), running()], deadline=START + 30)
    assert clock.sleeps == pytest.approx([2.0, 28.0])
    assert (outcome.status, outcome.polls) == ("timeout", 2)


@pytest.mark.parametrize(
    "error",
    [
        NyneServerError("service unavailable", status_code=503, code="service_unavailable"),
        NyneServerError("internal error", status_code=500, code="internal_error"),
        NyneTransportError("connection reset"),
        NyneResponseError("not JSON", status_code=200),
    ],
    ids=["503", "500", "transport", "unreadable"],
)
async def test_transient_errors_are_tolerated_up_to_the_limit(run: Runner, error: NyneError) -> None:
    outcome, _ = await run(FakeClock(), [error, error, error, completed(5)], max_transient_errors=3)
    assert (outcome.status, outcome.total_count, outcome.polls) == ("success", 5, 4)


async def test_rate_limits_never_count_as_errors_in_a_row(run: Runner) -> None:
    # Twenty 429s in a row with a tolerance of 2 transient errors: the wait still succeeds.
    outcome, _ = await run(FakeClock(), [*[rate_limited(1)] * 20, completed(5)], max_transient_errors=2)
    assert (outcome.status, outcome.total_count, outcome.polls) == ("success", 5, 21)


async def test_rate_limit_until_the_deadline_is_a_timeout_not_an_error(run: Runner) -> None:
    outcome, _ = await run(FakeClock(), [rate_limited(5)], deadline=START + 30, max_transient_errors=0)
    assert outcome.status == "timeout"
    assert (outcome.http_status, outcome.error_code, outcome.error_type) == (
        429,
        "rate_limit_exceeded",
        "NyneRateLimitError",
    )


async def test_every_poll_may_wait_for_the_rate_limit_until_the_deadline(run: Runner) -> None:
    _, client = await run(FakeClock(), [running(), completed()], deadline=START + 300)
    assert client.deadlines == [START + 300, START + 300]


async def test_one_transient_error_too_many_surfaces_the_last_one(run: Runner) -> None:
    script: list[JobStatus | NyneError] = [
        NyneTransportError("connection reset"),
        NyneTransportError("read timeout"),
        NyneServerError("please retry", status_code=503, code="service_unavailable"),
        NyneServerError("down for maintenance", status_code=503, code="service_unavailable"),
        completed(),
    ]
    outcome, _ = await run(FakeClock(), script, max_transient_errors=3)
    assert outcome.status == "error"
    assert outcome.http_status == 503
    assert outcome.error_code == "service_unavailable"
    assert outcome.message == "down for maintenance (4 failed polls in a row)"
    assert outcome.polls == 4


async def test_a_successful_poll_resets_the_transient_error_count(run: Runner) -> None:
    boom = NyneServerError("boom", status_code=500, code="internal_error")
    script: list[JobStatus | NyneError] = [boom, boom, running(), boom, boom, running(), completed()]
    outcome, _ = await run(FakeClock(), script, max_transient_errors=2)
    assert (outcome.status, outcome.polls) == ("success", 7)


async def test_transient_errors_until_the_deadline_time_out_with_the_last_error(run: Runner) -> None:
    boom = NyneServerError("boom", status_code=502, code="bad_gateway")
    outcome, _ = await run(FakeClock(), [running(), boom], deadline=START + 10, max_transient_errors=50)
    assert outcome.status == "timeout"
    assert (outcome.http_status, outcome.error_code) == (502, "bad_gateway")
    assert "last poll failed" in (outcome.message or "")


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (
            NyneAuthError("the API key was rejected", status_code=401, code="invalid_api_key"),
            401,
            "invalid_api_key",
        ),
        (NyneForbiddenError("IP not allowed", status_code=403, code="ip_not_allowed"), 403, "ip_not_allowed"),
        (
            NyneNotFoundError("request not found", status_code=404, code="request_not_found"),
            404,
            "request_not_found",
        ),
    ],
    ids=["401", "403-ip", "404-expired"],
)
async def test_permanent_errors_end_the_wait_at_once(
    run: Runner, error: NyneError, status: int, code: str
) -> None:
    outcome, _ = await run(FakeClock(), [running(), error, completed()], max_transient_errors=10)
    assert outcome.status == "error"
    assert (outcome.http_status, outcome.error_code, outcome.polls) == (status, code, 2)
    assert outcome.message == error.message


# --- Outcome and logging -------------------------------------------------------------------


def test_outcome_event_is_plain_values() -> None:
    outcome = WaitOutcome(status="failed", request_id="r", message="m", polls=3)
    assert outcome.to_event() == {
        "status": "failed",
        "request_id": "r",
        "total_count": None,
        "message": "m",
        "error_code": None,
        "http_status": None,
        "polls": 3,
        "error_type": None,
    }


async def test_status_changes_are_logged_once_each(run: Runner, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="airflow_provider_nyne.client.polling")
    script: list[JobStatus | NyneError] = [running("queued")] * 3 + [running()] * 4 + [completed(1)]
    await run(FakeClock(), script)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "Nyne request req-1 is queued",
        "Nyne request req-1 is processing",
        "Nyne request req-1 completed: 1 interactions (8 polls)",
    ]
