"""Server lifecycle, Airflow connection helpers and the command line."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx
import pytest

from airflow_provider_nyne.testing import NyneSimulator as LazyNyneSimulator
from airflow_provider_nyne.testing.simulator import NyneSimulator

pytestmark = pytest.mark.integration


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_start_stop_twenty_times_leaks_nothing() -> None:
    # Warm up once so lazily created process-wide resources do not count as leaks.
    with NyneSimulator() as warm, httpx.Client(trust_env=False, verify=False) as client:
        client.get(f"{warm.url}/_simulator/health")
    threads_before, fds_before = threading.active_count(), _open_fds()
    ports = []

    for _ in range(20):
        sim = NyneSimulator(job_duration=0.01).start()
        ports.append(sim.port)
        with httpx.Client(base_url=sim.url, trust_env=False, verify=False) as client:
            headers = {"X-API-Key": sim.api_key, "X-API-Secret": sim.api_secret}
            assert client.get("/usage", headers=headers).status_code == 200
        sim.stop()
        assert not sim.running

    assert threading.active_count() == threads_before
    assert _open_fds() == fds_before
    with socket.socket() as rebind:
        rebind.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        rebind.bind(("127.0.0.1", ports[-1]))
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{ports[-1]}/usage", trust_env=False)


def test_stop_with_open_keep_alive_connection_and_callback(tmp_path: Path) -> None:
    threads_before = threading.active_count()
    sim = NyneSimulator(job_duration=0.0, callback_time_scale=100).start()
    client = httpx.Client(base_url=sim.url, trust_env=False, verify=False)
    headers = {"X-API-Key": sim.api_key, "X-API-Secret": sim.api_secret}
    # The callback goes nowhere and would retry for minutes: stop() must cancel it.
    client.post(
        "/person/interactions",
        json={"username": "jack", "type": "followers", "callback_url": "http://127.0.0.1:9/hook"},
        headers=headers,
    )
    assert client.get("/usage", headers=headers).status_code == 200

    started = time.monotonic()
    sim.stop()

    assert time.monotonic() - started < 3
    assert threading.active_count() == threads_before
    client.close()


def test_start_twice_is_refused_stop_is_idempotent_and_restart_works() -> None:
    sim = NyneSimulator()
    with pytest.raises(RuntimeError):
        _ = sim.url
    sim.start()
    try:
        with pytest.raises(RuntimeError):
            sim.start()
    finally:
        sim.stop()
    sim.stop()
    assert not sim.running

    with sim, httpx.Client(trust_env=False, verify=False) as client:
        assert sim.running
        assert client.get(f"{sim.url}/_simulator/health").status_code == 200


def test_fixed_port_is_honoured() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with NyneSimulator(port=port) as sim:
        assert sim.url == f"http://127.0.0.1:{port}"
        assert httpx.get(f"{sim.url}/_simulator/health", trust_env=False).status_code == 200


def test_lazy_package_import() -> None:
    assert LazyNyneSimulator is NyneSimulator


def test_airflow_connection_forms() -> None:
    sim = NyneSimulator(api_key="key/with:odd@chars", api_secret="sec ret+%").start()
    try:
        env = sim.airflow_env("my_nyne")
        conn = json.loads(env["AIRFLOW_CONN_MY_NYNE"])
        uri = urlsplit(sim.connection_uri())

        assert conn == {
            "conn_type": "nyne",
            "login": "key/with:odd@chars",
            "password": "sec ret+%",
            "host": sim.url,
            # The connection declares the simulated account's rate limits, so clients pace to them.
            "extra": {"rate_limit_per_minute": 60, "rate_limit_per_hour": 1000},
        }
        sim.configure(rate_limit_per_minute=0, rate_limit_time_scale=0.5)
        assert json.loads(sim.connection_json())["extra"] == {
            "rate_limit_per_minute": 0,
            "rate_limit_per_hour": 1000,
            "rate_limit_time_scale": 0.5,
        }
        assert json.loads(sim.connection_json(extra={"max_in_flight": 2}))["extra"]["max_in_flight"] == 2
        assert uri.scheme == "nyne"
        assert (unquote(uri.username or ""), unquote(uri.password or "")) == (
            "key/with:odd@chars",
            "sec ret+%",
        )
        assert (uri.hostname, uri.port, uri.query) == (
            "127.0.0.1",
            sim.port,
            "scheme=http&rate_limit_per_minute=60&rate_limit_per_hour=1000",
        )
        assert sim.api_secret not in repr(sim)
    finally:
        sim.stop()


def test_default_credentials_are_distinctive() -> None:
    first, second = NyneSimulator(), NyneSimulator()

    assert first.api_key.startswith("sim-key-")
    assert first.api_secret.startswith("sim-secret-")
    assert first.api_key != second.api_key
    assert first.api_secret != second.api_secret


@dataclass
class CliRun:
    """A simulator started by its command line: its URL, then its output once stopped."""

    process: subprocess.Popen[str]
    url: str = ""
    stdout: str = ""
    stderr: str = ""


@contextlib.contextmanager
def _cli(tmp_path: Path, *flags: str, stop_signal: int = signal.SIGTERM) -> Iterator[CliRun]:
    """Run ``python -m airflow_provider_nyne.testing.simulator`` on a free port until the block ends."""
    ready = tmp_path / "ready"
    command = [sys.executable, "-m", "airflow_provider_nyne.testing.simulator", "--port", "0"]
    process = subprocess.Popen(
        [*command, "--ready-file", str(ready), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    run = CliRun(process)
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the simulator did not write its ready file"
            time.sleep(0.05)
        run.url = ready.read_text().strip()
        yield run
    finally:
        process.send_signal(stop_signal)
        try:
            run.stdout, run.stderr = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            run.stdout, run.stderr = process.communicate()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_cli_serves_until_signalled(tmp_path: Path, stop_signal: signal.Signals) -> None:
    flags = ("--api-key", "cli-key", "--api-secret", "cli-secret", "--job-duration", "0.1")
    with _cli(tmp_path, *flags, stop_signal=stop_signal) as run:
        usage = httpx.get(
            f"{run.url}/usage",
            headers={"X-API-Key": "cli-key", "X-API-Secret": "cli-secret"},
            trust_env=False,
        )

    assert usage.status_code == 200
    assert usage.json()["data"]["credits_remaining"] == 1000
    assert run.process.returncode == 0, run.stderr
    assert run.url.startswith("http://127.0.0.1:")
    assert run.url in run.stdout
    (conn_line,) = [line for line in run.stdout.splitlines() if line.startswith("AIRFLOW_CONN_NYNE_DEFAULT=")]
    conn = json.loads(shlex.split(conn_line.split("=", 1)[1])[0])
    assert conn == {
        "conn_type": "nyne",
        "login": "cli-key",
        "password": "cli-secret",
        "host": run.url,
        "extra": {"rate_limit_per_minute": 60, "rate_limit_per_hour": 1000},
    }
    assert "cli-secret" not in run.stderr


def test_cli_sets_window_scale_and_duration_spread(tmp_path: Path) -> None:
    flags = ("--api-key", "k", "--api-secret", "s", "--rate-limit-per-minute", "1", "--job-duration", "0.02")
    spread = ("--rate-limit-time-scale", "0.01", "--job-duration-sigma", "0.4", "--job-duration-seed", "9")
    with _cli(tmp_path, *flags, *spread) as run, httpx.Client(base_url=run.url, trust_env=False) as client:
        settings = client.get("/_simulator/settings").json()["data"]
        auth = {"X-API-Key": "k", "X-API-Secret": "s"}
        accepted, refused = client.get("/usage", headers=auth), client.get("/usage", headers=auth)

    assert settings["rate_limit_time_scale"] == 0.01
    assert (settings["job_duration_sigma"], settings["job_duration_seed"]) == (0.4, 9)
    assert (accepted.status_code, refused.status_code) == (200, 429)
    assert 0 < float(refused.headers["Retry-After"]) <= 0.601
    assert run.process.returncode == 0, run.stderr


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        pytest.param(
            ("--rate-limit-time-scale", "0"), "rate_limit_time_scale must be a number > 0", id="zero-scale"
        ),
        pytest.param(
            ("--job-duration-sigma", "-1"), "job_duration_sigma must be a number >= 0", id="negative-sigma"
        ),
    ],
)
def test_cli_refuses_bad_settings_naming_them(flags: tuple[str, ...], named: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_nyne.testing.simulator", "--port", "0", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 2
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening" not in result.stdout


def test_console_script_is_the_cli() -> None:
    from airflow_provider_nyne.testing.simulator import main

    scripts = importlib.metadata.entry_points(group="console_scripts", name="nyne-simulator")
    if not scripts:
        pytest.skip("the distribution is not installed, so its console scripts are not registered")

    (script,) = scripts
    assert script.value == "airflow_provider_nyne.testing.simulator:main"
    assert script.load() is main
