"""The ledger: what the simulator received, charged and delivered (docs/simulator.md, "Ledger")."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_nyne.testing.simulator.core import SimulatorCore


@dataclass(frozen=True)
class RequestRecord:
    """An API request and its answer (``status`` None: connection dropped; ``fault``: the one applied)."""

    time: float
    method: str
    endpoint: str
    path: str
    api_key: str | None
    status: int | None
    code: str | None
    fault: str | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class Submission:
    """An accepted submission, with its normalised request fields."""

    time: float
    api_key: str
    request_id: str
    request: dict[str, Any]


@dataclass(frozen=True)
class Charge:
    """Settlement of a finished job: 3 credits for results, 0 for empty or failed jobs."""

    time: float
    api_key: str
    request_id: str
    credits: int
    reason: str


@dataclass(frozen=True)
class Poll:
    """A successful status read."""

    time: float
    api_key: str
    request_id: str
    status: str


@dataclass(frozen=True)
class UsageCall:
    """A successful ``GET /usage``."""

    time: float
    api_key: str


@dataclass(frozen=True)
class CallbackAttempt:
    """One callback delivery attempt (``attempt`` starts at 1)."""

    request_id: str
    url: str
    attempt: int
    started_at: float
    finished_at: float
    status_code: int | None
    error: str | None
    delivered: bool


@dataclass(frozen=True)
class JobTiming:
    """When a job was submitted, finished, and first known finished by a client (Unix times or None)."""

    request_id: str
    api_key: str
    submitted_at: float
    completed_at: float | None = None
    status: str | None = None
    detected_at: float | None = None
    detected_by: str | None = None

    @property
    def detection_delay(self) -> float | None:
        """Seconds from completion to the first client knowing it (None until detected)."""
        if self.detected_at is None or self.completed_at is None:
            return None
        return self.detected_at - self.completed_at

    def as_dict(self) -> dict[str, Any]:
        """Return the timing as JSON-compatible data, with ``detection_delay``."""
        return {**asdict(self), "detection_delay": self.detection_delay}


#: The lists of the ledger, each keeping the newest ``limit`` entries.
_LISTS = ("requests", "submissions", "charges", "polls", "usage_calls", "callback_attempts")


class LedgerStore:
    """The ledger's storage, written by the simulator's core under its lock; totals are never cut."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.requests: deque[RequestRecord] = deque(maxlen=limit)
        self.submissions: deque[Submission] = deque(maxlen=limit)
        self.charges: deque[Charge] = deque(maxlen=limit)
        self.polls: deque[Poll] = deque(maxlen=limit)
        self.usage_calls: deque[UsageCall] = deque(maxlen=limit)
        self.callback_attempts: deque[CallbackAttempt] = deque(maxlen=limit)
        self.jobs: OrderedDict[str, JobTiming] = OrderedDict()  # by request id, oldest first
        self.credits_by_account: dict[str, int] = {}
        self.poll_counts: dict[str, int] = {}
        #: Answers by (endpoint, HTTP status); None is a dropped connection.
        self.status_counts: dict[tuple[str, int | None], int] = {}

    def add_request(self, record: RequestRecord) -> None:
        """Append a request and count its answer."""
        self.requests.append(record)
        key = (record.endpoint, record.status)
        self.status_counts[key] = self.status_counts.get(key, 0) + 1

    def add_job(self, timing: JobTiming) -> None:
        """Start the timing of a new job, dropping the oldest beyond the limit."""
        self.jobs[timing.request_id] = timing
        while len(self.jobs) > self.limit:
            self.jobs.popitem(last=False)

    def update_job(self, request_id: str, **changes: Any) -> None:
        """Change a job's timing (nothing when it was dropped or reset away)."""
        if (timing := self.jobs.get(request_id)) is not None:
            self.jobs[request_id] = replace(timing, **changes)

    def detected(self, request_id: str, at: float, by: str) -> None:
        """Record that a client learned the outcome (``by`` poll or callback), unless one already had."""
        if (timing := self.jobs.get(request_id)) is not None and timing.detected_at is None:
            self.update_job(request_id, detected_at=at, detected_by=by)


