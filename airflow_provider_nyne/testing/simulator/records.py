"""What the simulator records: accounts and the ledger's entries, and where they are kept."""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "DEFAULT_PERMISSIONS",
    "Account",
    "CallbackAttempt",
    "Charge",
    "JobTiming",
    "LedgerStore",
    "Poll",
    "RequestRecord",
    "Submission",
    "UsageCall",
    "account_from_mapping",
]

DEFAULT_PERMISSIONS = frozenset({"interactions", "usage"})


@dataclass
class Account:
    """A simulated API account and its live counters."""

    api_key: str
    api_secret: str = field(repr=False)
    credits: int = 1000
    subscription_active: bool = True
    disabled: bool = False
    permissions: frozenset[str] = DEFAULT_PERMISSIONS
    allowed_ips: frozenset[str] | None = None
    credits_used: int = 0
    submissions: int = 0
    #: (reset time, count) of the current rate-limit windows; shared by every client of the account.
    minute_window: tuple[float, int] = (0.0, 0)
    hour_window: tuple[float, int] = (0.0, 0)

    def public(self, *, with_secret: bool = False) -> dict[str, Any]:
        """Return the account as a JSON-compatible dict (secret left out unless asked).

        :param with_secret: include ``api_secret``.
        """
        data: dict[str, Any] = {
            "api_key": self.api_key,
            "credits": self.credits,
            "credits_used": self.credits_used,
            "submissions": self.submissions,
            "subscription_active": self.subscription_active,
            "disabled": self.disabled,
            "permissions": sorted(self.permissions),
            "allowed_ips": None if self.allowed_ips is None else sorted(self.allowed_ips),
        }
        if with_secret:
            data["api_secret"] = self.api_secret
        return data


def _strings(value: Any, name: str) -> frozenset[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a list of strings")
    return frozenset(str(item) for item in value)


def account_from_mapping(data: Mapping[str, Any]) -> Account:
    """Build an :class:`Account` from JSON-like fields (``api_key`` and ``api_secret`` required).

    :param data: the fields of ``POST /_simulator/accounts``.
    """
    known = {
        "api_key",
        "api_secret",
        "credits",
        "subscription_active",
        "disabled",
        "permissions",
        "allowed_ips",
    }
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown account fields: {sorted(unknown)}")
    api_key, api_secret = data.get("api_key"), data.get("api_secret")
    if not isinstance(api_key, str) or not api_key or not isinstance(api_secret, str) or not api_secret:
        raise ValueError("api_key and api_secret must be non-empty strings")
    credits = data.get("credits", 1000)
    if isinstance(credits, bool) or not isinstance(credits, int):
        raise TypeError("credits must be an integer")
    flags = {}
    for name in ("subscription_active", "disabled"):
        if name in data:
            if not isinstance(data[name], bool):
                raise TypeError(f"{name} must be true or false")
            flags[name] = data[name]
    permissions = data.get("permissions")
    allowed_ips = data.get("allowed_ips")
    return Account(
        api_key=api_key,
        api_secret=api_secret,
        credits=credits,
        permissions=DEFAULT_PERMISSIONS if permissions is None else _strings(permissions, "permissions"),
        allowed_ips=None if allowed_ips is None else _strings(allowed_ips, "allowed_ips"),
        **flags,
    )


@dataclass(frozen=True)
class RequestRecord:
    """One API request the simulator received, and what it answered.

    ``time`` is the Unix time of the answer; ``api_key`` the ``X-API-Key`` sent (the account);
    ``status`` is None when the connection was dropped; ``fault`` names the injected fault.
    """

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
    """An accepted submission (a job was created)."""

    time: float
    api_key: str
    request_id: str
    request: dict[str, Any]


@dataclass(frozen=True)
class Charge:
    """Settlement of a terminal job: credits are 3 for results, 0 for empty or failed jobs."""

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
    """When a job was submitted, when it finished and when a client first learned that it had.

    Times are Unix times. ``completed_at`` and ``status`` (``completed`` or ``failed``) are set
    once the job is terminal; ``detected_at`` is the first status answer that reported the
    terminal status (``detected_by`` ``poll``) or the first acknowledged callback delivery
    (``callback``), whichever came first; None until then.
    """

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
        return {
            "request_id": self.request_id,
            "api_key": self.api_key,
            "submitted_at": self.submitted_at,
            "completed_at": self.completed_at,
            "status": self.status,
            "detected_at": self.detected_at,
            "detected_by": self.detected_by,
            "detection_delay": self.detection_delay,
        }


class LedgerStore:
    """The ledger's storage: each list keeps the newest ``limit`` entries; totals are never cut."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.requests: deque[RequestRecord] = deque(maxlen=limit)
        self.submissions: deque[Submission] = deque(maxlen=limit)
        self.charges: deque[Charge] = deque(maxlen=limit)
        self.polls: deque[Poll] = deque(maxlen=limit)
        self.usage_calls: deque[UsageCall] = deque(maxlen=limit)
        self.callback_attempts: deque[CallbackAttempt] = deque(maxlen=limit)
        #: By request id, oldest submission first.
        self.jobs: OrderedDict[str, JobTiming] = OrderedDict()
        # Totals survive the caps above.
        self.credits_by_account: dict[str, int] = {}
        self.poll_counts: dict[str, int] = {}
        #: Answers by (endpoint, HTTP status); None is a dropped connection.
        self.status_counts: dict[tuple[str, int | None], int] = {}

    def add_request(self, record: RequestRecord) -> None:
        """Append a request and count its answer.

        :param record: the request and its answer.
        """
        self.requests.append(record)
        key = (record.endpoint, record.status)
        self.status_counts[key] = self.status_counts.get(key, 0) + 1

    def add_job(self, timing: JobTiming) -> None:
        """Start the timing of a new job, dropping the oldest beyond the limit.

        :param timing: the new job's timing (submission time only).
        """
        self.jobs[timing.request_id] = timing
        while len(self.jobs) > self.limit:
            self.jobs.popitem(last=False)

    def update_job(self, request_id: str, **changes: Any) -> None:
        """Change a job's timing (nothing when it was dropped or reset away).

        :param request_id: the job's request id.
        :param changes: :class:`JobTiming` fields and their new values.
        """
        timing = self.jobs.get(request_id)
        if timing is not None:
            self.jobs[request_id] = replace(timing, **changes)

    def detected(self, request_id: str, at: float, by: str) -> None:
        """Record that a client learned the job's outcome, unless one already had.

        :param request_id: the job's request id.
        :param at: Unix time of the answer or acknowledgement.
        :param by: ``poll`` or ``callback``.
        """
        timing = self.jobs.get(request_id)
        if timing is not None and timing.detected_at is None:
            self.update_job(request_id, detected_at=at, detected_by=by)
