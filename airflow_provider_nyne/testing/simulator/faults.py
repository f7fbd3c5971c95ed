"""Scriptable failures: fault rules, their Python controls, and how answers and new jobs consume them."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_nyne.testing.simulator.jobs import normalise_shape
from airflow_provider_nyne.testing.simulator.settings import ENDPOINTS, non_negative

#: Faults that replace or delay an answer, and faults that change the next jobs.
RESPONSE_FAULT_KINDS = frozenset({"error", "delay", "drop", "malformed_json"})
JOB_FAULT_KINDS = frozenset(
    {"fail_job", "empty_job", "result_shape", "job_duration", "pending_status", "hold_job"}
)
_ALIASES: dict[str, dict[str, Any]] = {
    "rate_limit": {"kind": "error", "status": 429, "code": "rate_limit_exceeded"},
    "server_error": {"kind": "error", "status": 500, "code": "internal_error"},
    "unavailable": {"kind": "error", "status": 503, "code": "service_unavailable"},
}
_MESSAGES = {
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


@dataclass
class FaultRule:
    """An active fault; ``remaining`` None means until cleared."""

    id: str
    kind: str
    endpoint: str
    remaining: int | None
    params: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """Return the rule in its HTTP form (``GET /_simulator/faults``)."""
        params = {k: sorted(v) if k == "shape" else v for k, v in self.params.items()}
        return {
            "id": self.id,
            "kind": self.kind,
            "endpoint": self.endpoint,
            "times": self.remaining,
            **params,
        }


def _bool(spec: dict[str, Any], name: str) -> bool:
    value = spec.pop(name, False)
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false")
    return value


def _status(spec: dict[str, Any], default: int) -> int:
    status = spec.pop("status", default)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError("status must be an HTTP status code")
    return status


def _params(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Check and take the kind's own fields out of ``spec``; what is left over is refused."""
    params: dict[str, Any] = {}
    if kind == "error":
        params["status"] = status = _status(spec, 500)
        params["code"] = str(spec.pop("code", "internal_error" if status >= 500 else "error"))
        params["message"] = str(spec.pop("message", _MESSAGES.get(status, "Injected error")))
        retry_after = spec.pop("retry_after", 1 if status == 429 else None)
        params["retry_after"] = None if retry_after is None else non_negative(retry_after, "retry_after")
    elif kind in ("delay", "job_duration"):
        params["seconds"] = non_negative(spec.pop("seconds", None), "seconds")
    elif kind in ("drop", "malformed_json"):
        params["after_processing"] = _bool(spec, "after_processing")
        if kind == "malformed_json":
            params["status"] = _status(spec, 200)
            params["body"] = str(spec.pop("body", '{"success": true, "data": {"request_id": "req_'))
    elif kind == "fail_job":
        reason = spec.pop("reason", None)
        params["reason"] = None if reason is None else str(reason)
    elif kind == "result_shape":
        params["shape"] = normalise_shape(spec.pop("shape", "variant"))
    if spec:
        raise ValueError(f"unexpected fields for a {kind!r} fault: {sorted(spec)}")
    return params


