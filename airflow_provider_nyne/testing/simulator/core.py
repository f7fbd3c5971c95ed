"""The simulator's state and the API's decisions: accounts, jobs, credits and the ledger.

Everything here is guarded by one re-entrant lock, so the server thread and test threads can
use it at the same time. Nothing here does I/O.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from airflow_provider_nyne.testing.simulator.data import build_result, iso, normalise_shape
from airflow_provider_nyne.testing.simulator.faults import FaultBook
from airflow_provider_nyne.testing.simulator.jobs import (
    TERMINAL_STATUSES,
    Job,
    job_data,
    job_status,
    spread_duration,
)
from airflow_provider_nyne.testing.simulator.ratelimit import count_request
from airflow_provider_nyne.testing.simulator.records import (
    Account,
    CallbackAttempt,
    Charge,
    JobTiming,
    LedgerStore,
    Poll,
    RequestRecord,
    Submission,
    UsageCall,
)
from airflow_provider_nyne.testing.simulator.settings import Settings
from airflow_provider_nyne.testing.simulator.validation import ApiError, parse_submission

__all__ = ["SimulatorCore"]


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
        self.ledger = LedgerStore(ledger_limit)
        self.faults = FaultBook(self.lock)
        #: Jobs accepted since start or reset: the next job's place in the duration sequence.
        self._jobs_accepted = 0
        self._submits_since_prune = 0
        self.started_wall = time.time()
        #: Bumped by reset(); callback deliveries of an older generation stop.
        self.generation = 0
        #: Called (under the lock) for every new or released job, to schedule its completion.
        self.on_job_scheduled: Callable[[Job], None] | None = None

    # ----------------------------------------------------------------- configuration
    def configure(self, changes: Mapping[str, Any]) -> Settings:
        """Apply setting changes atomically and return the new settings.

        :param changes: setting names and values; all are checked before any is applied.
        """
        with self.lock:
            self.settings = self.settings.updated(changes)
            return self.settings

    def upsert_account(self, account: Account) -> Account:
        """Add an account, or replace the flags and balance of an existing one (counters kept).

        :param account: the account's new state.
        """
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
        """Return a copy of an account (KeyError when unknown).

        :param api_key: the account's key.
        """
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
            self.ledger = LedgerStore(self._ledger_limit)
            self.faults.clear()
            self._jobs_accepted = 0

    # ----------------------------------------------------------------- API decisions
    def authenticate(self, endpoint: str, headers: Mapping[str, str], client_ip: str | None) -> Account:
        """Return the account the request's headers name, or raise the 401/403 answer.

        :param endpoint: ``submit``, ``status`` or ``usage``.
        :param headers: the request headers, names in lower case.
        :param client_ip: the peer address, checked against the account's allowed IPs.
        """
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
        """Count a request against the account's windows; return headers or raise the 429.

        :param account: the authenticated account.
        :param endpoint: ``submit``, ``status`` or ``usage`` (only ``rate_limited_endpoints`` count).
        """
        with self.lock:
            if endpoint not in self.settings.rate_limited_endpoints:
                return {}
            return count_request(account, self.settings, time.time())

    def submit(self, account: Account, body: bytes) -> Job:
        """Check credits, validate the body and create a job (the 202 answer's subject).

        :param account: the authenticated account.
        :param body: the raw request body.
        """
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
            duration = spread_duration(
                duration, settings.job_duration_sigma, settings.job_duration_seed, self._jobs_accepted
            )
            applied = self.faults.take_job(settings.failure_reason)
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
            self._jobs_accepted += 1
            account.submissions += 1
            self.ledger.submissions.append(
                Submission(now_wall, account.api_key, job.request_id, query.as_dict())
            )
            self.ledger.add_job(JobTiming(job.request_id, account.api_key, now_wall))
            self._submits_since_prune += 1
            if self._submits_since_prune >= 256:
                self._prune_locked(now_mono)
            if self.on_job_scheduled is not None:
                self.on_job_scheduled(job)
            return job

    def poll(self, account: Account, request_id: str | None, *, answered: bool = True) -> dict[str, Any]:
        """Return the ``data`` of a status answer, or raise 400/404.

        :param account: the authenticated account.
        :param request_id: the ``request_id`` query parameter.
        :param answered: False when the client will not get this answer (an injected fault
            replaces it): the poll is recorded, but it tells no client that the job finished.
        """
        if request_id is None or not request_id.strip():
            raise ApiError(400, "invalid_request_id", "The request_id query parameter is required")
        with self.lock:
            now = time.monotonic()
            job = self.jobs.get(request_id.strip())
            if job is None or job.api_key != account.api_key or self._expired(job, now):
                raise ApiError(404, "request_not_found", f"No request {request_id!r}: unknown or expired")
            data = self._job_data_locked(job, now)
            wall = time.time()
            self.ledger.polls.append(Poll(wall, account.api_key, job.request_id, data["status"]))
            if answered and data["status"] in TERMINAL_STATUSES:
                self.ledger.detected(job.request_id, wall, "poll")
            self.ledger.poll_counts[job.request_id] = self.ledger.poll_counts.get(job.request_id, 0) + 1
            return data

    def usage(self, account: Account) -> dict[str, Any]:
        """Return the ``data`` of a usage answer.

        :param account: the authenticated account.
        """
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
    def _expired(self, job: Job, now: float) -> bool:
        return now >= job.end_mono + self.settings.request_ttl

    def _job_data_locked(self, job: Job, now: float) -> dict[str, Any]:
        status = job_status(job, now, self.settings.queued_fraction)
        if status in TERMINAL_STATUSES:
            self._settle_locked(job)
        return job_data(job, status, self.settings.queued_fraction)

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
        completed_at = job.wall(job.end_mono)
        ledger.charges.append(Charge(completed_at, job.api_key, job.request_id, credits, reason))
        status = "failed" if job.fail_reason is not None else "completed"
        ledger.update_job(job.request_id, completed_at=completed_at, status=status)
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
        is due now, the seconds left when the job is not terminal yet, or None (job gone, no
        callback, or already started).

        :param request_id: the job's request id.
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
        """Return what a poll by the owner would see now, without recording a poll.

        :param request_id: the job's request id.
        """
        with self.lock:
            now = time.monotonic()
            job = self.jobs.get(request_id)
            if job is None or self._expired(job, now):
                return None
            return self._job_data_locked(job, now)

    # ----------------------------------------------------------------- ledger
    def record_request(self, record: RequestRecord) -> None:
        """Append an entry to the request log.

        :param record: the request and its answer.
        """
        with self.lock:
            self.ledger.add_request(record)

    def record_callback(self, attempt: CallbackAttempt, generation: int) -> bool:
        """Append a callback attempt; return False (recording nothing) after a reset.

        An acknowledged attempt tells the client the job finished, unless a poll already had.

        :param attempt: the attempt.
        :param generation: the :attr:`generation` the delivery started in.
        """
        with self.lock:
            if generation != self.generation:
                return False
            self.ledger.callback_attempts.append(attempt)
            if attempt.delivered:
                self.ledger.detected(attempt.request_id, attempt.finished_at, "callback")
            return True
