"""The ``nyne-simulator`` command (also ``python -m airflow_provider_nyne.testing.simulator``)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from airflow_provider_nyne.testing.simulator.server import NyneSimulator


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator from the command line until SIGINT or SIGTERM.

    :param argv: arguments (``sys.argv[1:]`` when None).
    """
    parser = argparse.ArgumentParser(
        prog="nyne-simulator",
        description="Serve a local Nyne Social Interactions API for tests and offline DAG development.",
    )
    add = parser.add_argument
    # Every option but --ready-file is the NyneSimulator keyword of the same name.
    add("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    add("--port", type=int, default=8765, help="port to bind; 0 picks a free one (default %(default)s)")
    add("--ready-file", help="write the base URL to this file once listening")
    add("--api-key", help="API key of the default account (random sim-key-... otherwise)")
    add("--api-secret", help="API secret of the default account (random otherwise)")
    add("--credits", type=int, default=1000, help="starting credits (default %(default)s)")
    add("--job-duration", type=float, default=2.0, help="seconds a job takes (default %(default)s)")
    add("--job-duration-sigma", type=float, default=0.0, help="log-normal spread of durations (default 0)")
    add("--job-duration-seed", type=int, default=0, help="picks the sequence of spread durations")
    add("--slow-job-duration", type=float, help="seconds a slow* job takes (10x --job-duration otherwise)")
    add("--request-ttl", type=float, default=3600.0, help="seconds results stay readable (default 3600)")
    add("--rate-limit-per-minute", type=int, default=60, help="0 disables (default %(default)s)")
    add("--rate-limit-per-hour", type=int, default=1000, help="0 disables (default %(default)s)")
    add("--rate-limit-time-scale", type=float, default=1.0, help="factor for the rate-limit windows")
    add("--callback-time-scale", type=float, default=1.0, help="factor for callback retries and timeouts")
    host_help = "allow callbacks only to this host (repeatable; any host when absent)"
    add(
        "--callback-allowed-host",
        action="append",
        dest="callback_allowed_hosts",
        metavar="HOST",
        help=host_help,
    )
    add("--failure-reason", default="Profile is private", help="error of failed jobs (default %(default)s)")
    add("--tls", action="store_true", help="serve HTTPS with a throwaway CA (its file is printed at start)")
    add("--access-log", action="store_true", help="log one line per request")
    add("--log-level", default="warning", help="uvicorn log level (default %(default)s)")
    settings = vars(parser.parse_args(argv))
    ready_file = settings.pop("ready_file")
    logging.basicConfig(
        level=settings["log_level"].upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if ready_file:
        with contextlib.suppress(FileNotFoundError):
            os.remove(ready_file)
    try:
        sim = NyneSimulator(**settings)
    except ValueError as exc:
        parser.error(str(exc))  # exits with status 2, naming the bad setting
    stopping = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            sim.start()
        except OSError as exc:
            print(
                f"Cannot listen on {settings['host']}:{settings['port']}: {exc.strerror or exc}",
                file=sys.stderr,
            )
            return 2
        if ready_file:
            # Written whole, then renamed: a script waiting for the file never reads half a URL.
            with open(f"{ready_file}.tmp-{os.getpid()}", "w", encoding="utf-8") as handle:
                handle.write(sim.url + "\n")
            os.replace(handle.name, ready_file)
        # Printing the credentials is the point here: they only exist in this simulator.
        print(f"Nyne simulator listening on {sim.url}")
        print(f"  API key:    {sim.api_key}")
        print(f"  API secret: {sim.api_secret}")
        print(f"  Ledger:     {sim.admin_url('ledger')}")
        if settings["tls"]:
            print(
                f"  CA file:    {sim.ca_file} (trust it with SSL_CERT_FILE={shlex.quote(str(sim.ca_file))})"
            )
        print("Airflow connection (paste into your shell):")
        print(f"AIRFLOW_CONN_NYNE_DEFAULT={shlex.quote(sim.connection_json())}")
        print("Press Ctrl+C to stop.", flush=True)
        while not stopping.wait(0.5):
            if not sim.running:
                print("Nyne simulator stopped unexpectedly", file=sys.stderr)
                return 1
    finally:
        sim.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("Nyne simulator stopped", flush=True)
    return 0
