"""Job durations spread log-normally around ``job_duration``, reproducibly for a seed.

Durations are read from the ledger (completion time minus submission time, both from the
server's clock), so the tests need no timing of their own. A seed fixes the sequence, so
the statistics asserted here are the same on every run.
"""

from __future__ import annotations

import math
import statistics

import pytest

from airflow_provider_nyne.testing.simulator import JobTiming, NyneSimulator
from tests.integration.simulator.helpers import Api

pytestmark = pytest.mark.integration

MEDIAN = 0.02


def _finished(sim: NyneSimulator, ids: list[str]) -> list[float]:
    """Wait until the jobs finished; return their durations in the order of ``ids``."""
    sim.ledger.wait_for(lambda ledger: all(job.completed_at is not None for job in ledger.jobs()), timeout=10)
    timings = {job.request_id: job for job in sim.ledger.jobs()}
    return [_duration(timings[rid]) for rid in ids]


def _duration(job: JobTiming) -> float:
    assert job.completed_at is not None
    return job.completed_at - job.submitted_at


def _durations(api: Api, sim: NyneSimulator, count: int) -> list[float]:
    """Submit ``count`` jobs one after the other; return their durations in submission order."""
    return _finished(sim, [api.submit_ok(username=f"user_{index}") for index in range(count)])


def test_durations_spread_log_normally_around_job_duration(api: Api, sim: NyneSimulator) -> None:
    sim.configure(job_duration=MEDIAN, job_duration_sigma=0.5, job_duration_seed=1)

    durations = _durations(api, sim, 200)

    logs = [math.log(d / MEDIAN) for d in durations]
    assert statistics.median(durations) == pytest.approx(MEDIAN, rel=0.15)
    assert statistics.stdev(logs) == pytest.approx(0.5, rel=0.15)
    # Log-normal, not uniform: both tails reach beyond a factor of 1.5.
    assert min(durations) < MEDIAN / 1.5
    assert max(durations) > MEDIAN * 1.5
    assert len(set(durations)) > 190


def test_same_seed_same_durations_other_seed_others(api: Api, sim: NyneSimulator) -> None:
    sim.configure(job_duration=MEDIAN, job_duration_sigma=0.8, job_duration_seed=7)
    first = _durations(api, sim, 20)
    sim.reset()  # keeps settings; the sequence starts again
    again = _durations(api, sim, 20)
    sim.reset()
    sim.configure(job_duration_seed=8)
    other = _durations(api, sim, 20)

    assert again == pytest.approx(first, abs=1e-6)
    assert other != pytest.approx(first, abs=1e-6)


def test_zero_sigma_gives_every_job_its_duration(api: Api, sim: NyneSimulator) -> None:
    sim.configure(job_duration=MEDIAN, job_duration_sigma=0.0, job_duration_seed=3)

    durations = _durations(api, sim, 10)

    assert durations == pytest.approx([MEDIAN] * 10, abs=1e-6)


def test_slow_jobs_spread_around_their_own_duration(api: Api, sim: NyneSimulator) -> None:
    sim.configure(job_duration=0.005, slow_job_duration=MEDIAN, job_duration_sigma=0.5)

    durations = _finished(sim, [api.submit_ok(username=f"slow_user_{index}") for index in range(50)])

    assert statistics.median(durations) == pytest.approx(MEDIAN, rel=0.3)
    assert max(durations) > MEDIAN * 1.3


def test_a_job_duration_fault_is_not_spread(api: Api, sim: NyneSimulator) -> None:
    sim.configure(job_duration=MEDIAN, job_duration_sigma=1.0)
    sim.faults.job_duration(0.03, times=5)

    durations = _durations(api, sim, 5)

    assert durations == pytest.approx([0.03] * 5, abs=1e-6)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"job_duration_sigma": -0.1}, "job_duration_sigma must be a number >= 0", id="negative-sigma"
        ),
        pytest.param(
            {"job_duration_sigma": "wide"}, "job_duration_sigma must be a number >= 0", id="text-sigma"
        ),
        pytest.param({"job_duration_seed": 1.5}, "job_duration_seed must be an integer", id="float-seed"),
    ],
)
def test_bad_spread_settings_are_refused(
    sim: NyneSimulator, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sim.configure(**changes)

    assert (sim.settings.job_duration_sigma, sim.settings.job_duration_seed) == (0.0, 0)
