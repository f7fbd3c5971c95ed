"""Where a submitted request id survives a task retry, on every supported Airflow version.

"Never pay twice" needs the request id of the previous try when a task is retried. Where it
can be kept differs by version, and this module is the one place that knows:

* **Airflow 3.3+**: the task's ``task_state_store`` (scoped to dag/run/task/map index, kept
  across tries, cleaned up by Airflow's own retention or ``[state_store] clear_on_success``).
* **Airflow 3.1/3.2**: there is no task state store, and the previous try's XCom is no use:
  Airflow deletes a task's XComs when a new try starts (checked in 3.1.8's execution API and
  with ``dag.test()`` and ``retries=1``). The id is kept in an Airflow **Variable** instead,
  keyed by dag/run/task/map index (``nyne_request__<dag>__<task>__<digest>``) and deleted
  when the task succeeds. Degraded: the Variable is visible in the UI while a task is in
  flight, and one is left behind when a task fails for good (delete it, or let a later
  successful run of the same task instance remove it). Airflow 3.1's SDK logs "Variable not
  found" at error level when a first try looks and finds nothing; that line is harmless.

A crash while the (paid) POST is in flight must not end in a silent second submission, so
the record has two states. Before sending, the operator records the *intent*
(``{"state": "submitting", "fingerprint": ...}``); when the API answers, the request id
replaces it; when the failure proves the lookup was not accepted (nothing sent, 429, 503,
or any other 4xx: ``NyneError.proves_not_processed``), it is cleared. A retry that finds an
intent without a request id cannot know whether the lookup runs (and will be charged), so
the operator stops and says how to resume on purpose.

When the store cannot be read or written before the POST, the answer depends on the store
(see :meth:`RequestStateStore.begin_submission`): the task state store raises
:class:`RequestStateError` and nothing is sent; the Variable fallback sends with an error-level
warning. Where there is no store at all (a unit test without a task context), the task still
works, but a retry submits a new lookup; that is logged as a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from airflow_provider_nyne._compat import get_task_state_store

log = logging.getLogger(__name__)

#: ``task_state_store`` key holding the submitted request (renaming it breaks in-flight retries).
STATE_KEY = "nyne_interactions_request"
#: Prefix of the Variables used where there is no task state store.
VARIABLE_PREFIX = "nyne_request__"


#: ``state`` of a record written before the POST, replaced by the request id when it answers.
SUBMITTING = "submitting"


class RequestStateError(RuntimeError):
    """The task's request record could not be read or written (raised before anything is sent)."""


