"""The simulator's state and the API's decisions: accounts, jobs, credits, faults and the ledger.

One re-entrant lock guards everything, so the server thread and test threads can use it at
once. Nothing here does I/O; the order of checks is documented in docs/simulator.md.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from airflow_provider_nyne.testing.simulator.accounts import Account
from airflow_provider_nyne.testing.simulator.faults import FaultControls
from airflow_provider_nyne.testing.simulator.jobs import (
    TERMINAL_STATUSES,
    Job,
    build_result,
    iso,
    normalise_shape,
    spread_duration,
)
from airflow_provider_nyne.testing.simulator.ledger import (
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

#: Prune expired jobs once per this many submissions, so that memory stays bounded in long runs.
_PRUNE_EVERY = 256


class SimulatorCore:
    """All simulator state and the API's decisions, independent of the HTTP layer."""

    def __init__(
        self, settings: Settings, accounts: Iterable[Account], *, ledger_limit: int = 100_000
    ) -> None:
        self.lock = threading.RLock()
        self.settings = self._initial_settings = settings
        self._initial_accounts = [replace(account) for account in accounts]
        self._ledger_limit = ledger_limit
        self.faults = FaultControls(self.lock)
        self.started_wall = time.time()
        #: Bumped by reset(); callback deliveries of an older generation stop.
        self.generation = 0
        #: Called (under the lock) for every new or released job, to schedule its completion.
        self.on_job_scheduled: Callable[[Job], None] | None = None
        self._restore()

    def _restore(self) -> None:
        self.accounts = {a.api_key: replace(a) for a in self._initial_accounts}
        self.jobs: dict[str, Job] = {}
        self._unsettled: set[str] = set()
        self.ledger = LedgerStore(self._ledger_limit)
        #: Jobs accepted since start or reset: the next job's place in the duration sequence.
        self._jobs_accepted = 0
        self._submits_since_prune = 0

    # ----------------------------------------------------------------- configuration
    def configure(self, changes: Mapping[str, Any]) -> Settings:
        """Apply setting changes atomically and return the new settings."""
        with self.lock:
            self.settings = self.settings.updated(changes)
            return self.settings

    def upsert_account(self, account: Account) -> Account:
        """Add an account, or replace an existing one's flags and balance (counters kept); return a copy."""
        with self.lock:
            if (old := self.accounts.get(account.api_key)) is not None:
                counters = ("credits_used", "submissions", "minute_window", "hour_window")
                account = replace(account, **{name: getattr(old, name) for name in counters})
            self.accounts[account.api_key] = account
            return replace(account)

    def get_account(self, api_key: str) -> Account:
        """Return a copy of an account, charges settled (``KeyError`` when unknown)."""
        with self.lock:
            self._settle_due_locked(time.monotonic())
            return replace(self.accounts[api_key])

    def reset(self, *, settings: bool = False) -> None:
        """Forget jobs, ledger, faults and rate-limit counters; restore the initial accounts."""
        with self.lock:
            self.generation += 1
            if settings:
                self.settings = self._initial_settings
            self.faults.clear()
            self._restore()

    # ----------------------------------------------------------------- API decisions
    def authenticate(self, endpoint: str, headers: Mapping[str, str], client_ip: str | None) -> Account:
        """Return the account the request's headers (lower-case names) name, or raise the 401/403 answer."""
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
            account.check_access(secret, endpoint, client_ip)
            return account

    def rate_limit(self, account: Account, endpoint: str) -> dict[str, str]:
        """Count a request against the account's windows; return the headers or raise the 429."""
        with self.lock:
            if endpoint not in self.settings.rate_limited_endpoints:
                return {}
            return account.count_request(self.settings, time.time())

    def submit(self, account: Account, body: bytes) -> Job:
        """Check credits, validate the body and create the job of a 202 answer."""
        with self.lock:
            self._settle_due_locked(time.monotonic())
            if account.credits <= 0:
                raise ApiError(
                    402, "insufficient_credits", "Insufficient credits: top up the account to submit"
                )
            settings = self.settings
            query = parse_submission(body, settings.callback_allowed_hosts)
            job = Job(
                request_id=f"req_{secrets.token_hex(12)}",
                api_key=account.api_key,
                query=query,
                created_mono=time.monotonic(),
                created_wall=time.time(),
                duration=settings.job_duration,
                fail_reason=None,
                empty=False,
                shape=frozenset(),
                intermediate_status="processing",
            )
            magic = (query.username or "").lower()  # the magic usernames of docs/simulator.md
            if magic.startswith("empty"):
                job.empty = True
            elif magic.startswith("fail"):
                job.fail_reason = settings.failure_reason
            elif magic.startswith("slow"):
                job.duration = settings.effective_slow_job_duration
            elif magic.startswith("variant"):
                job.shape = normalise_shape("variant")
            elif magic.startswith("hold"):
                job.held = True
            job.duration = spread_duration(
                job.duration, settings.job_duration_sigma, settings.job_duration_seed, self._jobs_accepted
            )
            for name, value in self.faults.take_job(settings.failure_reason).items():
                setattr(job, name, value)
            self.jobs[job.request_id] = job
            self._unsettled.add(job.request_id)
            self._jobs_accepted += 1
            account.submissions += 1
            self.ledger.submissions.append(
                Submission(job.created_wall, account.api_key, job.request_id, query.as_dict())
            )
            self.ledger.add_job(JobTiming(job.request_id, account.api_key, job.created_wall))
            self._submits_since_prune += 1
            if self._submits_since_prune >= _PRUNE_EVERY:
                self._prune_locked(job.created_mono)
            if self.on_job_scheduled is not None:
                self.on_job_scheduled(job)
            return job

    def poll(self, account: Account, request_id: str | None, *, answered: bool = True) -> dict[str, Any]:
        """Return the ``data`` of a status answer, or raise 400/404.

        :param account: the authenticated account.
        :param request_id: the ``request_id`` query parameter.
        :param answered: False when a fault replaces the answer: the poll is recorded, but it
            tells no client that the job finished.
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
    def _expired(self, job: Job, now: float) -> bool:
        return now >= job.end_mono + self.settings.request_ttl

    def _job_data_locked(self, job: Job, now: float) -> dict[str, Any]:
        status = job.status(now, self.settings.queued_fraction)
        if status in TERMINAL_STATUSES:
            self._settle_locked(job)
        return job.data(status, self.settings.queued_fraction)

    def _settle_locked(self, job: Job) -> None:
        """Charge a finished job once and record its completion."""
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
        if (account := self.accounts.get(job.api_key)) is not None:
            account.credits -= credits
            account.credits_used += credits
        completed_at = job.wall(job.end_mono)
        self.ledger.charges.append(Charge(completed_at, job.api_key, job.request_id, credits, reason))
        status = "failed" if job.fail_reason is not None else "completed"
        self.ledger.update_job(job.request_id, completed_at=completed_at, status=status)
        totals = self.ledger.credits_by_account
        totals[job.api_key] = totals.get(job.api_key, 0) + credits

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
            self._settle_locked(self.jobs.pop(request_id))

    def complete_job(self, request_id: str) -> tuple[Job, dict[str, Any], int] | float | None:
        """Settle a job at its completion time.

        Returns the job, its callback data and the current :attr:`generation` when a callback
        is due now, the seconds left when the job is not terminal yet, or None (job gone or
        held, no callback, or its delivery already started).
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
        """Let held jobs (or the one named, ``KeyError`` when unknown) finish; return their request ids."""
        with self.lock:
            if request_id is not None and request_id not in self.jobs:
                raise KeyError(f"no job {request_id!r}")
            jobs = list(self.jobs.values()) if request_id is None else [self.jobs[request_id]]
            now = time.monotonic()
            released = []
            for job in (job for job in jobs if job.held):
                job.held = False
                # Completion is now (or later, if the job's own duration has not passed yet).
                job.duration = max(job.duration, now - job.created_mono)
                released.append(job.request_id)
                if self.on_job_scheduled is not None:
                    self.on_job_scheduled(job)
            return released

    def job_snapshot(self, request_id: str) -> dict[str, Any] | None:
        """Return what a poll by the owner would see now, without recording a poll (None when gone)."""
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
            self.ledger.add_request(record)

    def record_callback(self, attempt: CallbackAttempt, generation: int) -> bool:
        """Append a callback attempt; return False (recording nothing) after a reset.

        An acknowledged attempt tells the client the job finished, unless a poll already had.
        """
        with self.lock:
            if generation != self.generation:
                return False
            self.ledger.callback_attempts.append(attempt)
            if attempt.delivered:
                self.ledger.detected(attempt.request_id, attempt.finished_at, "callback")
            return True
