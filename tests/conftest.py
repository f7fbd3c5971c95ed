"""Test-suite set-up shared by every test.

Airflow reads its configuration when first imported, so the environment it needs (a
throwaway ``AIRFLOW_HOME`` with a SQLite database, no examples, quiet logs) is set here,
before any test module imports Airflow.
"""

from __future__ import annotations

import os
import tempfile

import pytest

_HOME = os.environ.get("NYNE_TEST_AIRFLOW_HOME") or tempfile.mkdtemp(prefix="nyne-airflow-home-")
os.environ["NYNE_TEST_AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW_HOME"] = _HOME
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", os.path.join(_HOME, "dags"))
os.environ.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{os.path.join(_HOME, 'airflow.db')}")
os.environ.setdefault("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "INFO")
os.environ.setdefault(
    "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES_REGEXP", r"(airflow|airflow_provider_nyne)\..*"
)
# Never reach out of the machine from tests.
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

pytest_plugins = [
    "tests.fixtures.airflow",
    "tests.fixtures.simulator",
    "tests.fixtures.s3",
    "tests.fixtures.airflow_processes",
]


@pytest.fixture(autouse=True)
def _fresh_request_budgets() -> None:
    """Every test starts with no API key's request budget: a key paused by one test must not slow the next."""
    from airflow_provider_nyne.client.http import forget_shared_state

    forget_shared_state()


@pytest.fixture
def closed_pools(monkeypatch: pytest.MonkeyPatch) -> set[int]:
    """The ids of the httpx transports (connection pools) closed during the test."""
    import httpx

    closed: set[int] = set()
    original = httpx.AsyncHTTPTransport.aclose

    async def aclose(self: httpx.AsyncHTTPTransport) -> None:
        closed.add(id(self))
        await original(self)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "aclose", aclose)
    return closed