class FaultControls:
    """Scripted failures (``sim.faults``): each method activates a fault and returns its id.

    In every method, ``endpoint`` is ``submit``, ``status``, ``usage`` or ``*`` (all three), and
    ``times`` is how many answers (or new jobs) the fault affects, None for all until cleared.

    :param lock: the simulator's state lock: faults change together with the rest of its state.
    """

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._rules: list[FaultRule] = []
        self._counter = 0

    def add(self, kind: str, **params: Any) -> str:
        """Activate a fault from its HTTP form (``POST /_simulator/faults``).

        :param kind: ``error``, ``rate_limit``, ``server_error``, ``unavailable``, ``delay``,
            ``drop``, ``malformed_json``, ``fail_job``, ``empty_job``, ``result_shape``,
            ``job_duration``, ``pending_status`` or ``hold_job``.
        :param params: ``endpoint``, ``times`` and the kind's own fields.
        """
        return self.add_rules([{"kind": kind, **params}])[0].id

    def add_rules(self, specs: Iterable[Mapping[str, Any]]) -> list[FaultRule]:
        """Check fault descriptions in their HTTP form, then activate them all (or none, on a bad one).

        :param specs: objects with ``kind``, ``endpoint``, ``times`` and the kind's own fields.
        """
        checked = []
        for original in specs:
            if not isinstance(original, Mapping):
                raise TypeError("a fault is a JSON object with a 'kind'")
            spec = dict(original)
            kind = spec.pop("kind", None)
            if not isinstance(kind, str):
                raise ValueError("a fault needs a 'kind'")
            if kind in _ALIASES:
                spec = {**_ALIASES[kind], **spec}
                kind = spec.pop("kind")
            if kind not in RESPONSE_FAULT_KINDS | JOB_FAULT_KINDS:
                known = sorted(RESPONSE_FAULT_KINDS | JOB_FAULT_KINDS | set(_ALIASES))
                raise ValueError(f"unknown fault kind {kind!r}; choose from {known}")
            times = spec.pop("times", 1)
            if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
                raise ValueError("times must be a positive integer or null (until cleared)")
            endpoint = spec.pop("endpoint", "*")
            if kind in JOB_FAULT_KINDS:
                endpoint = "submit"
            elif endpoint not in (*ENDPOINTS, "*"):
                raise ValueError(f"endpoint must be one of {[*ENDPOINTS, '*']}")
            checked.append((kind, endpoint, times, _params(kind, spec)))
        with self._lock:
            added = []
            for kind, endpoint, times, params in checked:
                self._counter += 1
                added.append(FaultRule(f"fault-{self._counter}", kind, endpoint, times, params))
            self._rules.extend(added)
            return added

    def error(
        self,
        status: int,
        code: str,
        message: str | None = None,
        *,
        endpoint: str = "*",
        times: int | None = 1,
        retry_after: float | None = None,
    ) -> str:
        """Answer with ``status`` and ``error.code``.

        :param status: HTTP status to answer.
        :param code: ``error.code`` in the body.
        :param message: ``error.message`` (a default per status otherwise).
        :param retry_after: ``Retry-After`` in seconds (1 by default for 429).
        """
        optional = {"message": message, "retry_after": retry_after}
        fields = {name: value for name, value in optional.items() if value is not None}
        return self.add("error", status=status, code=code, endpoint=endpoint, times=times, **fields)

    def rate_limited(self, *, endpoint: str = "*", times: int | None = 1, retry_after: float = 1) -> str:
        """Answer ``429 rate_limit_exceeded`` with ``Retry-After``.

        :param retry_after: ``Retry-After`` in seconds.
        """
        return self.add("rate_limit", endpoint=endpoint, times=times, retry_after=retry_after)

    def server_error(self, *, endpoint: str = "*", times: int | None = 1) -> str:
        """Answer ``500 internal_error``."""
        return self.add("server_error", endpoint=endpoint, times=times)

    def unavailable(
        self, *, endpoint: str = "*", times: int | None = 1, retry_after: float | None = None
    ) -> str:
        """Answer ``503 service_unavailable``.

        :param retry_after: optional ``Retry-After`` in seconds.
        """
        return self.add("unavailable", endpoint=endpoint, times=times, retry_after=retry_after)

    def delay(self, seconds: float, *, endpoint: str = "*", times: int | None = 1) -> str:
        """Wait ``seconds`` before handling requests; combines with the other faults.

        :param seconds: the delay.
        """
        return self.add("delay", seconds=seconds, endpoint=endpoint, times=times)

    def drop_connection(
        self, *, endpoint: str = "*", times: int | None = 1, after_processing: bool = False
    ) -> str:
        """Read the request, then close the TCP connection without answering.

        :param after_processing: handle the request first (a submission creates its job).
        """
        return self.add("drop", endpoint=endpoint, times=times, after_processing=after_processing)

    def malformed_json(
        self, *, endpoint: str = "*", times: int | None = 1, status: int = 200, after_processing: bool = False
    ) -> str:
        """Answer with a body that is not valid JSON.

        :param status: HTTP status of the broken answer.
        :param after_processing: handle the request first (a submission creates its job).
        """
        params = {"status": status, "after_processing": after_processing}
        return self.add("malformed_json", endpoint=endpoint, times=times, **params)

    def fail_next_job(self, reason: str | None = None, *, times: int | None = 1) -> str:
        """Make the next jobs end ``failed``.

        :param reason: their ``error`` (the ``failure_reason`` setting otherwise).
        """
        return self.add("fail_job", reason=reason, times=times)

    def empty_next_job(self, *, times: int | None = 1) -> str:
        """Make the next jobs complete with no interactions (no credits charged)."""
        return self.add("empty_job", times=times)

    def result_shape(self, shape: str | Iterable[str] = "variant", *, times: int | None = 1) -> str:
        """Give the next jobs' results an alternate shape.

        :param shape: ``actor``, ``string_counts``, ``string_verified``, ``results_list``, a list of
            those, or ``variant`` for all of them.
        """
        return self.add("result_shape", shape=shape if isinstance(shape, str) else list(shape), times=times)

    def job_duration(self, seconds: float, *, times: int | None = 1) -> str:
        """Make the next jobs take exactly ``seconds`` to finish.

        :param seconds: the duration from submission to terminal status.
        """
        return self.add("job_duration", seconds=seconds, times=times)

    def pending_status(self, *, times: int | None = 1) -> str:
        """Make the next jobs report ``pending`` instead of ``processing`` while they run."""
        return self.add("pending_status", times=times)

    def hold_next_job(self, *, times: int | None = 1) -> str:
        """Hold the next jobs queued/processing until ``NyneSimulator.release``."""
        return self.add("hold_job", times=times)

    def active(self) -> list[dict[str, Any]]:
        """Return the active faults, oldest first (same form as ``GET /_simulator/faults``)."""
        with self._lock:
            return [rule.as_dict() for rule in self._rules]

    def remove(self, fault_id: str) -> bool:
        """Deactivate one fault; return whether it was active.

        :param fault_id: the id a fault method returned.
        """
        with self._lock:
            before = len(self._rules)
            self._rules = [rule for rule in self._rules if rule.id != fault_id]
            return len(self._rules) != before

    def clear(self) -> None:
        """Deactivate every fault."""
        with self._lock:
            self._rules.clear()

    def _take(self, rules: list[FaultRule]) -> None:
        for rule in rules:
            if rule.remaining is not None:
                rule.remaining -= 1
                if rule.remaining <= 0:
                    self._rules.remove(rule)

    def take_response(self, endpoint: str) -> tuple[float, FaultRule | None]:
        """Consume the first delay and the first answer fault matching a request (used by the server).

        :param endpoint: ``submit``, ``status`` or ``usage``.
        """
        with self._lock:
            matching = [
                r for r in self._rules if r.kind in RESPONSE_FAULT_KINDS and r.endpoint in (endpoint, "*")
            ]
            delay = next((rule for rule in matching if rule.kind == "delay"), None)
            answer = next((rule for rule in matching if rule.kind != "delay"), None)
            self._take([rule for rule in (delay, answer) if rule is not None])
        return (0.0 if delay is None else delay.params["seconds"]), answer

    def take_job(self, failure_reason: str) -> dict[str, Any]:
        """Consume the job faults a new job gets (the oldest of each kind); return the job fields they set.

        :param failure_reason: the ``error`` of a ``fail_job`` fault without a reason of its own.
        """
        taken: dict[str, FaultRule] = {}
        with self._lock:
            for rule in self._rules:
                if rule.kind in JOB_FAULT_KINDS:
                    taken.setdefault(rule.kind, rule)
            self._take(list(taken.values()))
        applied = {}
        for kind, rule in taken.items():
            if kind == "fail_job":
                applied["fail_reason"] = rule.params["reason"] or failure_reason
            elif kind == "result_shape":
                applied["shape"] = rule.params["shape"]
            elif kind == "job_duration":
                applied["duration"] = rule.params["seconds"]
            elif kind == "pending_status":
                applied["intermediate_status"] = "pending"
            else:
                applied["empty" if kind == "empty_job" else "held"] = True
        return applied
