"""What every benchmark shares: tables, machine facts, the simulator process, child processes."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import random
import resource
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = Path(__file__).resolve().parent
#: Scratch space for benchmark runs (git-ignored).
WORK_DIR = ROOT / ".bench"

VERSIONED_PACKAGES = (
    "apache-airflow",
    "apache-airflow-task-sdk",
    "apache-airflow-providers-http",
    "httpx",
    "aiohttp",
    "uvicorn",
)


# Tables ---------------------------------------------------------------------------------


@dataclass
class Table:
    """
    One result table.

    :param key: short identifier (``fleet``, ``transport``, ...), used by the smoke test
    :param title: heading printed above the table
    :param columns: column headings
    :param rows: cells, already formatted
    :param notes: lines printed under the table (what it means, how it was measured)
    """

    key: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """The table as GitHub-flavoured Markdown, heading and notes included."""
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("| " + " | ".join("---" for _ in self.columns) + " |")
        for row in self.rows:
            lines.append("| " + " | ".join(row) + " |")
        if self.notes:
            lines.append("")
            lines.extend(self.notes)
        return "\n".join(lines) + "\n"

    def column(self, name: str) -> list[str]:
        """The cells of one column, top to bottom."""
        index = self.columns.index(name)
        return [row[index] for row in self.rows]


def fmt_ms(seconds: float | None, digits: int = 2) -> str:
    """Seconds shown as milliseconds."""
    return "-" if seconds is None else f"{seconds * 1000:.{digits}f} ms"


def fmt_s(seconds: float | None, digits: int = 1) -> str:
    """Seconds with a unit."""
    return "-" if seconds is None else f"{seconds:.{digits}f} s"


def fmt_kib(value: float | None) -> str:
    """Bytes shown as KiB."""
    return "-" if value is None else f"{value / 1024:.1f} KiB"


def compare(ours: float | None, theirs: float | None, what: str) -> str:
    """``"2.5x less <what>"`` or ``"1.3x more <what>"``: ours against theirs."""
    if ours is None or theirs is None or ours <= 0 or theirs <= 0:
        return f"? {what}"
    if theirs >= ours:
        return f"{theirs / ours:.1f}x less {what}"
    return f"{ours / theirs:.1f}x more {what}"


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return statistics.median(values)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (``pct`` in 0-100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, round(pct / 100 * len(ordered) + 0.4999))
    return ordered[min(rank, len(ordered)) - 1]


# Machine --------------------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return None


def machine_info() -> dict[str, str]:
    """Cores, CPU model, RAM, OS, Python and package versions, date and load."""
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "cpu": _cpu_model(),
        "ram": f"{_ram_gib():.1f} GiB" if _ram_gib() else "unknown",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }
    for name in VERSIONED_PACKAGES:
        try:
            info[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            info[name] = "not installed"
    with contextlib.suppress(OSError):
        info["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


# Process measurements -------------------------------------------------------------------


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (``ru_maxrss``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def airflow_env(home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process: a throwaway Airflow home, quiet logs, loopback only."""
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
            "AIRFLOW__CORE__ALLOWED_DESERIALIZATION_CLASSES_REGEXP": r"(airflow|airflow_provider_nyne)\..*",
            "NO_PROXY": "127.0.0.1,localhost",
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        }
    )
    env.pop("PYTHONDEVMODE", None)
    # An installed provider has bytecode (pip compiles it, as it did Airflow's): without it every
    # fresh process would compile the provider from source, which no deployment pays.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if extra:
        env.update(extra)
    return env


def compile_sources() -> None:
    """Write bytecode for the provider, the examples and the benchmarks, as an installed package has."""
    import compileall

    for folder in ("airflow_provider_nyne", "example_dags", "benchmarks"):
        if (ROOT / folder).is_dir():
            compileall.compile_dir(str(ROOT / folder), quiet=1)


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A fresh directory under ``.bench/`` (removed afterwards)."""
    WORK_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=WORK_DIR) as path:
        yield Path(path)


def run_child(module: str, args: Sequence[str], env: Mapping[str, str], timeout: float) -> dict[str, Any]:
    """Run ``python -m module args`` and return the JSON object it prints last on stdout."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        env=dict(env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"{module} {' '.join(args)} failed with exit code {proc.returncode}:\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    result: dict[str, Any] = json.loads(lines[-1])
    return result


# The simulator, as a separate process ---------------------------------------------------


