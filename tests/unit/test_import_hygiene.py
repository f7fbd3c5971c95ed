"""Importing any module of the package emits no warning, deprecations included.

A DAG file imports operators and sensors on every parse, so a warning at import time shows
up in every DAG processor log and, with ``-W error`` (how many teams run their DAG tests),
breaks DAG parsing altogether. Each module is imported alone in a fresh interpreter with
``-W error`` and ``PYTHONWARNINGS=error``, so that one module's imports cannot hide
another's warning. The module list comes from walking the installed package, so a new
module is covered the day it is added. The version matrix (``make matrix``) runs this file
on the lowest and the newest supported Airflow.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

import airflow_provider_nyne

PACKAGE_FILE = Path(airflow_provider_nyne.__file__).resolve()
_WALK_ERRORS: list[str] = []

# The child prints where the package came from, so the test can check that it imported the
# same copy as this process (the installed wheel in the matrix, the source tree in .venv).
_CHILD = """
import importlib, sys
importlib.import_module(sys.argv[1])
import airflow_provider_nyne
print(airflow_provider_nyne.__file__)
"""


def _record_walk_error(name: str) -> None:
    _WALK_ERRORS.append(f"{name}: {sys.exc_info()[1]!r}")


def _modules() -> list[str]:
    """Every module and package under ``airflow_provider_nyne`` (``__main__`` modules excluded)."""
    names = {airflow_provider_nyne.__name__}
    for info in pkgutil.walk_packages(
        airflow_provider_nyne.__path__,
        prefix=f"{airflow_provider_nyne.__name__}.",
        onerror=_record_walk_error,
    ):
        if info.name.rsplit(".", 1)[-1] != "__main__":
            names.add(info.name)
    return sorted(names)


MODULES = _modules()


def _import_alone(module: str, home: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "error", "AIRFLOW_HOME": home}
    env.pop("PYTHONPATH", None)
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", _CHILD, module],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


@pytest.fixture(scope="module")
def imports(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Future[subprocess.CompletedProcess[str]]]]:
    """Start every import at once (two at a time) and let each test wait for its own."""
    # A home that Airflow has already initialised, so that first-run set-up is not what is tested.
    home = os.environ["AIRFLOW_HOME"]
    cwd = tmp_path_factory.mktemp("imports")
    subprocess.run(
        [sys.executable, "-c", "import airflow.configuration"], check=True, capture_output=True, cwd=cwd
    )
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        yield {module: pool.submit(_import_alone, module, home, cwd) for module in MODULES}


def test_every_package_is_walkable() -> None:
    """A package that fails to import would silently drop its modules from the list below."""
    assert _WALK_ERRORS == []
    assert "airflow_provider_nyne.hooks.nyne" in MODULES
    assert "airflow_provider_nyne.get_provider_info" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_import_emits_no_warning(
    module: str, imports: dict[str, Future[subprocess.CompletedProcess[str]]]
) -> None:
    result = imports[module].result()
    assert result.returncode == 0, f"importing {module} with -W error failed:\n{result.stderr[-4000:]}"
    imported_from = Path(result.stdout.strip().splitlines()[-1]).resolve()
    assert imported_from == PACKAGE_FILE, "the child imported another copy of the package"
