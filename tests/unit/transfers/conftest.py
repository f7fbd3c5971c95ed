"""Fixtures for the transfer unit tests."""

from __future__ import annotations

import pytest

from airflow_provider_nyne.client.models import JobStatus
from tests.unit.transfers.samples import SHAPES, completed


@pytest.fixture(params=sorted(SHAPES), ids=sorted(SHAPES))
def shaped_status(request: pytest.FixtureRequest) -> JobStatus:
    """A completed status whose items come in one of the known shapes (flat, actor, string counts)."""
    return completed(SHAPES[request.param]())
