"""The process harness itself: readiness after a restart, and nothing left behind when a test fails."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from tests.fixtures.airflow_processes import AirflowProcesses, deployment_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


class _Boom(Exception):
    pass


def _restart_then_fail(procs: AirflowProcesses, seen: list[psutil.Process]) -> None:
    with procs:
        procs.run_cli("db", "migrate")
        first = procs.start("dag-processor")
        seen += procs._tree(first)
        second = procs.restart("dag-processor")  # ready means: a job row newer than its start
        seen += procs._tree(second)
        assert second.pid != first.pid
        assert not first.alive()
        assert procs.is_running("dag-processor")
        assert len(procs.log_paths("dag-processor")) == 2
        raise _Boom  # a failing test: leaving the with block must still stop everything


def test_restart_then_failure_stops_every_process(tmp_path: Path) -> None:
    home = tmp_path / "airflow"
    procs = AirflowProcesses(home, deployment_env(home, dags_folder=home / "dags"))
    seen: list[psutil.Process] = []
    with pytest.raises(_Boom):
        _restart_then_fail(procs, seen)

    assert len(seen) >= 2
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in seen)
    assert procs.leftover_processes() == []
