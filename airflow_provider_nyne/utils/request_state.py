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

If the store cannot be reached (a worker without access to Variables, a unit test without a
task context), the record is simply not kept: the task still works, but a retry submits a
new lookup. That is logged as a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from airflow_provider_nyne._compat import get_task_state_store

log = logging.getLogger(__name__)

#: ``task_state_store`` key holding the submitted request (renaming it breaks in-flight retries).
STATE_KEY = "nyne_interactions_request"
#: Prefix of the Variables used where there is no task state store.
VARIABLE_PREFIX = "nyne_request__"


@dataclass(frozen=True)
class SubmittedRequest:
    """
    What a try remembers about its submission: enough to reconnect, and to notice a changed request.

    :param request_id: the Nyne request id
    :param fingerprint: :meth:`InteractionRequest.fingerprint` of what was asked
    """

    request_id: str
    fingerprint: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON value for the store."""
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
        rid = value.get("request_id")
        if not isinstance(rid, str) or not rid:
            return None
        fingerprint = value.get("fingerprint")
        return cls(rid, fingerprint if isinstance(fingerprint, str) else None)


class RequestStateStore:
    """
    Keeps one :class:`SubmittedRequest` for a task instance across its tries.

    Use :func:`request_state_store` to get the right one for the running Airflow.
    """

    #: ``task_state_store``, ``variable`` or ``none``
    kind = "none"
    #: whether a retry will see what :meth:`save` wrote
    durable = False

    def load(self) -> SubmittedRequest | None:
        """The request a previous try submitted, if any."""
        return None

    def save(self, record: SubmittedRequest) -> None:
        """
        Remember a submission, before any waiting.

        :param record: what was submitted
        """

    def release(self) -> None:
        """Called when the task succeeds: drop what only retries needed (no-op where Airflow cleans up)."""


class _TaskStateStore(RequestStateStore):
    kind = "task_state_store"
    durable = True

    def __init__(self, store: Any, key: str) -> None:
        self._store = store
        self._key = key

    def load(self) -> SubmittedRequest | None:
        try:
            value = self._store.get(self._key)
        except Exception as err:
            log.warning("Could not read task state %r (%s); a retry may submit a new lookup", self._key, err)
            return None
        return SubmittedRequest.from_json(value)

    def save(self, record: SubmittedRequest) -> None:
        try:
            self._store.set(self._key, record.to_json())
        except Exception as err:
            log.warning(
                "Could not keep request %s in task state (%s); a retry of this task will submit a new lookup",
                record.request_id,
                err,
            )


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

    def load(self) -> SubmittedRequest | None:
        try:
            value = self._variable().get(self.key, default=None)
        except Exception as err:
            log.warning("Could not read Variable %s (%s); a retry may submit a new lookup", self.key, err)
            return None
        return SubmittedRequest.from_json(value)

    def save(self, record: SubmittedRequest) -> None:
        try:
            self._variable().set(self.key, json.dumps(record.to_json()), description=self._description)
        except Exception as err:
            log.warning(
                "Could not keep request %s in Variable %s (%s); a retry of this task will submit a new lookup",
                record.request_id,
                self.key,
                err,
            )

    def release(self) -> None:
        try:
            self._variable().delete(self.key)
        except Exception as err:
            log.warning("Could not delete Variable %s (%s); delete it by hand", self.key, err)


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
