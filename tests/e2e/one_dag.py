"""A loopback deployment that runs DAG files against a fresh simulator, for end-to-end tests.

Typical use::

    @pytest.fixture
    def sim() -> Iterator[NyneSimulator]:
        with quiet_simulator("race") as simulator:
            yield simulator

    @pytest.fixture
    def deployment(sim, tmp_path):
        with one_dag_deployment(tmp_path, sim, DAG_ID, DAG_SOURCE, extra={...}) as af:
            yield af
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from airflow_provider_nyne.testing.simulator import NyneSimulator
from tests.fixtures.airflow_processes import AirflowProcesses, deployment_env


@contextmanager
def quiet_simulator(name: str, **settings: Any) -> Iterator[NyneSimulator]:
    """
    A simulator with fresh credentials, short jobs and no rate limits (they have tests of their own).

    :param name: a word in the credentials, so that a leak says which test it came from
    :param settings: other simulator settings
    """
    options: dict[str, Any] = {
        "api_key": f"{name}KEY{secrets.token_hex(8)}",
        "api_secret": f"{name}SECRET{secrets.token_hex(12)}",
        "job_duration": 0.5,
        "rate_limit_per_minute": None,
        "rate_limit_per_hour": None,
        **settings,
    }
    with NyneSimulator(**options) as simulator:
        yield simulator


@contextmanager
def dags_deployment(
    tmp_path: Path,
    sim: NyneSimulator,
    dags: Mapping[str, str],
    *,
    extra: Mapping[str, str] | None = None,
    unpause: bool = True,
) -> Iterator[AirflowProcesses]:
    """
    Scheduler, triggerer, dag-processor and api-server on loopback, with the DAGs parsed.

    Every process is stopped by pid when the block ends, and none may be left.

    :param tmp_path: where ``AIRFLOW_HOME`` goes
    :param sim: the simulator the ``nyne_default`` connection points at
    :param dags: the source of each DAG file, by DAG id (the file is ``<dag id>.py``)
    :param extra: more environment for every process
    :param unpause: unpause every DAG once parsed (the scheduler then creates scheduled runs)
    """
    home = tmp_path / "airflow"
    folder = home / "dags"
    env = deployment_env(home, dags_folder=folder, extra={**sim.airflow_env(), **(extra or {})})
    for dag_id, source in dags.items():
        (folder / f"{dag_id}.py").write_text(source)
    with AirflowProcesses(home, env) as af:
        af.run_cli("db", "migrate")
        af.start_all()
        for dag_id in dags:
            af.wait_for_dag(dag_id)
            if unpause:
                af.run_cli("dags", "unpause", dag_id)
        yield af
    assert af.leftover_processes() == []


def one_dag_deployment(
    tmp_path: Path, sim: NyneSimulator, dag_id: str, source: str, *, extra: Mapping[str, str] | None = None
) -> AbstractContextManager[AirflowProcesses]:
    """:func:`dags_deployment` of one DAG, unpaused."""
    return dags_deployment(tmp_path, sim, {dag_id: source}, extra=extra)