class SimulatorProcess:
    """
    The Nyne simulator served by its command line in its own process, so that the client's CPU is measured alone.

    Rate limits are disabled (unless ``flags`` set them) and the account has credits for any
    number of jobs.

    :param workdir: where the ready file and the server's output go
    :param tls: serve HTTPS (``--tls``); :attr:`ca_file` is then the CA to trust
    :param flags: more command-line flags, after the defaults (they win)
    """

    def __init__(self, workdir: Path, *, tls: bool = False, flags: Sequence[str] = ()) -> None:
        self.workdir = workdir
        self.tls = tls
        self.flags = list(flags)
        self.ca_file: str | None = None
        self.api_key = f"bench-key-{secrets.token_hex(6)}"
        self.api_secret = f"bench-secret-{secrets.token_hex(12)}"
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None
        self._http: Any = None
        self.last_submit_span = 0.0

    def start(self, timeout: float = 30.0) -> SimulatorProcess:
        """Start the server and wait until it listens."""
        import httpx

        ready = self.workdir / "simulator.url"
        self._log = open(self.workdir / "simulator.log", "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "airflow_provider_nyne.testing.simulator",
                "--port",
                "0",
                "--ready-file",
                str(ready),
                "--api-key",
                self.api_key,
                "--api-secret",
                self.api_secret,
                "--credits",
                "1000000000",
                "--rate-limit-per-minute",
                "0",
                "--rate-limit-per-hour",
                "0",
                "--job-duration",
                "1",
                "--request-ttl",
                "3600",
                *(["--tls"] if self.tls else []),
                *self.flags,
            ],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=airflow_env(self.workdir),
        )
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = (self.workdir / "simulator.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the simulator did not start:\n{log}")
            time.sleep(0.05)
        self.url = ready.read_text().strip()
        verify: Any = True
        if self.tls:
            import re
            import ssl

            # The banner (with the CA file) is printed right after the ready file is written.
            while (found := re.search(r"CA file:\s+(\S+)", self._banner())) is None:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the simulator printed no CA file:\n{self._banner()[-2000:]}")
                time.sleep(0.05)
            self.ca_file = found.group(1)
            verify = ssl.create_default_context(cafile=self.ca_file)
        self._http = httpx.Client(
            base_url=self.url,
            timeout=30.0,
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
            verify=verify,
        )
        return self

    def _banner(self) -> str:
        return (self.workdir / "simulator.log").read_text(errors="replace")

    def stop(self) -> None:
        """Stop the server (SIGTERM to the process this object started)."""
        if self._http is not None:
            self._http.close()
            self._http = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if getattr(self, "_log", None) is not None:
            self._log.close()

    def __enter__(self) -> SimulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self._proc is not None
        return self._proc.pid

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    # Admin -------------------------------------------------------------------------------

    def _admin(self, method: str, path: str, payload: Any = None) -> Any:
        response = self._http.request(method, f"/_simulator/{path}", json=payload)
        response.raise_for_status()
        return response.json()["data"]

    def reset(self) -> None:
        """Forget jobs, ledger, faults and rate-limit counters."""
        self._admin("POST", "reset", {})

    def ledger(self) -> dict[str, Any]:
        """Everything the server saw: requests, submissions, job timings, totals."""
        data: dict[str, Any] = self._admin("GET", "ledger")
        return data

    def poll_counts(self) -> dict[str, int]:
        """Status polls seen per request id."""
        counts: dict[str, int] = self._admin("GET", "ledger?summary=1")["poll_counts"]
        return counts

    def _headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key, "X-API-Secret": self.api_secret}

    def submit_jobs(self, durations: Sequence[float]) -> list[str]:
        """Submit one job per duration (rounded to 0.5 s; the longest first, so that all end about on time)."""
        from concurrent.futures import ThreadPoolExecutor

        headers = self._headers()

        def submit(index: int) -> str:
            response = self._http.post(
                "/person/interactions",
                headers=headers,
                json={"social_media_url": f"https://x.com/bench_user_{index}", "type": "followers"},
            )
            response.raise_for_status()
            rid: str = response.json()["data"]["request_id"]
            return rid

        # One settings change per distinct duration (0.5 s steps) rather than one fault per job:
        # the simulator checks every pending fault on every request.
        groups: dict[float, list[int]] = {}
        for index, duration in enumerate(durations):
            groups.setdefault(max(0.1, round(duration * 2) / 2), []).append(index)
        ids = [""] * len(durations)
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            for duration in sorted(groups, reverse=True):
                self._admin("POST", "settings", {"job_duration": duration})
                indexes = groups[duration]
                for index, rid in zip(indexes, pool.map(submit, indexes), strict=True):
                    ids[index] = rid
        #: Seconds the last submission took: jobs started up to this much before their waiters.
        self.last_submit_span = time.monotonic() - started
        return ids

    def final_states(self, request_ids: Sequence[str]) -> dict[str, tuple[str, int | None, float | None]]:
        """What the server says each job ended as: ``(status, result.total_count, end time as Unix time)``."""
        states = {}
        headers = self._headers()
        for rid in request_ids:
            data = self._http.get("/person/interactions", params={"request_id": rid}, headers=headers).json()[
                "data"
            ]
            result = data.get("result") or {}
            ended = data.get("completed_at")
            states[rid] = (
                data["status"],
                result.get("total_count"),
                _dt.datetime.fromisoformat(ended.replace("Z", "+00:00")).timestamp() if ended else None,
            )
        return states

    def nyne_connection(self, **extra: Any) -> str:
        """
        JSON for ``AIRFLOW_CONN_<ID>`` of a ``nyne`` connection to this server.

        It declares no rate limit, as the server has none (extras given here override that).
        """
        extras = {"rate_limit_per_minute": 0, "rate_limit_per_hour": 0, **extra}
        return json.dumps(
            {
                "conn_type": "nyne",
                "login": self.api_key,
                "password": self.api_secret,
                "host": self.url,
                "extra": extras,
            }
        )

    def http_connection(self) -> str:
        """JSON for ``AIRFLOW_CONN_<ID>`` of a generic ``http`` connection carrying the API headers in its extra."""
        return json.dumps(
            {
                "conn_type": "http",
                "host": self.url,
                "extra": {"X-API-Key": self.api_key, "X-API-Secret": self.api_secret},
            }
        )


def spread_durations(count: int, low: float, high: float, seed: int = 7) -> list[float]:
    """``count`` job durations evenly spread over ``[low, high]`` seconds, in a shuffled order."""
    if count == 1:
        return [high]
    values = [low + (high - low) * i / (count - 1) for i in range(count)]
    random.Random(seed).shuffle(values)
    return values