class Ledger:
    """Read-only, thread-safe view of everything the simulator saw and charged.

    Each list keeps the newest ``ledger_limit`` entries; :meth:`credits_charged`,
    :meth:`poll_count` and :meth:`status_counts` are never truncated.
    """

    def __init__(self, core: SimulatorCore) -> None:
        self._core = core

    def _select(self, name: str, **match: str | None) -> list[Any]:
        """The entries of one list whose fields equal every ``match`` that is not None (settled first)."""
        wanted = {key: value for key, value in match.items() if value is not None}
        with self._core.lock:
            self._core.settle_due()
            entries = getattr(self._core.ledger, name)
            return [e for e in entries if all(getattr(e, key) == value for key, value in wanted.items())]

    def requests(self, endpoint: str | None = None, *, api_key: str | None = None) -> list[RequestRecord]:
        """Every API request received (also faulted and dropped ones), oldest first.

        :param endpoint: only ``submit``, ``status`` or ``usage`` requests.
        :param api_key: only requests sent with this ``X-API-Key``.
        """
        return self._select("requests", endpoint=endpoint, api_key=api_key)

    def submissions(self, api_key: str | None = None) -> list[Submission]:
        """Accepted submissions (jobs created), with their normalised request fields.

        :param api_key: only this account's submissions.
        """
        return self._select("submissions", api_key=api_key)

    def charges(self, api_key: str | None = None) -> list[Charge]:
        """Settlements of finished jobs (3 credits, or 0 for empty and failed jobs).

        :param api_key: only this account's charges.
        """
        return self._select("charges", api_key=api_key)

    def credits_charged(self, api_key: str | None = None) -> int:
        """Total credits charged, for one account or all.

        :param api_key: only this account's total.
        """
        with self._core.lock:
            self._core.settle_due()
            totals = self._core.ledger.credits_by_account
            return sum(totals.values()) if api_key is None else totals.get(api_key, 0)

    def polls(self, request_id: str | None = None) -> list[Poll]:
        """Successful status reads, oldest first.

        :param request_id: only polls of this request.
        """
        return self._select("polls", request_id=request_id)

    def poll_count(self, request_id: str | None = None) -> int:
        """Number of successful status reads, of one request or all.

        :param request_id: only polls of this request.
        """
        with self._core.lock:
            counts = self._core.ledger.poll_counts
            return sum(counts.values()) if request_id is None else counts.get(request_id, 0)

    def usage_calls(self, api_key: str | None = None) -> list[UsageCall]:
        """Successful ``GET /usage`` calls.

        :param api_key: only this account's calls.
        """
        return self._select("usage_calls", api_key=api_key)

    def callback_attempts(self, request_id: str | None = None) -> list[CallbackAttempt]:
        """Callback delivery attempts, oldest first.

        :param request_id: only attempts for this request.
        """
        return self._select("callback_attempts", request_id=request_id)

    def jobs(self, api_key: str | None = None) -> list[JobTiming]:
        """Each job's submission, completion and detection times, oldest submission first.

        :param api_key: only this account's jobs.
        """
        with self._core.lock:
            self._core.settle_due()
            return [job for job in self._core.ledger.jobs.values() if api_key in (None, job.api_key)]

    def rejections(self, code: str | None = None, *, endpoint: str | None = None) -> list[RequestRecord]:
        """Requests answered with an HTTP status of 400 or more (also injected errors).

        :param code: only answers with this error code.
        :param endpoint: only ``submit``, ``status`` or ``usage`` requests.
        """
        return [r for r in self.requests(endpoint) if (r.status or 0) >= 400 and code in (None, r.code)]

    def status_counts(self, endpoint: str | None = None) -> dict[int | None, int]:
        """How many answers had each HTTP status (None: dropped connection), e.g. ``{200: 7, 429: 2}``.

        :param endpoint: only ``submit``, ``status`` or ``usage`` requests.
        """
        counts: dict[int | None, int] = {}
        with self._core.lock:
            for (counted, status), count in self._core.ledger.status_counts.items():
                if endpoint in (None, counted):
                    counts[status] = counts.get(status, 0) + count
        return counts

    def snapshot(self, *, summary: bool = False) -> dict[str, Any]:
        """Return the whole ledger as JSON-compatible data (what ``GET /_simulator/ledger`` answers).

        :param summary: only counts and totals, no lists.
        """
        core = self._core
        with core.lock:
            core.settle_due()
            ledger, accounts = core.ledger, core.accounts.values()
            status_counts: dict[str, dict[str, int]] = {}
            for (endpoint, status), count in sorted(ledger.status_counts.items(), key=str):
                status_counts.setdefault(endpoint, {})["dropped" if status is None else str(status)] = count
            data: dict[str, Any] = {
                "credits_charged": dict(ledger.credits_by_account),
                "poll_counts": dict(ledger.poll_counts),
                "submission_counts": {a.api_key: a.submissions for a in accounts if a.submissions},
                "status_counts": status_counts,
                "totals": {
                    "requests": sum(ledger.status_counts.values()),
                    "submissions": len(ledger.submissions),
                    "charges": len(ledger.charges),
                    "credits_charged": sum(ledger.credits_by_account.values()),
                    "polls": sum(ledger.poll_counts.values()),
                    "usage_calls": len(ledger.usage_calls),
                    "callback_attempts": len(ledger.callback_attempts),
                    "rejections": sum(
                        n for (_, status), n in ledger.status_counts.items() if (status or 0) >= 400
                    ),
                    "jobs_finished": sum(1 for job in ledger.jobs.values() if job.completed_at is not None),
                    "jobs_detected": sum(1 for job in ledger.jobs.values() if job.detected_at is not None),
                },
                "accounts": {
                    a.api_key: {"credits": a.credits, "credits_used": a.credits_used} for a in accounts
                },
            }
            if not summary:
                data.update({name: [asdict(entry) for entry in getattr(ledger, name)] for name in _LISTS})
                data["jobs"] = [job.as_dict() for job in ledger.jobs.values()]
                data["rejections"] = [entry for entry in data["requests"] if (entry["status"] or 0) >= 400]
            return data

    def wait_for(
        self, predicate: Callable[[Ledger], bool], timeout: float = 5.0, interval: float = 0.01
    ) -> None:
        """Wait until ``predicate(ledger)`` is true, or raise ``TimeoutError``.

        :param predicate: called with this ledger until it returns true.
        :param timeout: seconds to wait.
        :param interval: seconds between checks.
        """
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"ledger condition not met within {timeout} s")
            time.sleep(interval)
