"""Fixtures for the simulator contract tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.integration.simulator.helpers import FAST_JOB, Api


@pytest.fixture
def sim(simulator_session: NyneSimulator) -> NyneSimulator:
    """The shared simulator, reset for this test, with jobs that finish in 50 ms."""
    simulator_session.configure(job_duration=FAST_JOB)
    return simulator_session


@pytest.fixture
def api(sim: NyneSimulator) -> Iterator[Api]:
    """A plain httpx caller authenticated as the simulator's default account."""
    caller = Api(sim)
    yield caller
    caller.client.close()
