"""The distributions users install: what the wheel and the sdist contain, and that the
installed wheel registers with Airflow under the right version.

The wheel and sdist under test are ``NYNE_WHEEL``/``NYNE_SDIST`` when set (the version
matrix sets them to the files in ``dist/`` it installed); otherwise they are built from the
source tree into a temporary folder. The installation checks need the package installed
from the wheel, not from the source tree, so they run only in the version matrix
(``NYNE_EXPECT_INSTALLED_PACKAGE=1``), which installs the wheel into a clean venv per
Airflow version.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import airflow_provider_nyne
from airflow_provider_nyne.get_provider_info import get_provider_info

pytestmark = pytest.mark.integration

DIST_NAME = "airflow-provider-nyne"
PACKAGE = "airflow_provider_nyne"
REPO = Path(__file__).resolve().parents[2]
SOURCE_PACKAGE = REPO / PACKAGE
#: The newest Airflow the version matrix installs (scripts/matrix.py).
NEWEST_TESTED_AIRFLOW = "3.3.2"
#: Files every wheel must ship (paths inside the package).
REQUIRED_IN_WHEEL = [
    "__init__.py",
    "py.typed",
    "get_provider_info.py",
    "client/__init__.py",
    "client/http.py",
    "hooks/nyne.py",
    "testing/__init__.py",
    "testing/simulator/__init__.py",
]


#: Folders of a working copy that never belong in a distribution.
LOCAL_STATE = (".venv", ".matrix", "dist", "build", ".demo", ".bench")
_NOT_COPIED = (
    *LOCAL_STATE,
    ".git",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
)


def _from_source_tree() -> bool:
    """True when the tests run next to the package's source (not from an installed wheel)."""
    return SOURCE_PACKAGE.is_dir() and (REPO / "pyproject.toml").is_file()


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"wheel": path, "sdist": path}``: from the environment, or built from the source tree."""
    if os.environ.get("NYNE_WHEEL") and os.environ.get("NYNE_SDIST"):
        return {"wheel": Path(os.environ["NYNE_WHEEL"]), "sdist": Path(os.environ["NYNE_SDIST"])}
    if not _from_source_tree():
        pytest.skip("no NYNE_WHEEL/NYNE_SDIST and no source tree to build them from")
    pytest.importorskip("build", reason="building the distributions needs the `build` package (dev extra)")
    # Build from a copy: `make dist` may be building in the source tree at the same time, and
    # local state planted in the copy must stay out of the sdist.
    tree = tmp_path_factory.mktemp("tree") / "src"
    shutil.copytree(REPO, tree, ignore=shutil.ignore_patterns(*_NOT_COPIED))
    for junk in LOCAL_STATE:
        (tree / junk).mkdir()
        (tree / junk / "junk.py").write_text("")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--quiet", "--outdir", str(out), str(tree)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.fixture(scope="module")
def wheel_names(dists: dict[str, Path]) -> list[str]:
    with zipfile.ZipFile(dists["wheel"]) as archive:
        return archive.namelist()


@pytest.fixture(scope="module")
def wheel_metadata(dists: dict[str, Path], wheel_names: list[str]) -> Message:
    (name,) = [n for n in wheel_names if n.endswith(".dist-info/METADATA")]
    with zipfile.ZipFile(dists["wheel"]) as archive:
        return Parser().parsestr(archive.read(name).decode())


@pytest.fixture(scope="module")
def sdist_names(dists: dict[str, Path]) -> list[str]:
    with tarfile.open(dists["sdist"]) as archive:
        names = archive.getnames()
    root = names[0].split("/")[0]
    return [n[len(root) + 1 :] for n in names if n.startswith(f"{root}/")]


def test_version_is_single_sourced(wheel_metadata: Message, dists: dict[str, Path]) -> None:
    version = airflow_provider_nyne.__version__
    assert wheel_metadata["Version"] == version
    assert dists["wheel"].name.startswith(f"{PACKAGE}-{version}-")
    assert get_provider_info()["versions"][0] == version
    assert importlib.metadata.version(DIST_NAME) == version


@pytest.mark.parametrize("path", REQUIRED_IN_WHEEL)
def test_wheel_ships(path: str, wheel_names: list[str]) -> None:
    assert f"{PACKAGE}/{path}" in wheel_names


def test_wheel_ships_only_the_package(wheel_names: list[str]) -> None:
    top_level = {name.split("/")[0] for name in wheel_names}
    (dist_info,) = [t for t in top_level if t.endswith(".dist-info")]
    assert top_level == {PACKAGE, dist_info}, (
        "tests, example DAGs and other repo folders stay out of the wheel"
    )
    assert not [n for n in wheel_names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
    assert f"{dist_info}/licenses/LICENSE" in wheel_names


def test_wheel_ships_every_source_module(wheel_names: list[str]) -> None:
    """A module added to the source tree (even in a folder without ``__init__.py``) is packaged."""
    if not _from_source_tree():
        pytest.skip("needs the source tree")
    source = {
        f"{PACKAGE}/{p.relative_to(SOURCE_PACKAGE).as_posix()}"
        for p in SOURCE_PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in {".pyc", ".pyo"}
    }
    packaged = {n for n in wheel_names if n.startswith(f"{PACKAGE}/")}
    assert source - packaged == set()


def test_wheel_registers_the_provider_entry_point(dists: dict[str, Path], wheel_names: list[str]) -> None:
    (name,) = [n for n in wheel_names if n.endswith(".dist-info/entry_points.txt")]
    with zipfile.ZipFile(dists["wheel"]) as archive:
        entry_points = archive.read(name).decode()
    assert "[apache_airflow_provider]" in entry_points
    assert "provider_info = airflow_provider_nyne.get_provider_info:get_provider_info" in entry_points


def test_wheel_metadata(wheel_metadata: Message) -> None:
    classifiers = wheel_metadata.get_all("Classifier") or []
    assert "Framework :: Apache Airflow" in classifiers
    assert "Framework :: Apache Airflow :: Provider" in classifiers
    assert wheel_metadata["License-Expression"] == "Apache-2.0"
    assert wheel_metadata["License-File"] == "LICENSE"
    urls = dict(u.split(", ", 1) for u in wheel_metadata.get_all("Project-URL") or [])
    assert {"Homepage", "Source", "Changelog", "Documentation"} <= set(urls)
    requires = [Requirement(r) for r in wheel_metadata.get_all("Requires-Dist") or []]
    (airflow,) = [r for r in requires if r.name == "apache-airflow"]
    # 3.1.0/3.1.1 do not import with current structlog; 3.1.2's UI has no provider connection forms.
    assert "3.1.2" not in airflow.specifier
    assert "3.1.3" in airflow.specifier
    assert NEWEST_TESTED_AIRFLOW in airflow.specifier
    assert "4.0.0" not in airflow.specifier
    assert wheel_metadata["Description-Content-Type"] == "text/markdown"
    assert wheel_metadata.get_payload(), "the README is the long description"


@pytest.mark.parametrize(
    "path",
    ["LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", f"{PACKAGE}/py.typed", "tests/conftest.py"],
)
def test_sdist_ships(path: str, sdist_names: list[str]) -> None:
    assert path in sdist_names


def test_sdist_ships_the_example_dags(sdist_names: list[str]) -> None:
    """Users copy the example DAGs from the sdist (they are not in the wheel)."""
    examples = REPO / "example_dags"
    if not examples.is_dir():
        pytest.skip("needs the repository's example_dags/")
    expected = {f"example_dags/{p.name}" for p in examples.glob("*.py")}
    assert expected <= set(sdist_names)


def test_sdist_leaves_out_local_state(sdist_names: list[str]) -> None:
    unwanted = tuple(f"{folder}/" for folder in (*LOCAL_STATE, ".git"))
    assert not [n for n in sdist_names if n.startswith(unwanted) or "__pycache__" in n]


# --- the installed wheel (version matrix only) ------------------------------------------------

installed_only = pytest.mark.skipif(
    os.environ.get("NYNE_EXPECT_INSTALLED_PACKAGE") != "1",
    reason="runs in the version matrix, where the package is installed from the wheel",
)


@installed_only
def test_package_comes_from_the_installed_wheel() -> None:
    package_file = Path(airflow_provider_nyne.__file__).resolve()
    assert package_file.is_relative_to(Path(sys.prefix).resolve()), package_file
    direct_url = importlib.metadata.distribution(DIST_NAME).read_text("direct_url.json")
    assert direct_url is not None
    assert not json.loads(direct_url).get("dir_info", {}).get("editable", False)
    matrix_airflow = os.environ.get("NYNE_MATRIX_AIRFLOW")
    if matrix_airflow:
        assert importlib.metadata.version("apache-airflow") == matrix_airflow


@installed_only
def test_airflow_cli_reports_the_provider_version(tmp_path: Path, dists: dict[str, Path]) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    airflow = Path(sys.prefix) / "bin" / "airflow"
    result = subprocess.run(
        [str(airflow), "providers", "get", DIST_NAME, "--output", "json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    # Airflow 3.1 prints log lines on stdout before the JSON document.
    (document,) = [line for line in result.stdout.splitlines() if line.startswith("[{")]
    assert json.loads(document) == [{"Provider": DIST_NAME, "Version": airflow_provider_nyne.__version__}]
    assert dists["wheel"].name.startswith(f"{PACKAGE}-{airflow_provider_nyne.__version__}-")
