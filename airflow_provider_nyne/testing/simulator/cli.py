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

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nyne-simulator",
        description="Serve a local Nyne Social Interactions API for tests and offline DAG development.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8765, help="port to bind; 0 picks a free port (default 8765)"
    )
    parser.add_argument("--api-key", help="API key of the default account (random sim-key-... otherwise)")
    parser.add_argument("--api-secret", help="API secret of the default account (random otherwise)")
    parser.add_argument("--credits", type=int, default=1000, help="starting credits (default 1000)")
    parser.add_argument("--job-duration", type=float, default=2.0, help="seconds a job takes (default 2)")
    parser.add_argument(
        "--job-duration-sigma",
        type=float,
        default=0.0,
        help="log-normal spread of job durations around --job-duration (default 0: all equal)",
    )
    parser.add_argument(
        "--job-duration-seed", type=int, default=0, help="picks the sequence of spread durations (default 0)"
    )
    parser.add_argument("--slow-job-duration", type=float, help="seconds a slow* job takes (default 10x)")
    parser.add_argument("--request-ttl", type=float, default=3600.0, help="seconds results stay readable")
    parser.add_argument("--rate-limit-per-minute", type=int, default=60, help="0 disables (default 60)")
    parser.add_argument("--rate-limit-per-hour", type=int, default=1000, help="0 disables (default 1000)")
    parser.add_argument(
        "--rate-limit-time-scale",
        type=float,
        default=1.0,
        help="factor for the rate-limit windows, e.g. 0.01 for 0.6 s and 36 s (default 1)",
    )
    parser.add_argument(
        "--callback-time-scale",
        type=float,
        default=1.0,
        help="factor for callback retry delays and timeouts (default 1)",
    )
    parser.add_argument(
        "--callback-allowed-host",
        action="append",
        dest="callback_allowed_hosts",
        metavar="HOST",
        help="allow callbacks only to this host (repeatable; any host when absent)",
    )
    parser.add_argument("--failure-reason", default="Profile is private", help="error of fail* jobs")
    parser.add_argument("--ready-file", help="write the base URL to this file once listening")
    parser.add_argument(
        "--tls", action="store_true", help="serve HTTPS with a throwaway CA (its file is printed at start)"
    )
    parser.add_argument("--access-log", action="store_true", help="log one line per request")
    parser.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")
    return parser


def _write_ready_file(path: str, url: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(url + "\n")
    os.replace(tmp, path)


def _simulator(args: argparse.Namespace) -> NyneSimulator:
    return NyneSimulator(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        api_secret=args.api_secret,
        credits=args.credits,
        job_duration=args.job_duration,
        job_duration_sigma=args.job_duration_sigma,
        job_duration_seed=args.job_duration_seed,
        slow_job_duration=args.slow_job_duration,
        request_ttl=args.request_ttl,
        rate_limit_per_minute=args.rate_limit_per_minute,
        rate_limit_per_hour=args.rate_limit_per_hour,
        rate_limit_time_scale=args.rate_limit_time_scale,
        callback_time_scale=args.callback_time_scale,
        callback_allowed_hosts=args.callback_allowed_hosts,
        failure_reason=args.failure_reason,
        log_level=args.log_level,
        access_log=args.access_log,
        tls=args.tls,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the simulator from the command line until SIGINT or SIGTERM.

    :param argv: arguments (``sys.argv[1:]`` when None).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.ready_file:
        with contextlib.suppress(FileNotFoundError):
            os.remove(args.ready_file)
    try:
        sim = _simulator(args)
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
            print(f"Cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        if args.ready_file:
            _write_ready_file(args.ready_file, sim.url)
        # Printing the credentials is the point here: they only exist in this simulator.
        print(f"Nyne simulator listening on {sim.url}")
        print(f"  API key:    {sim.api_key}")
        print(f"  API secret: {sim.api_secret}")
        print(f"  Ledger:     {sim.admin_url('ledger')}")
        if args.tls:
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
