"""State of the Nyne simulator: settings, accounts, jobs, faults, rate limits and the ledger.

Everything here is guarded by one re-entrant lock, so the server thread and test threads can
use it at the same time. Nothing here does I/O.
"""

from __future__ import annotations

import hmac
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import Any

from airflow_provider_nyne.testing._sim_data import build_result, normalise_shape
from airflow_provider_nyne.testing._sim_validation import ApiError, InteractionQuery, parse_submission

__all__ = [
    "ENDPOINTS",
    "JOB_FAULT_KINDS",
    "RESPONSE_FAULT_KINDS",
    "Account",
    "CallbackAttempt",
    "Charge",
    "FaultRule",
    "Job",
    "Poll",
    "RequestRecord",
    "Settings",
    "SimulatorCore",
    "Submission",
    "UsageCall",
    "iso",
]

#: API endpoints a fault or rate limit can target (``*`` in a fault means all three).
ENDPOINTS = ("submit", "status", "usage")
RESPONSE_FAULT_KINDS = frozenset({"error", "delay", "drop", "malformed_json"})
JOB_FAULT_KINDS = frozenset(
    {"fail_job", "empty_job", "result_shape", "job_duration", "pending_status", "hold_job"}
)
_FAULT_ALIASES: dict[str, dict[str, Any]] = {
    "rate_limit": {"kind": "error", "status": 429, "code": "rate_limit_exceeded"},
    "server_error": {"kind": "error", "status": 500, "code": "internal_error"},
    "unavailable": {"kind": "error", "status": 503, "code": "service_unavailable"},
}
_DEFAULT_MESSAGES = {
    400: "Bad request",
    401: "Unauthorized",
    402: "Payment required",
    403: "Forbidden",
    404: "Not found",
    429: "Rate limit exceeded",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service temporarily unavailable",
    504: "Gateway timeout",
}
DEFAULT_PERMISSIONS = frozenset({"interactions", "usage"})
MALFORMED_BODY = '{"success": true, "data": {"request_id": "req_'


