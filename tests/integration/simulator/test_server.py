"""Server lifecycle, Airflow connection helpers and the command line."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
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
            "extra": {},
        }
        assert uri.scheme == "nyne"
        assert (unquote(uri.username or ""), unquote(uri.password or "")) == (
            "key/with:odd@chars",
            "sec ret+%",
        )
        assert (uri.hostname, uri.port, uri.query) == ("127.0.0.1", sim.port, "scheme=http")
        assert sim.api_secret not in repr(sim)
    finally:
        sim.stop()


def test_default_credentials_are_distinctive() -> None:
    first, second = NyneSimulator(), NyneSimulator()

    assert first.api_key.startswith("sim-key-")
    assert first.api_secret.startswith("sim-secret-")
    assert first.api_key != second.api_key
    assert first.api_secret != second.api_secret


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_cli_serves_until_signalled(tmp_path: Path, stop_signal: signal.Signals) -> None:
    ready = tmp_path / "ready"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_nyne.testing.simulator",
            "--port",
            "0",
            "--ready-file",
            str(ready),
            "--api-key",
            "cli-key",
            "--api-secret",
            "cli-secret",
            "--job-duration",
            "0.1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the simulator did not write its ready file"
            time.sleep(0.05)
        url = ready.read_text().strip()
        usage = httpx.get(
            f"{url}/usage", headers={"X-API-Key": "cli-key", "X-API-Secret": "cli-secret"}, trust_env=False
        )
    finally:
        process.send_signal(stop_signal)
        stdout, stderr = process.communicate(timeout=15)

    assert usage.status_code == 200
    assert usage.json()["data"]["credits_remaining"] == 1000
    assert process.returncode == 0, stderr
    assert url.startswith("http://127.0.0.1:")
    assert url in stdout
    (conn_line,) = [line for line in stdout.splitlines() if line.startswith("AIRFLOW_CONN_NYNE_DEFAULT=")]
    conn = json.loads(shlex.split(conn_line.split("=", 1)[1])[0])
    assert conn == {
        "conn_type": "nyne",
        "login": "cli-key",
        "password": "cli-secret",
        "host": url,
        "extra": {},
    }
    assert "cli-secret" not in stderr
