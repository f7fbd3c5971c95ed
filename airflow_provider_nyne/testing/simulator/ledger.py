"""The ledger: a read-only, thread-safe view of everything the simulator saw and charged."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from airflow_provider_nyne.testing.simulator.records import (
    CallbackAttempt,
    Charge,
    JobTiming,
    Poll,
    RequestRecord,
    Submission,
    UsageCall,
)

if TYPE_CHECKING:
    from airflow_provider_nyne.testing.simulator.core import SimulatorCore

__all__ = ["Ledger", "ledger_snapshot"]


def ledger_snapshot(core: SimulatorCore, *, summary: bool = False) -> dict[str, Any]:
    """Return the ledger as JSON-compatible data (what ``GET /_simulator/ledger`` answers).

    :param core: the simulator's state.
    :param summary: only counts and totals, no per-event lists.
    """
    with core.lock:
        core.settle_due()
        ledger = core.ledger
        submissions_by_account: dict[str, int] = {}
        for account in core.accounts.values():
            submissions_by_account[account.api_key] = account.submissions
        status_counts: dict[str, dict[str, int]] = {}
        for (endpoint, status), count in sorted(ledger.status_counts.items(), key=str):
            status_counts.setdefault(endpoint, {})["dropped" if status is None else str(status)] = count
        data: dict[str, Any] = {
            "credits_charged": dict(ledger.credits_by_account),
            "poll_counts": dict(ledger.poll_counts),
            "submission_counts": {key: count for key, count in submissions_by_account.items() if count},
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
                    count for (_, status), count in ledger.status_counts.items() if status and status >= 400
                ),
                "jobs_finished": sum(1 for job in ledger.jobs.values() if job.completed_at is not None),
                "jobs_detected": sum(1 for job in ledger.jobs.values() if job.detected_at is not None),
            },
            "accounts": {
                account.api_key: {"credits": account.credits, "credits_used": account.credits_used}
                for account in core.accounts.values()
            },
        }
        if not summary:
            data["submissions"] = [asdict(entry) for entry in ledger.submissions]
            data["charges"] = [asdict(entry) for entry in ledger.charges]
            data["polls"] = [asdict(entry) for entry in ledger.polls]
            data["usage_calls"] = [asdict(entry) for entry in ledger.usage_calls]
            data["callback_attempts"] = [asdict(entry) for entry in ledger.callback_attempts]
            data["requests"] = [asdict(entry) for entry in ledger.requests]
            data["jobs"] = [entry.as_dict() for entry in ledger.jobs.values()]
            data["rejections"] = [
                asdict(entry) for entry in ledger.requests if entry.status is not None and entry.status >= 400
            ]
        return data


class Ledger:
    """Read-only, thread-safe view of everything the simulator saw and charged.

    Each list keeps at most ``ledger_limit`` entries (oldest dropped first); the totals behind
    :meth:`credits_charged` and :meth:`poll_count` are never truncated.
    """

    def __init__(self, core: SimulatorCore) -> None:
        self._core = core

    def requests(self, endpoint: str | None = None, *, api_key: str | None = None) -> list[RequestRecord]:
        """Every API request received (also faulted and dropped ones), oldest first.

        :param endpoint: only ``submit``, ``status`` or ``usage`` requests.
        :param api_key: only requests sent with this ``X-API-Key``.
        """
        with self._core.lock:
            return [
                record
                for record in self._core.ledger.requests
                if (endpoint is None or record.endpoint == endpoint)
                and (api_key is None or record.api_key == api_key)
            ]

    def submissions(self, api_key: str | None = None) -> list[Submission]:
        """Accepted submissions (jobs created), with their normalised request fields.

        :param api_key: only this account's submissions.
        """
        with self._core.lock:
            return [
                entry
                for entry in self._core.ledger.submissions
                if api_key is None or entry.api_key == api_key
            ]

    def charges(self, api_key: str | None = None) -> list[Charge]:
        """Settlements of terminal jobs (credits 3, or 0 for empty and failed jobs).

        :param api_key: only this account's charges.
        """
        with self._core.lock:
            self._core.settle_due()
            return [
                entry for entry in self._core.ledger.charges if api_key is None or entry.api_key == api_key
            ]

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
        with self._core.lock:
            return [
                entry
                for entry in self._core.ledger.polls
                if request_id is None or entry.request_id == request_id
            ]

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
        with self._core.lock:
            return [
                entry
                for entry in self._core.ledger.usage_calls
                if api_key is None or entry.api_key == api_key
            ]

    def callback_attempts(self, request_id: str | None = None) -> list[CallbackAttempt]:
        """Callback delivery attempts, oldest first.

        :param request_id: only attempts for this request.
        """
        with self._core.lock:
            return [
                entry
                for entry in self._core.ledger.callback_attempts
                if request_id is None or entry.request_id == request_id
            ]

    def status_counts(self, endpoint: str | None = None) -> dict[int | None, int]:
        """How many answers had each HTTP status (None: dropped connection); never truncated.

        ``status_counts()[429]`` is every 429, from the rate limit or an injected fault.

        :param endpoint: only ``submit``, ``status`` or ``usage`` requests.
        """
        counts: dict[int | None, int] = {}
        with self._core.lock:
            for (counted, status), count in self._core.ledger.status_counts.items():
                if endpoint is None or counted == endpoint:
                    counts[status] = counts.get(status, 0) + count
        return counts

    def jobs(self, api_key: str | None = None) -> list[JobTiming]:
        """Each job's submission, completion and detection times, oldest submission first.

        ``detection_delay`` is the seconds from completion to the first status answer that
        reported it, or to the first acknowledged callback delivery, whichever came first.

        :param api_key: only this account's jobs.
        """
        with self._core.lock:
            self._core.settle_due()
            return [
                entry
                for entry in self._core.ledger.jobs.values()
                if api_key is None or entry.api_key == api_key
            ]

    def rejections(self, code: str | None = None, *, endpoint: str | None = None) -> list[RequestRecord]:
        """Requests answered with an HTTP status >= 400 (also injected errors).

        :param code: only answers with this error code.
        :param endpoint: only ``submit``, ``status`` or ``usage`` requests.
        """
        return [
            record
            for record in self.requests(endpoint)
            if record.status is not None and record.status >= 400 and (code is None or record.code == code)
        ]

    def snapshot(self, *, summary: bool = False) -> dict[str, Any]:
        """Return the whole ledger as JSON-compatible data (same as ``GET /_simulator/ledger``).

        :param summary: only counts and totals, no per-event lists.
        """
        return ledger_snapshot(self._core, summary=summary)

    def wait_for(
        self, predicate: Callable[[Ledger], bool], timeout: float = 5.0, interval: float = 0.01
    ) -> None:
        """Wait until ``predicate(ledger)`` is true.

        :param predicate: called with this ledger until it returns true.
        :param timeout: seconds to wait before raising TimeoutError.
        :param interval: seconds between checks.
        """
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() >= deadline:
                raise TimeoutError(f"ledger condition not met within {timeout} s")
            time.sleep(interval)