def iso(wall: float) -> str:
    """Format a Unix time as ISO 8601 UTC with milliseconds."""
    moment = datetime.fromtimestamp(wall, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _positive_or_none(value: int | None) -> int | None:
    if value is None or value <= 0:
        return None
    return int(value)


@dataclass
class Settings:
    """Behaviour knobs; all can be changed while the server runs."""

    job_duration: float = 0.2
    slow_job_duration: float | None = None
    request_ttl: float = 3600.0
    rate_limit_per_minute: int | None = 60
    rate_limit_per_hour: int | None = 1000
    rate_limited_endpoints: frozenset[str] = frozenset(ENDPOINTS)
    callback_time_scale: float = 1.0
    callback_allowed_hosts: frozenset[str] | None = None
    failure_reason: str = "Profile is private"
    queued_fraction: float = 0.25
    credits_per_result: int = 3

    @property
    def effective_slow_job_duration(self) -> float:
        """Duration of ``slow*`` jobs: ``slow_job_duration`` or ten times ``job_duration``."""
        if self.slow_job_duration is not None:
            return self.slow_job_duration
        return self.job_duration * 10

    def updated(self, changes: Mapping[str, Any]) -> Settings:
        """Return a copy with ``changes`` applied and checked."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown simulator settings: {sorted(unknown)}")
        values = dict(changes)
        for name in ("rate_limit_per_minute", "rate_limit_per_hour"):
            if name in values:
                values[name] = _positive_or_none(values[name])
        if "rate_limited_endpoints" in values:
            endpoints = frozenset(values["rate_limited_endpoints"])
            if not endpoints <= set(ENDPOINTS):
                raise ValueError(f"rate_limited_endpoints must be a subset of {ENDPOINTS}")
            values["rate_limited_endpoints"] = endpoints
        if values.get("callback_allowed_hosts") is not None:
            values["callback_allowed_hosts"] = frozenset(h.lower() for h in values["callback_allowed_hosts"])
        new = replace(self, **values)
        for name in ("job_duration", "request_ttl", "callback_time_scale"):
            if float(getattr(new, name)) < 0:
                raise ValueError(f"{name} must not be negative")
        if new.slow_job_duration is not None and new.slow_job_duration < 0:
            raise ValueError("slow_job_duration must not be negative")
        if not 0 <= new.queued_fraction <= 1:
            raise ValueError("queued_fraction must be between 0 and 1")
        return new

    def as_dict(self) -> dict[str, Any]:
        """Return the settings as JSON-compatible values."""
        data = asdict(self)
        data["rate_limited_endpoints"] = sorted(self.rate_limited_endpoints)
        if self.callback_allowed_hosts is not None:
            data["callback_allowed_hosts"] = sorted(self.callback_allowed_hosts)
        data["effective_slow_job_duration"] = self.effective_slow_job_duration
        return data


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
    minute_window: tuple[float, int] = (0.0, 0)
    hour_window: tuple[float, int] = (0.0, 0)

    def public(self, *, with_secret: bool = False) -> dict[str, Any]:
        """Return the account as a JSON-compatible dict (secret left out unless asked)."""
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


@dataclass
class Job:
    """A submitted request; its status is computed from elapsed time."""

    request_id: str
    api_key: str
    query: InteractionQuery
    created_mono: float
    created_wall: float
    duration: float
    fail_reason: str | None
    empty: bool
    shape: frozenset[str]
    intermediate_status: str
    settled: bool = False
    credits_charged: int = 0
    result: dict[str, Any] | None = None
    callback_started: bool = False
    #: Held jobs stay queued/processing (and are never charged or expired) until released.
    held: bool = False

    @property
    def end_mono(self) -> float:
        """Monotonic time at which the job reaches its terminal status (infinite while held)."""
        return math.inf if self.held else self.created_mono + self.duration

    def wall(self, mono: float) -> float:
        """Convert a monotonic time of this job to Unix time."""
        return self.created_wall + (mono - self.created_mono)


@dataclass(frozen=True)
class RequestRecord:
    """One API request the simulator received, and what it answered.

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


@dataclass
class FaultRule:
    """An active fault; ``remaining`` None means until cleared."""

    id: str
    kind: str
    endpoint: str
    remaining: int | None
    params: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """Return the rule as a JSON-compatible dict."""
        params = dict(self.params)
        if "shape" in params:
            params["shape"] = sorted(params["shape"])
        return {
            "id": self.id,
            "kind": self.kind,
            "endpoint": self.endpoint,
            "times": self.remaining,
            **params,
        }


class _LedgerStore:
    def __init__(self, limit: int) -> None:
        self.requests: deque[RequestRecord] = deque(maxlen=limit)
        self.submissions: deque[Submission] = deque(maxlen=limit)
        self.charges: deque[Charge] = deque(maxlen=limit)
        self.polls: deque[Poll] = deque(maxlen=limit)
        self.usage_calls: deque[UsageCall] = deque(maxlen=limit)
        self.callback_attempts: deque[CallbackAttempt] = deque(maxlen=limit)
        # Totals survive the caps above.
        self.credits_by_account: dict[str, int] = {}
        self.poll_counts: dict[str, int] = {}


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false")
    return value


def _number(value: Any, name: str, *, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ValueError(f"{name} must be a number >= {minimum}")
    return float(value)


class SimulatorCore:
    """All simulator state and the API's decisions, independent of the HTTP layer."""

    def __init__(
        self, settings: Settings, accounts: Iterable[Account], *, ledger_limit: int = 100_000
    ) -> None:
        self.lock = threading.RLock()
        self.settings = settings
        self._initial_settings = settings
        self._initial_accounts = [replace(account) for account in accounts]
        self.accounts: dict[str, Account] = {a.api_key: replace(a) for a in self._initial_accounts}
        self.jobs: dict[str, Job] = {}
        self._unsettled: set[str] = set()
        self._ledger_limit = ledger_limit
        self.ledger = _LedgerStore(ledger_limit)
        self.faults: list[FaultRule] = []
        self._fault_counter = 0
        self._submits_since_prune = 0
        self.started_wall = time.time()
        #: Bumped by reset(); callback deliveries of an older generation stop.
        self.generation = 0
        #: Called (under the lock) for every new or released job, to schedule its completion.
        self.on_job_scheduled: Callable[[Job], None] | None = None

    # ----------------------------------------------------------------- configuration
    def configure(self, changes: Mapping[str, Any]) -> Settings:
        """Apply setting changes atomically and return the new settings."""
        with self.lock:
            self.settings = self.settings.updated(changes)
            return self.settings

    def upsert_account(self, account: Account) -> Account:
        """Add an account, or replace the flags and balance of an existing one."""
        with self.lock:
            existing = self.accounts.get(account.api_key)
            if existing is not None:
                account = replace(
                    account,
                    credits_used=existing.credits_used,
                    submissions=existing.submissions,
                    minute_window=existing.minute_window,
                    hour_window=existing.hour_window,
                )
            self.accounts[account.api_key] = account
            return replace(account)

    def get_account(self, api_key: str) -> Account:
        """Return a copy of an account (KeyError when unknown)."""
        with self.lock:
            self._settle_due_locked(time.monotonic())
            return replace(self.accounts[api_key])

    def reset(self, *, settings: bool = False) -> None:
        """Forget jobs, ledger, faults and rate-limit counters; restore the initial accounts.

        :param settings: also restore the settings given at construction.
        """
        with self.lock:
            self.generation += 1
            if settings:
                self.settings = self._initial_settings
            self.accounts = {a.api_key: replace(a) for a in self._initial_accounts}
            self.jobs.clear()
            self._unsettled.clear()
            self.ledger = _LedgerStore(self._ledger_limit)
            self.faults.clear()

    # ----------------------------------------------------------------- faults
    def add_fault(self, spec: Mapping[str, Any]) -> FaultRule:
        """Check a fault description (see the module docs) and activate it."""
        spec = dict(spec)
        kind = spec.pop("kind", None)
        if not isinstance(kind, str):
            raise ValueError("a fault needs a 'kind'")
        if kind in _FAULT_ALIASES:
            spec = {**_FAULT_ALIASES[kind], **spec}
            kind = spec.pop("kind")
        if kind not in RESPONSE_FAULT_KINDS | JOB_FAULT_KINDS:
            known = sorted(RESPONSE_FAULT_KINDS | JOB_FAULT_KINDS | set(_FAULT_ALIASES))
            raise ValueError(f"unknown fault kind {kind!r}; choose from {known}")
        times = spec.pop("times", 1)
        if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
            raise ValueError("times must be a positive integer or null (until cleared)")
        endpoint = spec.pop("endpoint", "*")
        if kind in JOB_FAULT_KINDS:
            endpoint = "submit"
        elif endpoint not in (*ENDPOINTS, "*"):
            raise ValueError(f"endpoint must be one of {[*ENDPOINTS, '*']}")
        params = self._fault_params(kind, spec)
        with self.lock:
            self._fault_counter += 1
            rule = FaultRule(f"fault-{self._fault_counter}", kind, endpoint, times, params)
            self.faults.append(rule)
            return rule

    def _fault_params(self, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if kind == "error":
            status = spec.pop("status", 500)
            if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
                raise ValueError("status must be an HTTP status code")
            params["status"] = status
            params["code"] = str(spec.pop("code", "internal_error" if status >= 500 else "error"))
            params["message"] = str(spec.pop("message", _DEFAULT_MESSAGES.get(status, "Injected error")))
            retry_after = spec.pop("retry_after", 1 if status == 429 else None)
            params["retry_after"] = None if retry_after is None else _number(retry_after, "retry_after")
        elif kind == "delay":
            params["seconds"] = _number(spec.pop("seconds", None), "seconds")
        elif kind == "drop":
            params["after_processing"] = _bool(spec.pop("after_processing", False), "after_processing")
        elif kind == "malformed_json":
            params["after_processing"] = _bool(spec.pop("after_processing", False), "after_processing")
            status = spec.pop("status", 200)
            if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
                raise ValueError("status must be an HTTP status code")
            params["status"] = status
            params["body"] = str(spec.pop("body", MALFORMED_BODY))
        elif kind == "fail_job":
            reason = spec.pop("reason", None)
            params["reason"] = str(reason) if reason is not None else None
        elif kind == "result_shape":
            params["shape"] = normalise_shape(spec.pop("shape", "variant"))
        elif kind == "job_duration":
            params["seconds"] = _number(spec.pop("seconds", None), "seconds")
        elif kind in ("pending_status", "hold_job"):
            pass
        if spec:
            raise ValueError(f"unexpected fields for a {kind!r} fault: {sorted(spec)}")
        return params

    def active_faults(self) -> list[FaultRule]:
        """Return copies of the active fault rules, oldest first."""
        with self.lock:
            return [replace(rule, params=dict(rule.params)) for rule in self.faults]

    def remove_fault(self, fault_id: str) -> bool:
        """Deactivate one fault; return whether it was active."""
        with self.lock:
            before = len(self.faults)
            self.faults = [rule for rule in self.faults if rule.id != fault_id]
            return len(self.faults) != before

    def clear_faults(self) -> None:
        """Deactivate every fault."""
        with self.lock:
            self.faults.clear()

    def _consume(self, rule: FaultRule) -> None:
        if rule.remaining is not None:
            rule.remaining -= 1
            if rule.remaining <= 0:
                self.faults.remove(rule)

    def take_response_faults(self, endpoint: str) -> tuple[float, FaultRule | None]:
        """Consume the first matching delay and the first matching answer fault."""
        delay = 0.0
        answer: FaultRule | None = None
        with self.lock:
            for rule in list(self.faults):
                if rule.kind not in RESPONSE_FAULT_KINDS or rule.endpoint not in (endpoint, "*"):
                    continue
                if rule.kind == "delay":
                    if delay == 0.0:
                        delay = rule.params["seconds"]
                        self._consume(rule)
                elif answer is None:
                    answer = replace(rule, params=dict(rule.params))
                    self._consume(rule)
        return delay, answer

    def _take_job_faults(self) -> dict[str, Any]:
        applied: dict[str, Any] = {}
        for rule in list(self.faults):
            if rule.kind not in JOB_FAULT_KINDS:
                continue
            if rule.kind == "fail_job" and "fail_reason" not in applied:
                applied["fail_reason"] = rule.params["reason"] or self.settings.failure_reason
            elif rule.kind == "empty_job" and "empty" not in applied:
                applied["empty"] = True
            elif rule.kind == "result_shape" and "shape" not in applied:
                applied["shape"] = rule.params["shape"]
            elif rule.kind == "job_duration" and "duration" not in applied:
                applied["duration"] = rule.params["seconds"]
            elif rule.kind == "pending_status" and "intermediate_status" not in applied:
                applied["intermediate_status"] = "pending"
            elif rule.kind == "hold_job" and "held" not in applied:
                applied["held"] = True
            else:
                continue
            self._consume(rule)
        return applied

    # ----------------------------------------------------------------- API decisions
    def authenticate(self, endpoint: str, headers: Mapping[str, str], client_ip: str | None) -> Account:
        """Return the account the request's headers name, or raise the 401/403 answer."""
        key = headers.get("x-api-key", "").strip()
        secret = headers.get("x-api-secret", "").strip()
        if not key:
            raise ApiError(401, "missing_api_key", "The X-API-Key header is missing")
        if not secret:
            raise ApiError(401, "missing_api_secret", "The X-API-Secret header is missing")
        with self.lock:
            account = self.accounts.get(key)
            if account is None:
                raise ApiError(401, "invalid_api_key", "The API key is not valid")
            if not hmac.compare_digest(account.api_secret.encode(), secret.encode()):
                raise ApiError(401, "invalid_api_secret", "The API secret does not match the API key")
            if account.disabled:
                raise ApiError(403, "api_key_disabled", "This API key has been disabled")
            if account.allowed_ips is not None and client_ip not in account.allowed_ips:
                raise ApiError(
                    403, "ip_not_allowed", f"Requests from IP {client_ip} are not allowed for this key"
                )
            if endpoint in ("submit", "status"):
                if not account.subscription_active:
                    raise ApiError(403, "subscription_required", "An active subscription is required")
                if "interactions" not in account.permissions:
                    raise ApiError(403, "permission_denied", "This API key may not use the interactions API")
            elif endpoint == "usage" and "usage" not in account.permissions:
                raise ApiError(403, "permission_denied", "This API key may not read usage")
            return account

    def rate_limit(self, account: Account, endpoint: str) -> dict[str, str]:
        """Count a request against the account's windows; return headers or raise the 429."""
        with self.lock:
            settings = self.settings
            if endpoint not in settings.rate_limited_endpoints:
                return {}
            now = time.time()
            windows: list[tuple[str, int, float]] = []
            if settings.rate_limit_per_minute is not None:
                windows.append(("minute_window", settings.rate_limit_per_minute, 60.0))
            if settings.rate_limit_per_hour is not None:
                windows.append(("hour_window", settings.rate_limit_per_hour, 3600.0))
            if not windows:
                return {}
            state: list[tuple[str, int, float, float, int]] = []
            for attr, limit, length in windows:
                start, count = getattr(account, attr)
                if now >= start + length:
                    start, count = now, 0
                state.append((attr, limit, length, start, count))
            exhausted = [entry for entry in state if entry[4] >= entry[1]]
            if exhausted:
                reset_at = max(start + length for _, _, length, start, _ in exhausted)
                limit = min(entry[1] for entry in exhausted)
                retry_after = max(1, math.ceil(reset_at - now))
                headers = _rate_headers(limit, 0, reset_at, now)
                headers["Retry-After"] = str(retry_after)
                raise ApiError(
                    429,
                    "rate_limit_exceeded",
                    f"Rate limit exceeded: {limit} requests; retry in {retry_after} s",
                    headers,
                )
            tightest: tuple[int, int, float] | None = None
            for attr, limit, _length, start, count in state:
                setattr(account, attr, (start, count + 1))
                remaining = limit - count - 1
                if tightest is None or remaining < tightest[1]:
                    tightest = (limit, remaining, start + _length)
            assert tightest is not None
            return _rate_headers(tightest[0], tightest[1], tightest[2], now)

    def submit(self, account: Account, body: bytes) -> Job:
        """Check credits, validate the body and create a job (the 202 answer's subject)."""
        with self.lock:
            self._settle_due_locked(time.monotonic())
            if account.credits <= 0:
                raise ApiError(
                    402, "insufficient_credits", "Insufficient credits: top up the account to submit"
                )
            query = parse_submission(body, self.settings.callback_allowed_hosts)
            settings = self.settings
            now_mono, now_wall = time.monotonic(), time.time()
            duration = settings.job_duration
            fail_reason: str | None = None
            empty = False
            shape: frozenset[str] = frozenset()
            held = False
            magic = (query.username or "").lower()
            if magic.startswith("empty"):
                empty = True
            elif magic.startswith("fail"):
                fail_reason = settings.failure_reason
            elif magic.startswith("slow"):
                duration = settings.effective_slow_job_duration
            elif magic.startswith("variant"):
                shape = normalise_shape("variant")
            elif magic.startswith("hold"):
                held = True
            applied = self._take_job_faults()
            job = Job(
                request_id=f"req_{secrets.token_hex(12)}",
                api_key=account.api_key,
                query=query,
                created_mono=now_mono,
                created_wall=now_wall,
                duration=float(applied.get("duration", duration)),
                fail_reason=applied.get("fail_reason", fail_reason),
                empty=bool(applied.get("empty", empty)),
                shape=applied.get("shape", shape),
                intermediate_status=applied.get("intermediate_status", "processing"),
                held=bool(applied.get("held", held)),
            )
            self.jobs[job.request_id] = job
            self._unsettled.add(job.request_id)
            account.submissions += 1
            self.ledger.submissions.append(
                Submission(now_wall, account.api_key, job.request_id, query.as_dict())
            )
            self._submits_since_prune += 1
            if self._submits_since_prune >= 256:
                self._prune_locked(now_mono)
            if self.on_job_scheduled is not None:
                self.on_job_scheduled(job)
            return job

    def poll(self, account: Account, request_id: str | None) -> dict[str, Any]:
        """Return the ``data`` of a status answer, or raise 400/404."""
        if request_id is None or not request_id.strip():
            raise ApiError(400, "invalid_request_id", "The request_id query parameter is required")
        with self.lock:
            now = time.monotonic()
            job = self.jobs.get(request_id.strip())
            if job is None or job.api_key != account.api_key or self._expired(job, now):
                raise ApiError(404, "request_not_found", f"No request {request_id!r}: unknown or expired")
            data = self._job_data_locked(job, now)
            self.ledger.polls.append(Poll(time.time(), account.api_key, job.request_id, data["status"]))
            self.ledger.poll_counts[job.request_id] = self.ledger.poll_counts.get(job.request_id, 0) + 1
            return data

    def usage(self, account: Account) -> dict[str, Any]:
        """Return the ``data`` of a usage answer."""
        with self.lock:
            self._settle_due_locked(time.monotonic())
            settings = self.settings
            self.ledger.usage_calls.append(UsageCall(time.time(), account.api_key))
            return {
                "plan": "simulator",
                "subscription_active": account.subscription_active,
                "credits_remaining": account.credits,
                "credits_used": account.credits_used,
                "requests_this_period": account.submissions,
                "period_start": iso(self.started_wall),
                "limits": {
                    "requests_per_minute": settings.rate_limit_per_minute,
                    "requests_per_hour": settings.rate_limit_per_hour,
                    "credits_per_request_with_results": settings.credits_per_result,
                },
            }

    # ----------------------------------------------------------------- jobs
    def _status(self, job: Job, now: float) -> str:
        elapsed = now - job.created_mono
        if elapsed >= job.duration and not job.held:
            return "failed" if job.fail_reason is not None else "completed"
        if elapsed < job.duration * self.settings.queued_fraction:
            return "queued"
        return job.intermediate_status

    def _expired(self, job: Job, now: float) -> bool:
        return now >= job.end_mono + self.settings.request_ttl

    def _job_data_locked(self, job: Job, now: float) -> dict[str, Any]:
        status = self._status(job, now)
        queued_until = job.created_mono + job.duration * self.settings.queued_fraction
        if status in ("completed", "failed"):
            changed = job.end_mono
        elif status == "queued":
            changed = job.created_mono
        else:
            changed = queued_until
        data: dict[str, Any] = {
            "request_id": job.request_id,
            "status": status,
            "completed": status == "completed",
            "interaction_type": job.query.interaction_type,
            "platform": job.query.platform,
            "created_at": iso(job.created_wall),
            "updated_at": iso(job.wall(changed)),
        }
        if status in ("completed", "failed"):
            self._settle_locked(job)
            data["completed_at"] = iso(job.wall(job.end_mono))
        if status == "completed":
            data["result"] = job.result
        elif status == "failed":
            data["error"] = job.fail_reason
        return data

    def _settle_locked(self, job: Job) -> None:
        if job.settled:
            return
        job.settled = True
        self._unsettled.discard(job.request_id)
        if job.fail_reason is not None:
            credits, reason = 0, "failed"
        else:
            job.result = build_result(job.query, empty=job.empty, shape=job.shape)
            has_results = job.result["total_count"] > 0
            credits = self.settings.credits_per_result if has_results else 0
            reason = "results" if has_results else "empty"
        job.credits_charged = credits
        account = self.accounts.get(job.api_key)
        if account is not None:
            account.credits -= credits
            account.credits_used += credits
        ledger = self.ledger
        ledger.charges.append(Charge(job.wall(job.end_mono), job.api_key, job.request_id, credits, reason))
        ledger.credits_by_account[job.api_key] = ledger.credits_by_account.get(job.api_key, 0) + credits

    def _settle_due_locked(self, now: float) -> None:
        for request_id in list(self._unsettled):
            job = self.jobs.get(request_id)
            if job is None:
                self._unsettled.discard(request_id)
            elif now >= job.end_mono:
                self._settle_locked(job)

    def settle_due(self) -> None:
        """Charge every job that has reached its terminal status (idempotent)."""
        with self.lock:
            self._settle_due_locked(time.monotonic())

    def _prune_locked(self, now: float) -> None:
        self._submits_since_prune = 0
        for request_id in [rid for rid, job in self.jobs.items() if self._expired(job, now)]:
            job = self.jobs.pop(request_id)
            if not job.settled:
                self._settle_locked(job)

    def complete_job(self, request_id: str) -> tuple[Job, dict[str, Any], int] | float | None:
        """Settle a job at its completion time.

        Returns the job, its callback data and the current :attr:`generation` when a callback
        is due now, the seconds left
        when the job is not terminal yet, or None (job gone, no callback, or already started).
        """
        with self.lock:
            job = self.jobs.get(request_id)
            now = time.monotonic()
            if job is None or job.held:
                return None  # a held job is scheduled again when released
            if now < job.end_mono:
                return job.end_mono - now
            data = self._job_data_locked(job, now)
            if job.query.callback_url is None or job.callback_started:
                return None
            job.callback_started = True
            return job, data, self.generation

    def release_jobs(self, request_id: str | None = None) -> list[str]:
        """Let held jobs finish: at once if their duration has passed, else when it does.

        :param request_id: one job (``KeyError`` when unknown), or every held job when None.
        :returns: the request ids released.
        """
        with self.lock:
            if request_id is not None:
                if request_id not in self.jobs:
                    raise KeyError(f"no job {request_id!r}")
                jobs = [self.jobs[request_id]]
            else:
                jobs = list(self.jobs.values())
            now = time.monotonic()
            released = []
            for job in jobs:
                if not job.held:
                    continue
                job.held = False
                # Completion is now (or later, if the job's own duration has not passed yet).
                job.duration = max(job.duration, now - job.created_mono)
                released.append(job.request_id)
                if self.on_job_scheduled is not None:
                    self.on_job_scheduled(job)
            return released

    def job_snapshot(self, request_id: str) -> dict[str, Any] | None:
        """Return what a poll by the owner would see now, without recording a poll."""
        with self.lock:
            now = time.monotonic()
            job = self.jobs.get(request_id)
            if job is None or self._expired(job, now):
                return None
            return self._job_data_locked(job, now)

    # ----------------------------------------------------------------- ledger
    def record_request(self, record: RequestRecord) -> None:
        """Append an entry to the request log."""
        with self.lock:
            self.ledger.requests.append(record)

    def record_callback(self, attempt: CallbackAttempt, generation: int) -> bool:
        """Append a callback attempt; return False (recording nothing) after a reset."""
        with self.lock:
            if generation != self.generation:
                return False
            self.ledger.callback_attempts.append(attempt)
            return True


def _rate_headers(limit: int, remaining: int, reset_at: float, now: float) -> dict[str, str]:
    seconds = max(0, math.ceil(reset_at - now))
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(max(0, remaining)),
        "X-RateLimit-Reset": str(math.ceil(reset_at)),
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(max(0, remaining)),
        "RateLimit-Reset": str(seconds),
    }