@dataclass(frozen=True)
class SubmittedRequest:
    """
    What a try remembers about its submission: enough to reconnect, and to notice a changed request.

    A record without ``request_id`` is an *intent*: the try was about to send the POST (or was
    sending it) and never recorded the answer.

    :param request_id: the Nyne request id; ``None`` for an intent
    :param fingerprint: :meth:`InteractionRequest.fingerprint` of what was asked
    :param since: for an intent, when the submission started (ISO 8601, UTC)
    :param try_number: for an intent, the try that was submitting
    """

    request_id: str | None
    fingerprint: str | None = None
    since: str | None = None
    try_number: int | None = None

    @classmethod
    def intent(cls, fingerprint: str, *, try_number: int | None = None) -> SubmittedRequest:
        """
        The record written just before the POST.

        :param fingerprint: :meth:`InteractionRequest.fingerprint` of the request about to be sent
        :param try_number: the running try, named in the message a later try shows
        """
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return cls(None, fingerprint, since=now, try_number=try_number)

    @property
    def submitting(self) -> bool:
        """Whether this is an intent: a submission was started and its answer never recorded."""
        return self.request_id is None

    def interrupted_message(self) -> str:
        """Why a retry stops when this intent was left by an interrupted submission, and how to resume."""
        details = [f"try {self.try_number}"] if self.try_number else []
        if self.since:
            details.append(f"started {self.since}")
        when = f" ({', '.join(details)})" if details else ""
        return (
            f"Nyne: a previous try of this task was interrupted while submitting this lookup{when} "
            "and its answer was never recorded: the lookup may be running "
            "at Nyne and may be charged, so it is not submitted again on its own. To resume without "
            "paying twice, find the request id in the Nyne dashboard and set "
            "reuse_request_id='<request id>'; to submit again knowingly (a second charge if the first "
            "was accepted), set resubmit_if_interrupted=True. Then clear this task."
        )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON value for the store."""
        if self.request_id is None:
            return {
                "state": SUBMITTING,
                "fingerprint": self.fingerprint,
                "since": self.since,
                "try_number": self.try_number,
            }
        return {"request_id": self.request_id, "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, value: Any) -> SubmittedRequest | None:
        """Read a stored value back; anything unreadable counts as nothing stored."""
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return None
        if not isinstance(value, dict):
            return None
        fingerprint = value.get("fingerprint")
        fingerprint = fingerprint if isinstance(fingerprint, str) else None
        rid = value.get("request_id")
        if isinstance(rid, str) and rid:
            return cls(rid, fingerprint)
        if value.get("state") == SUBMITTING:
            since, try_number = value.get("since"), value.get("try_number")
            return cls(
                None,
                fingerprint,
                since=since if isinstance(since, str) else None,
                try_number=try_number if isinstance(try_number, int) else None,
            )
        return None


class RequestStateStore:
    """
    Keeps one :class:`SubmittedRequest` for a task instance across its tries.

    Use :func:`request_state_store` to get the right one for the running Airflow. This base
    class is the "no store" case: it keeps nothing, and every method is a no-op.
    """

    #: ``task_state_store``, ``variable`` or ``none``
    kind = "none"
    #: whether a retry will see what :meth:`save` wrote
    durable = False
    #: whether nothing may be sent when this store fails before the POST
    required = False

    def read(self) -> Any:
        """The stored value as is (``None`` when nothing is stored); raises when the store fails."""
        return None

    def write(self, value: dict[str, Any]) -> None:
        """
        Store a plain JSON value; raises when the store fails.

        :param value: the value
        """

    def delete(self) -> None:
        """Remove the record; raises when the store fails."""

    def load(self, *, strict: bool = False) -> SubmittedRequest | None:
        """
        The request (or intent) a previous try recorded, if any.

        :param strict: raise :class:`RequestStateError` when a ``required`` store cannot be read
            (the submit path: not knowing could mean paying twice); otherwise log a warning
            and return ``None``
        """
        try:
            return SubmittedRequest.from_json(self.read())
        except Exception as err:
            if strict and self.required:
                raise RequestStateError(f"could not read the {self._what()} ({_reason(err)})") from err
            log.warning(
                "Could not read the %s (%s); a retry may submit a new lookup", self._what(), _reason(err)
            )
            return None

    def begin_submission(self, fingerprint: str, *, try_number: int | None = None) -> bool:
        """
        Record the intent to submit, before the POST is sent; whether it was recorded.

        What happens when the store cannot be written is decided per store:

        * the task state store (Airflow 3.3+, ``required``) raises :class:`RequestStateError`,
          and the caller must not send. A crash during that POST would leave nothing behind and
          the retry would pay a second time; refusing costs nothing (no request was sent, and
          the task's retries apply). The store is part of Airflow's task runtime: when it fails,
          the execution API is failing, and the request id could not be recorded afterwards
          either.
        * the Variable fallback (Airflow 3.1/3.2, degraded by design) logs an error-level
          warning and the submission goes ahead. Variables may be out of reach of task
          processes in some deployments, where the provider has always worked with a warning;
          refusing there would turn a weaker guarantee into a provider that cannot submit.
        * without any store (``durable`` is false) there is nothing to write and the submission
          goes ahead (a warning was logged when the store was chosen).

        :param fingerprint: :meth:`InteractionRequest.fingerprint` of the request about to be sent
        :param try_number: the running try
        """
        if not self.durable:
            return False
        try:
            self.write(SubmittedRequest.intent(fingerprint, try_number=try_number).to_json())
        except Exception as err:
            if self.required:
                raise RequestStateError(
                    f"could not record the submission in the {self._what()} before sending it ({_reason(err)})"
                ) from err
            log.error(
                "Could not record the submission in the %s before sending it (%s); sending anyway: if "
                "this try dies before the answer arrives, a retry will submit again and may pay twice",
                self._what(),
                _reason(err),
            )
            return False
        return True

    def save(self, record: SubmittedRequest) -> bool:
        """
        Remember a submission, before any waiting (replaces the intent); whether a retry will find it.

        A failure is logged, not raised: the lookup is paid for and its id is returned and
        pushed to XCom; the intent left behind makes a retry stop and ask instead of paying again.

        :param record: what was submitted
        """
        if not self.durable:
            return False
        try:
            self.write(record.to_json())
        except Exception as err:
            log.warning(
                "Could not keep request %s in the %s (%s); a retry of this task will stop and ask how "
                "to resume: set reuse_request_id=%r",
                record.request_id,
                self._what(),
                _reason(err),
                record.request_id,
            )
            return False
        return True

    def clear_submission(self) -> None:
        """Drop the intent after a failure that proves the lookup was not accepted (``NyneError.proves_not_processed``)."""
        if not self.durable:
            return
        try:
            self.delete()
        except Exception as err:
            log.warning(
                "Could not clear the submission record in the %s (%s); a retry will stop and ask whether "
                "to submit again (resubmit_if_interrupted=True): nothing was accepted",
                self._what(),
                _reason(err),
            )

    def release(self) -> None:
        """Called when the task succeeds: drop what only retries needed (no-op where Airflow cleans up)."""

    @property
    def where(self) -> str:
        """Where the record is kept, for messages (``task state 'nyne_interactions_request'``, ``Variable ...``)."""
        return self._what()

    def _what(self) -> str:
        return "task state"


def _reason(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"[:300]


class _TaskStateStore(RequestStateStore):
    kind = "task_state_store"
    durable = True
    required = True

    def __init__(self, store: Any, key: str) -> None:
        self._store = store
        self._key = key

    def read(self) -> Any:
        return self._store.get(self._key)

    def write(self, value: dict[str, Any]) -> None:
        self._store.set(self._key, value)

    def delete(self) -> None:
        delete = getattr(self._store, "delete", None)
        if delete is not None:
            delete(self._key)
        else:  # an accessor without delete: a value that reads as "nothing stored"
            self._store.set(self._key, {})

    def _what(self) -> str:
        return f"task state {self._key!r}"


class _VariableStore(RequestStateStore):
    kind = "variable"
    durable = True

    def __init__(self, key: str, description: str) -> None:
        self.key = key
        self._description = description

    @staticmethod
    def _variable() -> Any:
        from airflow.sdk import Variable

        return Variable

    def read(self) -> Any:
        return self._variable().get(self.key, default=None)

    def write(self, value: dict[str, Any]) -> None:
        self._variable().set(self.key, json.dumps(value), description=self._description)

    def delete(self) -> None:
        self._variable().delete(self.key)

    def release(self) -> None:
        try:
            self.delete()
        except Exception as err:
            log.warning("Could not delete Variable %s (%s); delete it by hand", self.key, err)

    def _what(self) -> str:
        return f"Variable {self.key}"


def variable_key(dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
    """
    The Variable that keeps a task instance's request where there is no task state store.

    Readable prefix for the UI, digest of the full identity for uniqueness (run ids may hold
    characters a Variable key should not, and keys are limited to 250 characters).

    :param dag_id: the DAG id
    :param run_id: the DAG run id
    :param task_id: the task id
    :param map_index: the map index (-1 when not mapped)
    """
    digest = hashlib.sha256(f"{dag_id}\0{run_id}\0{task_id}\0{map_index}".encode()).hexdigest()[:16]
    readable = f"{VARIABLE_PREFIX}{dag_id}__{task_id}"[:200]
    return f"{readable}__{digest}"


def request_state_store(context: Any, *, key: str = STATE_KEY) -> RequestStateStore:
    """
    The store for this task instance: the task state store on 3.3+, a Variable before, else none.

    :param context: the task's Airflow context
    :param key: the key within the task state store
    """
    store = get_task_state_store(context)
    if store is not None:
        return _TaskStateStore(store, key)
    ti = context.get("ti") if hasattr(context, "get") else None
    run_id = getattr(ti, "run_id", None) or (context.get("run_id") if hasattr(context, "get") else None)
    if ti is None or not run_id:
        log.warning("No task state store and no task instance: a retry of this task may submit a new lookup")
        return RequestStateStore()
    map_index = getattr(ti, "map_index", -1)
    map_index = -1 if map_index is None else int(map_index)
    name = variable_key(ti.dag_id, run_id, ti.task_id, map_index)
    description = (
        f"Nyne request submitted by {ti.dag_id}.{ti.task_id} (run {run_id}, map index {map_index}); "
        "lets a retry reconnect instead of paying again. Deleted when the task succeeds."
    )
    return _VariableStore(name, description)
