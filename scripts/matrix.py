"""Run the test suite against the built wheel at both ends of the supported Airflow range.

For each Airflow version of the matrix this script keeps a virtual environment under
``.matrix/airflow-<version>/venv`` with exactly what a user gets from
``pip install "airflow_provider_nyne-<v>.whl[test,s3,parquet]" "apache-airflow==<version>"``
(no constraint files: every other dependency is resolved from the ranges the wheel declares),
then runs ``pytest -m "not e2e and not repo"`` over a copy of the repository that has no
``airflow_provider_nyne/`` folder, so that the tests import the package installed from the
wheel and not the source tree.

The lowest version is read from the wheel's own ``apache-airflow>=`` requirement, so the
declared range and the tested range cannot drift apart; the newest is :data:`NEWEST_AIRFLOW`.

Environments are rebuilt only when what decides their dependencies changes (the wheel's
``Requires-Dist`` lines, the Python interpreter, the Airflow version); a wheel whose files
changed but whose dependencies did not is reinstalled alone (``--no-deps``), which takes a
few seconds. A fresh checkout (CI) builds both environments from scratch, in parallel.

Usage::

    python scripts/matrix.py                      # wheel from dist/, both ends of the range
    python scripts/matrix.py --airflow 3.2.1      # one version only
    python scripts/matrix.py --setup-only         # build the environments, run nothing
    python scripts/matrix.py -- -k hygiene -x     # extra pytest arguments after "--"
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
MATRIX_DIR = REPO / ".matrix"
PACKAGE = "airflow_provider_nyne"

#: Newest Airflow release the provider is tested against (update when a new 3.x ships).
NEWEST_AIRFLOW = "3.3.2"
#: Extras installed with the wheel: what the test suite needs.
EXTRAS = "test,s3,parquet"
#: Marker expression of the tests run in each environment: the unit and integration tests. The
#: end-to-end tests and the checks of the repository's own tooling (``repo``: the docs site, the
#: benchmarks' smoke test) run once, on the source tree (``make suite``).
MARKERS = "not e2e and not repo"
#: Bump to force every environment to be rebuilt (a change in how they are built).
SETUP_REVISION = "1"

#: Top-level entries of the repository not copied next to the tests: the package itself (it
#: must come from the wheel), virtual environments, build output and caches.
_NOT_COPIED = {
    ".git",
    ".venv",
    ".matrix",
    PACKAGE,
    "build",
    "dist",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".demo",
    ".bench",
}


@dataclass
class Wheel:
    """The built wheel and what decides the environments built from it."""

    path: Path
    version: str
    requires: list[str]
    requires_python: str
    record_digest: str

    @classmethod
    def read(cls, path: Path) -> Wheel:
        """Read the metadata and the file list (with hashes) of a wheel."""
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
            record_name = next(n for n in names if n.endswith(".dist-info/RECORD"))
            metadata = Parser().parsestr(archive.read(metadata_name).decode())
            record = archive.read(record_name)
        return cls(
            path=path.resolve(),
            version=metadata["Version"],
            requires=sorted(metadata.get_all("Requires-Dist") or []),
            requires_python=metadata.get("Requires-Python", ""),
            record_digest=hashlib.sha256(record).hexdigest(),
        )

    def airflow_requirement(self) -> Requirement:
        """The wheel's ``apache-airflow`` requirement."""
        for line in self.requires:
            requirement = Requirement(line)
            if requirement.name == "apache-airflow" and requirement.marker is None:
                return requirement
        raise SystemExit(f"{self.path.name} does not require apache-airflow")

    def lowest_airflow(self) -> str:
        """The lower bound of the declared Airflow range (``>=X``)."""
        bounds = [s.version for s in self.airflow_requirement().specifier if s.operator == ">="]
        if len(bounds) != 1:
            raise SystemExit(f"cannot read one lower bound from {self.airflow_requirement()}")
        return bounds[0]


@dataclass
class EnvResult:
    """What happened to one matrix point."""

    airflow: str
    action: str = "-"
    setup_seconds: float = 0.0
    test_seconds: float = 0.0
    summary: str = ""
    ok: bool = False
    log: list[str] = field(default_factory=list)


def _run(
    cmd: Sequence[str | Path], log_path: Path, cwd: Path | None = None, env: dict[str, str] | None = None
) -> int:
    """Run a command with its output appended to a log file; return its exit code."""
    with log_path.open("a") as log:
        log.write(f"$ {' '.join(str(c) for c in cmd)}\n")
        log.flush()
        return subprocess.call([str(c) for c in cmd], stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env)


def _tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log file."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return ""


