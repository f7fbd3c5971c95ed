"""Rate-limit windows scaled by ``rate_limit_time_scale``: lengths, reopening and header precision.

Window lengths are checked against the server's own reset times, bracketed by the client's
clock before and after each request, so a slow machine widens the bracket instead of
failing the test. Waits last until the reset time the server announced, no longer.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.integration.simulator.helpers import Api, error_code

pytestmark = pytest.mark.integration

INTEGER = re.compile(r"^[0-9]+$")
DECIMAL = re.compile(r"^[0-9]+\.[0-9]{1,3}$")
#: Headers are rounded up to the millisecond when scaled.
MS = 0.001


def _timed(api: Api) -> tuple[float, httpx.Response, float]:
    before = time.time()
    response = api.usage()
    return before, response, time.time()


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


@pytest.mark.parametrize(
    ("scale", "per_minute", "per_hour", "window"),
    [
        # The minute window at 0.025 lasts 1.5 s; the hour window (90 s) has room to spare.
        pytest.param(0.025, 3, 1000, 60 * 0.025, id="minute-window"),
        # The hour window at 0.0004 lasts 1.44 s; the minute window (24 ms) never binds.
        pytest.param(0.0004, 1000, 3, 3600 * 0.0004, id="hour-window"),
    ],
)
def test_scaled_window_opens_and_closes_on_time(
    api: Api, sim: NyneSimulator, scale: float, per_minute: int, per_hour: int, window: float
) -> None:
    sim.configure(rate_limit_per_minute=per_minute, rate_limit_per_hour=per_hour, rate_limit_time_scale=scale)

    before, first, after = _timed(api)
    second, third = api.usage(), api.usage()
    refused_before, refused, refused_after = _timed(api)
    reset_at = float(first.headers["X-RateLimit-Reset"])
    _sleep_until(reset_at)
    reopened_before, reopened, reopened_after = _timed(api)

    # The window opened with the first request and lasts exactly its scaled length.
    assert [r.status_code for r in (first, second, third)] == [200, 200, 200]
    assert [r.headers["X-RateLimit-Remaining"] for r in (first, second, third)] == ["2", "1", "0"]
    assert {r.headers["X-RateLimit-Limit"] for r in (first, second, third)} == {"3"}
    assert before + window <= reset_at <= after + window + MS
    assert {r.headers["X-RateLimit-Reset"] for r in (first, second, third)} == {
        first.headers["X-RateLimit-Reset"]
    }
    assert 0 < float(first.headers["RateLimit-Reset"]) <= window + MS
    # Until then the account is refused, told to come back exactly at the reset.
    assert refused.status_code == 429
    assert error_code(refused) == "rate_limit_exceeded"
    retry_after = float(refused.headers["Retry-After"])
    assert reset_at - refused_after - MS <= retry_after <= reset_at - refused_before + MS
    assert float(refused.headers["RateLimit-Reset"]) == retry_after
    assert refused.headers["X-RateLimit-Reset"] == first.headers["X-RateLimit-Reset"]
    # At the announced reset a new window opens, as long as the first.
    assert reopened.status_code == 200
    assert reopened.headers["X-RateLimit-Remaining"] == "2"
    assert (
        reopened_before + window
        <= float(reopened.headers["X-RateLimit-Reset"])
        <= reopened_after + window + MS
    )
    assert sim.ledger.status_counts("usage") == {200: 4, 429: 1}


@pytest.mark.parametrize(
    ("scale", "form"),
    [
        pytest.param(1.0, INTEGER, id="unscaled-integers"),
        pytest.param(0.5, DECIMAL, id="scaled-decimals"),
        pytest.param(2.0, DECIMAL, id="slowed-decimals"),
    ],
)
def test_reset_headers_are_integers_unless_scaled(
    api: Api, sim: NyneSimulator, scale: float, form: re.Pattern[str]
) -> None:
    sim.configure(rate_limit_per_minute=1, rate_limit_time_scale=scale)

    before, accepted, _ = _timed(api)
    refused = api.usage()

    assert (accepted.status_code, refused.status_code) == (200, 429)
    for name in ("X-RateLimit-Reset", "RateLimit-Reset"):
        assert form.match(accepted.headers[name]), (name, accepted.headers[name])
        assert form.match(refused.headers[name]), (name, refused.headers[name])
    assert form.match(refused.headers["Retry-After"]), refused.headers["Retry-After"]
    # Limits and counts stay integers whatever the scale.
    assert INTEGER.match(accepted.headers["X-RateLimit-Limit"])
    assert INTEGER.match(accepted.headers["RateLimit-Remaining"])
    # Whole seconds are rounded up: the reset is never announced early.
    assert float(accepted.headers["X-RateLimit-Reset"]) >= before + 60 * scale
    assert 0 < float(refused.headers["Retry-After"]) <= 60 * scale + (MS if scale != 1 else 1)


def test_scale_changed_at_run_time_applies_to_the_next_window(api: Api, sim: NyneSimulator) -> None:
    sim.configure(rate_limit_per_minute=1, rate_limit_time_scale=0.01)
    first = api.usage()
    _sleep_until(float(first.headers["X-RateLimit-Reset"]))

    sim.configure(rate_limit_time_scale=1.0)
    before, second, after = _timed(api)

    assert first.status_code == second.status_code == 200
    assert float(first.headers["RateLimit-Reset"]) <= 0.6 + MS
    reset_at = int(second.headers["X-RateLimit-Reset"])
    assert before + 60 <= reset_at <= after + 61
    assert api.usage().status_code == 429


@pytest.mark.parametrize(
    "scale",
    [pytest.param(0, id="zero"), pytest.param(-1, id="negative"), pytest.param("fast", id="not-a-number")],
)
def test_bad_scale_is_refused_and_changes_nothing(sim: NyneSimulator, scale: object) -> None:
    with pytest.raises(ValueError, match="rate_limit_time_scale must be a number > 0"):
        sim.configure(rate_limit_time_scale=scale)

    assert sim.settings.rate_limit_time_scale == 1.0