def _digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _python_identity(python: str) -> str:
    """Version and location of an interpreter: a different one means a different environment."""
    out = subprocess.run(
        [python, "-c", "import sys; print(sys.version); print(sys.base_prefix)"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip()


def _clean_env(extra: dict[str, str], venv: Path) -> dict[str, str]:
    """The caller's environment without anything that would point Airflow or Python elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AIRFLOW")
        and k not in {"PYTHONPATH", "VIRTUAL_ENV", "NYNE_TEST_AIRFLOW_HOME", "PYTHONHOME"}
    }
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env.update(extra)
    return env


def setup_env(airflow: str, wheel: Wheel, python: str, result: EnvResult) -> Path | None:
    """Create or refresh the environment for one Airflow version; return its interpreter."""
    env_dir = MATRIX_DIR / f"airflow-{airflow}"
    venv = env_dir / "venv"
    vpy = venv / "bin" / "python"
    deps_stamp = env_dir / "deps.stamp"
    package_stamp = env_dir / "package.stamp"
    log = env_dir / "setup.log"
    deps_key = _digest(
        SETUP_REVISION, _python_identity(python), airflow, EXTRAS, wheel.requires_python, *wheel.requires
    )
    package_key = _digest(wheel.path.name, wheel.record_digest)
    started = time.monotonic()

    current = deps_stamp.read_text() if deps_stamp.exists() and vpy.exists() else None
    if current != deps_key:
        result.action = "created"
        shutil.rmtree(env_dir, ignore_errors=True)
        env_dir.mkdir(parents=True)
        steps: list[list[str | Path]] = [
            [python, "-m", "venv", venv],
            # --no-compile: byte-compiling all of Airflow and its providers is a quarter of pip's CPU
            # time; the tests compile what they import, once.
            [
                vpy,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-compile",
                f"{wheel.path}[{EXTRAS}]",
                f"apache-airflow=={airflow}",
            ],
        ]
        for step in steps:
            if _run(step, log) != 0:
                result.log.append(f"setup failed, see {log}:\n{_tail(log)}")
                result.summary = "environment set-up failed"
                return None
        deps_stamp.write_text(deps_key)
        package_stamp.write_text(package_key)
    elif not package_stamp.exists() or package_stamp.read_text() != package_key:
        result.action = "wheel reinstalled"
        package_stamp.unlink(missing_ok=True)
        cmd: list[str | Path] = [
            vpy,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--force-reinstall",
            wheel.path,
        ]
        if _run(cmd, log) != 0:
            result.log.append(f"reinstall failed, see {log}:\n{_tail(log)}")
            result.summary = "wheel reinstall failed"
            return None
        package_stamp.write_text(package_key)
    else:
        result.action = "up to date"

    if _run([vpy, "-m", "pip", "check"], log) != 0:
        result.log.append(f"pip check failed, see {log}:\n{_tail(log, 20)}")
        result.summary = "pip check failed"
        return None
    result.setup_seconds = time.monotonic() - started
    return vpy


def _mirror(target: Path) -> None:
    """Copy the repository without the package, so that tests import the installed wheel."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for entry in REPO.iterdir():
        if entry.name in _NOT_COPIED or entry.name.endswith(".egg-info"):
            continue
        if entry.is_dir():
            shutil.copytree(entry, target / entry.name, ignore=ignore, symlinks=True)
        else:
            shutil.copy2(entry, target / entry.name)


def _check_installed(vpy: Path, cwd: Path, wheel: Wheel, airflow: str, env: dict[str, str]) -> str | None:
    """Return a problem if the package would not come from the wheel installed in the venv."""
    code = (
        "import importlib.metadata as m, sys, airflow_provider_nyne as p; "
        "print(p.__file__); print(p.__version__); print(m.version('apache-airflow')); print(sys.prefix)"
    )
    out = subprocess.run([vpy, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        return f"cannot import {PACKAGE}: {out.stderr.strip()[-2000:]}"
    file, version, installed_airflow, prefix = out.stdout.split("\n")[:4]
    if not Path(file).resolve().is_relative_to(Path(prefix).resolve()):
        return f"{PACKAGE} resolves to {file}, not to the environment {prefix}"
    if version != wheel.version:
        return f"installed {PACKAGE} {version} is not the wheel's {wheel.version}"
    if installed_airflow != airflow:
        return f"environment has apache-airflow {installed_airflow}, expected {airflow}"
    return None


def run_tests(
    airflow: str,
    vpy: Path,
    src: Path,
    wheel: Wheel,
    sdist: Path | None,
    pytest_args: list[str],
    result: EnvResult,
) -> None:
    """Run the suite (minus e2e) from ``src``, a copy of the repository without the package."""
    env_dir = MATRIX_DIR / f"airflow-{airflow}"
    venv = vpy.parent.parent
    log = env_dir / "pytest.log"
    log.unlink(missing_ok=True)
    started = time.monotonic()
    extra = {
        "NYNE_MATRIX_AIRFLOW": airflow,
        "NYNE_WHEEL": str(wheel.path),
        "NYNE_EXPECT_INSTALLED_PACKAGE": "1",
    }
    if sdist is not None:
        extra["NYNE_SDIST"] = str(sdist.resolve())
    env = _clean_env(extra, venv)
    # Test paths among the extra arguments narrow the run; without any, the whole tests/ folder.
    targets = [] if any(arg.startswith("tests") for arg in pytest_args) else ["tests"]
    problem = _check_installed(vpy, src, wheel, airflow, env)
    if problem:
        result.log.append(problem)
        result.summary = "package does not come from the wheel"
        return
    code = _run(
        [
            vpy,
            "-m",
            "pytest",
            "-m",
            MARKERS,
            "-p",
            "no:cacheprovider",
            "-q",
            "--durations=15",
            *targets,
            *pytest_args,
        ],
        log,
        cwd=src,
        env=env,
    )
    result.test_seconds = time.monotonic() - started
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    result.summary = lines[-1].strip("= ") if lines else "no output"
    result.ok = code == 0
    result.log.append(f"----- pytest on Airflow {airflow} ({log.relative_to(REPO)}) -----")
    result.log.append(log.read_text(errors="replace") if not result.ok else _tail(log, 15))


def _find_dist(pattern: str) -> Path | None:
    found = sorted((REPO / "dist").glob(pattern))
    if len(found) > 1:
        raise SystemExit(f"more than one {pattern} in dist/: {[p.name for p in found]}; run `make dist`")
    return found[0] if found else None


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, help="wheel to test (default: the one in dist/)")
    parser.add_argument(
        "--airflow",
        action="append",
        help=f"Airflow version (repeatable; default: the declared lower bound and {NEWEST_AIRFLOW})",
    )
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter the environments are built from"
    )
    parser.add_argument("--setup-only", action="store_true", help="build the environments and stop")
    parser.add_argument(
        "--jobs", type=int, default=2, help="environments set up at the same time (default 2)"
    )
    parser.add_argument(
        "--test-jobs",
        type=int,
        default=2,
        help="test sessions run at the same time (default 2: the suite mostly waits on sockets and timers)",
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = parser.parse_args(argv)

    wheel_path = args.wheel or _find_dist("*.whl")
    if wheel_path is None:
        raise SystemExit("no wheel in dist/: run `make dist` first")
    wheel = Wheel.read(wheel_path)
    sdist = _find_dist("*.tar.gz")
    declared = wheel.airflow_requirement().specifier
    versions = args.airflow or [wheel.lowest_airflow(), NEWEST_AIRFLOW]
    for version in versions:
        if Version(version) not in declared:
            raise SystemExit(f"Airflow {version} is outside the declared range apache-airflow{declared}")

    print(
        f"matrix: {wheel.path.name} on Airflow {', '.join(versions)} (declared apache-airflow{declared})",
        flush=True,
    )
    MATRIX_DIR.mkdir(exist_ok=True)
    # Copy the tests now, next to the wheel just built: files edited while the environments
    # are being set up must not be tested against a wheel that predates them.
    src = MATRIX_DIR / "src"
    if not args.setup_only:
        _mirror(src)
    results = {v: EnvResult(v) for v in versions}
    started = time.monotonic()

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        pythons = dict(
            zip(
                versions,
                pool.map(lambda v: setup_env(v, wheel, args.python, results[v]), versions),
                strict=True,
            )
        )
    for version in versions:
        print(
            f"matrix: Airflow {version}: {results[version].action} in {results[version].setup_seconds:.0f} s",
            flush=True,
        )
    setup_seconds = time.monotonic() - started

    ready = [v for v in versions if pythons[v] is not None]
    if not args.setup_only:
        with ThreadPoolExecutor(max_workers=max(1, args.test_jobs)) as pool:
            list(
                pool.map(
                    lambda v: run_tests(v, pythons[v], src, wheel, sdist, args.pytest_args, results[v]),
                    ready,
                )
            )
    else:
        for v in ready:
            results[v].ok = True
            results[v].summary = "set up (tests not run)"

    for result in results.values():
        for chunk in result.log:
            print(chunk, flush=True)
    total = time.monotonic() - started
    print(f"\nVersion matrix: {wheel.path.name}")
    print(f"{'airflow':<9} {'environment':<18} {'setup':>7} {'tests':>7}  result")
    for result in results.values():
        print(
            f"{result.airflow:<9} {result.action:<18} {result.setup_seconds:>6.0f}s {result.test_seconds:>6.0f}s  "
            f"{'ok' if result.ok else 'FAILED'}: {result.summary}"
        )
    print(f"set-up {setup_seconds:.0f} s, total {total:.0f} s", flush=True)
    return 0 if all(r.ok for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
