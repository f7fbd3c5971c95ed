"""Never pay twice: a retried submit task is checked against the simulator's ledger of submissions and charges.

Two ways of retrying, each proving something different:

* ``dag.test()`` with ``retries=1``: Airflow itself runs a second try, with everything a real
  retry has: a new try number, the previous try's XCom deleted before the try starts, and
  only what Airflow keeps across tries (``task_state_store`` on 3.3+, a Variable on 3.1/3.2)
  to find the earlier request. Failures are injected where they happen in production: the
  API failing right after the submission, the worker dying after the lookup completed, a
  failed job, an expired request id.
* Calling ``execute`` twice on one operator with one shared state store: the same decision
  logic without Airflow's runtime, so that every branch (reconnect, reuse, resubmit, changed
  parameters, store unreachable, a submission whose answer never came) is pinned down
  cheaply, including the deferrable resume.

And the cheapest way of not paying twice: not paying at all for bad input. Every invalid case
of the request table (``tests/unit/client/test_request.py``), plus Base URLs carrying
credentials, is given to the operator against the simulator, which must see no request.
(A worker killed while its POST is in flight is tested with real processes in
``tests/e2e/test_kill_mid_submit.py``.)
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_nyne._compat import AirflowException, AirflowFailException, TaskDeferred
from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator
from airflow_provider_nyne.testing.simulator import NyneSimulator
from airflow_provider_nyne.utils.request_state import STATE_KEY, VARIABLE_PREFIX
from tests.integration._dagrun import (
    DAG_HEADER,
    assert_failure,
    failures,
    on_crash,
    set_connection,
    task_instances,
    xcom,
)
from tests.unit.client.test_request import CASES

pytestmark = pytest.mark.integration

__all__ = ["failures", "on_crash"]  # fixtures, imported for pytest


#: 503s that fail a try after its submission: the wait tolerates 10 in a row
#: (max_transient_errors), so the 11th in a row ends the try.
FAILING_STATUS_CHECKS = 11


def has_task_state_store() -> bool:
    try:
        import airflow.models.task_state_store  # noqa: F401
    except ImportError:
        return False
    return True


def leftover_variables() -> dict[str, Any]:
    """The request-keeping Variables in the metadata DB (3.1/3.2 fallback)."""
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(Variable).filter(Variable.key.like(f"{VARIABLE_PREFIX}%")).all()
        return {row.key: json.loads(row.val) for row in rows}


def clear_leftover_variables() -> None:
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(Variable).filter(Variable.key.like(f"{VARIABLE_PREFIX}%")).delete(
            synchronize_session=False
        )


@pytest.fixture(autouse=True)
def _no_leftovers(airflow_db: str) -> None:
    clear_leftover_variables()


# --- Retries run by Airflow (dag.test with retries=1) ---------------------------------------

RETRY_DAG = (
    DAG_HEADER
    + '''

class DiesAfterCompletion(NyneSubmitInteractionsOperator):
    """Loses its worker on the first try after the lookup completed, before the task could succeed."""

    def execute_complete(self, context, event):
        if context["ti"].try_number == 1 and event.get("status") == "success":
            from tests.integration._dagrun import ON_CRASH

            for callback in ON_CRASH:
                callback()
            raise RuntimeError("worker lost after the lookup completed")
        return super().execute_complete(context, event)


with DAG("DAG_ID", schedule=None, start_date=START, catchup=False) as dag:
    OPERATOR(
        task_id="lookup", username="nasa", interaction_type="followers", wait_for_completion=True,
        nyne_conn_id="nyne_no_client_retry", retries=RETRIES, retry_delay=datetime.timedelta(seconds=RETRY_DELAY),
        **FAST, **CALLBACKS,
    )
'''
)


def run_retry_dag(
    load_dag: Any,
    dag_id: str,
    *,
    operator: str = "NyneSubmitInteractionsOperator",
    retries: int = 1,
    retry_delay: float = 0,
) -> Any:
    source = (
        RETRY_DAG.replace("DAG_ID", dag_id)
        .replace("OPERATOR", operator)
        .replace("RETRIES", str(retries))
        .replace("RETRY_DELAY", str(retry_delay))
    )
    return load_dag(source, dag_id).test()


@pytest.fixture
def sim(simulator_connection: NyneSimulator, monkeypatch: pytest.MonkeyPatch) -> NyneSimulator:
    """The simulator, plus a connection whose client does not retry (a single 503 fails the try)."""
    set_connection(
        monkeypatch,
        "nyne_no_client_retry",
        simulator_connection.connection_json(extra={"max_retries": 0}),
    )
    return simulator_connection


def test_retry_reconnects_to_a_request_still_running(
    sim: NyneSimulator, load_dag: Any, failures: Any
) -> None:
    # The API fails right after the submission (first status check): try 1 fails after paying.
    # The job outlasts the retry's start-up (a few seconds on a busy machine).
    sim.faults.job_duration(6.0)
    sim.faults.unavailable(endpoint="status", times=FAILING_STATUS_CHECKS)
    run = run_retry_dag(load_dag, "nyne_retry_running")

    assert task_instances(run)["lookup"] == ("success", 2)
    [first_try] = failures()["lookup"]
    assert first_try["try"] == 1
    assert_failure(first_try, "HTTP 503")
    # Exactly one submission: try 2 found it, still running, and waited for it.
    [submission] = sim.ledger.submissions()
    polls = sim.ledger.polls(submission.request_id)
    assert polls[0].status in ("queued", "processing")
    assert polls[-1].status == "completed"
    assert xcom(run, "lookup")["request_id"] == submission.request_id
    assert sim.ledger.credits_charged() == 3
    assert leftover_variables() == {}


def test_retry_after_the_request_completed_submits_nothing(
    sim: NyneSimulator, load_dag: Any, failures: Any
) -> None:
    run = run_retry_dag(load_dag, "nyne_retry_completed", operator="DiesAfterCompletion")

    assert task_instances(run)["lookup"] == ("success", 2)
    [first_try] = failures()["lookup"]
    assert_failure(first_try, "worker lost after the lookup completed")
    [submission] = sim.ledger.submissions()
    assert xcom(run, "lookup") == {
        "request_id": submission.request_id,
        "status": "completed",
        "total_count": xcom(run, "lookup")["total_count"],
    }
    assert sim.ledger.credits_charged() == 3
    assert leftover_variables() == {}


def test_retry_after_the_request_failed_submits_exactly_once_more(
    sim: NyneSimulator, load_dag: Any, failures: Any
) -> None:
    sim.faults.fail_next_job("Profile is private", times=1)
    run = run_retry_dag(load_dag, "nyne_retry_failed")

    assert task_instances(run)["lookup"] == ("success", 2)
    [first_try] = failures()["lookup"]
    assert_failure(first_try, "failed: Profile is private")
    failed, resubmitted = sim.ledger.submissions()
    assert failed.request_id != resubmitted.request_id
    assert xcom(run, "lookup")["request_id"] == resubmitted.request_id
    # The failed lookup cost nothing; only the second one was charged.
    assert sim.ledger.credits_charged() == 3


def test_retry_after_the_request_expired_submits_exactly_once_more(
    sim: NyneSimulator, load_dag: Any, on_crash: Any
) -> None:
    # By the time the retry runs, the completed request has expired: its id answers 404.
    on_crash(lambda: sim.faults.error(404, "request_not_found", endpoint="status", times=1))
    run = run_retry_dag(load_dag, "nyne_retry_expired", operator="DiesAfterCompletion")

    assert task_instances(run)["lookup"] == ("success", 2)
    first, second = sim.ledger.submissions()
    assert xcom(run, "lookup")["request_id"] == second.request_id
    # try 2 asked about the first id, got 404, and only then submitted. (The simulator does not
    # record the request id of a faulted answer, hence the order check.)
    expired_check = [r for r in sim.ledger.requests(endpoint="status") if r.status == 404]
    assert len(expired_check) == 1
    assert first.time < expired_check[0].time < second.time


def test_request_id_is_kept_where_a_retry_will_find_it(
    sim: NyneSimulator, load_dag: Any, failures: Any
) -> None:
    # A task that fails for good after submitting (no retries left) leaves its request id
    # where the next try would look: the task state store (3.3+) or a Variable (3.1/3.2).
    sim.faults.unavailable(endpoint="status", times=FAILING_STATUS_CHECKS)
    run = run_retry_dag(load_dag, "nyne_kept_for_retry", retries=0)
    assert task_instances(run)["lookup"] == ("failed", 1)
    [submission] = sim.ledger.submissions()
    # XCom has it too, pushed before any waiting.
    assert xcom(run, "lookup", "request_id") == submission.request_id

    if has_task_state_store():
        from airflow.models.task_state_store import TaskStateStoreModel
        from airflow.utils.session import create_session

        with create_session() as session:
            rows = session.query(TaskStateStoreModel).filter_by(run_id=run.run_id, task_id="lookup").all()
        assert {row.key: json.loads(row.value)["request_id"] for row in rows} == {
            STATE_KEY: submission.request_id
        }
        assert leftover_variables() == {}
    else:
        # Degraded 3.1/3.2 behaviour: a Variable per task instance, left behind by a task that failed for good.
        [(key, value)] = leftover_variables().items()
        assert key.startswith(f"{VARIABLE_PREFIX}nyne_kept_for_retry__lookup__")
        assert value["request_id"] == submission.request_id


# --- execute() twice with one state store (no Airflow runtime) --------------------------------


class DictStore:
    """A ``task_state_store`` double: what Airflow keeps across tries."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data: dict[str, Any] = dict(data or {})

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def set(self, key: str, value: Any, **kwargs: Any) -> None:
        assert value is not None
        self.data[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.data.pop(key, None)


class FakeTI:
    dag_id = "direct"
    task_id = "lookup"
    run_id = "manual__direct"
    map_index = -1

    def __init__(self, try_number: int) -> None:
        self.try_number = try_number
        self.xcom: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.xcom[key] = value


def try_context(store: DictStore | None, try_number: int) -> dict[str, Any]:
    """What a try's context holds that matters here; a new TI each try (XCom starts empty, as in Airflow)."""
    context: dict[str, Any] = {"ti": FakeTI(try_number), "run_id": FakeTI.run_id}
    if store is not None:
        context["task_state_store"] = store
    return context


def make_operator(**kwargs: Any) -> NyneSubmitInteractionsOperator:
    defaults: dict[str, Any] = {
        "task_id": "lookup",
        "username": "nasa",
        "interaction_type": "followers",
        "nyne_conn_id": "nyne_no_client_retry",
        "wait_for_completion": True,
        "deferrable": False,
        "poll_interval": 0.02,
        "max_poll_interval": 0.1,
    }
    return NyneSubmitInteractionsOperator(**{**defaults, **kwargs})


def test_execute_twice_reconnects_reuses_and_resubmits(sim: NyneSimulator) -> None:
    store = DictStore()
    # Try 1: submitted, then the API fails the first status check.
    sim.faults.job_duration(1.0)
    sim.faults.unavailable(endpoint="status", times=FAILING_STATUS_CHECKS)
    first = try_context(store, 1)
    with pytest.raises(AirflowException, match="HTTP 503"):
        make_operator().execute(first)
    [submission] = sim.ledger.submissions()
    assert first["ti"].xcom == {"request_id": submission.request_id}
    assert store.data[STATE_KEY]["request_id"] == submission.request_id

    # Try 2: still running -> reconnect and wait; no new submission.
    summary = make_operator().execute(try_context(store, 2))
    assert summary["request_id"] == submission.request_id
    assert len(sim.ledger.submissions()) == 1

    # Try 3 (e.g. the task was cleared): completed -> reused as is.
    assert make_operator().execute(try_context(store, 3)) == summary
    assert len(sim.ledger.submissions()) == 1
    assert sim.ledger.credits_charged() == 3

    # Changed parameters on a later try: the new lookup is submitted.
    changed = make_operator(max_results=20).execute(try_context(store, 4))
    assert changed["request_id"] != submission.request_id
    assert len(sim.ledger.submissions()) == 2


def test_execute_twice_with_a_failed_job_resubmits_once(sim: NyneSimulator) -> None:
    store = DictStore()
    sim.faults.fail_next_job("Account suspended", times=1)
    with pytest.raises(AirflowException, match="Account suspended"):
        make_operator().execute(try_context(store, 1))
    summary = make_operator().execute(try_context(store, 2))
    failed, again = sim.ledger.submissions()
    assert summary["request_id"] == again.request_id != failed.request_id


def test_execute_twice_without_wait_returns_the_same_request(sim: NyneSimulator) -> None:
    store = DictStore()
    rid = make_operator(wait_for_completion=False).execute(try_context(store, 1))
    assert make_operator(wait_for_completion=False).execute(try_context(store, 2)) == rid
    assert len(sim.ledger.submissions()) == 1


def test_deferrable_retry_reconnects_and_resumes(sim: NyneSimulator) -> None:
    store = DictStore()
    sim.faults.job_duration(0.5)
    op = make_operator(deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(try_context(store, 1))
    # The triggerer is gone before the event (e.g. the task was killed): a retry starts over.
    with pytest.raises(TaskDeferred) as again:
        make_operator(deferrable=True).execute(try_context(store, 2))
    assert len(sim.ledger.submissions()) == 1
    trigger = again.value.trigger
    assert trigger.request_id == deferred.value.trigger.request_id

    async def first_event() -> dict[str, Any]:
        return (await trigger.run().__anext__()).payload

    event = asyncio.run(first_event())
    summary = make_operator(deferrable=True).execute_complete(try_context(store, 2), event)
    assert summary["request_id"] == trigger.request_id
    assert len(sim.ledger.submissions()) == 1


def test_without_any_store_a_retry_submits_again(sim: NyneSimulator) -> None:
    # Degraded mode, made explicit: no task state store and no reachable Variable store
    # (no Airflow task runtime here), so nothing survives between tries.
    sim.faults.unavailable(endpoint="status", times=FAILING_STATUS_CHECKS)
    with pytest.raises(AirflowException):
        make_operator().execute(try_context(None, 1))
    make_operator().execute(try_context(None, 2))
    assert len(sim.ledger.submissions()) == 2


def test_a_submission_whose_answer_never_came_is_not_sent_again(
    sim: NyneSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Try 1 sends its POST; the answer is slower than the client waits (a read timeout after
    # sending), so the API has the lookup but the task does not know its id.
    set_connection(
        monkeypatch, "nyne_impatient", sim.connection_json(extra={"max_retries": 0, "timeout": 0.3})
    )
    sim.faults.delay(3.0, endpoint="submit")
    store = DictStore()
    with pytest.raises(AirflowFailException, match="may have been processed"):
        make_operator(nyne_conn_id="nyne_impatient").execute(try_context(store, 1))
    assert store.data[STATE_KEY]["state"] == "submitting"
    sim.ledger.wait_for(lambda ledger: len(ledger.submissions()) == 1, timeout=30)

    # Try 2 (say, the task cleared by hand): stops, sends nothing, says how to resume.
    with pytest.raises(AirflowFailException, match="interrupted while submitting") as info:
        make_operator().execute(try_context(store, 2))
    assert "reuse_request_id" in str(info.value)
    assert "resubmit_if_interrupted=True" in str(info.value)
    [submission] = sim.ledger.submissions()

    # Resumed with the id from the dashboard: no second submission, no second charge.
    summary = make_operator(reuse_request_id=submission.request_id).execute(try_context(store, 3))
    assert summary["request_id"] == submission.request_id
    assert len(sim.ledger.submissions()) == 1
    assert sim.ledger.credits_charged() == 3
    assert store.data[STATE_KEY]["request_id"] == submission.request_id


def test_resubmit_if_interrupted_submits_once_more(sim: NyneSimulator) -> None:
    store = DictStore(
        {STATE_KEY: {"state": "submitting", "fingerprint": make_operator().build_request().fingerprint()}}
    )
    with pytest.raises(AirflowFailException, match="interrupted while submitting"):
        make_operator().execute(try_context(store, 2))
    assert sim.ledger.requests() == []
    summary = make_operator(resubmit_if_interrupted=True).execute(try_context(store, 3))
    [submission] = sim.ledger.submissions()
    assert summary["request_id"] == submission.request_id == store.data[STATE_KEY]["request_id"]


def test_a_refused_submission_clears_the_intent(sim: NyneSimulator) -> None:
    # 402: the API refused the lookup; nothing runs, nothing is charged, so a later try may submit.
    sim.faults.error(402, "insufficient_credits", endpoint="submit")
    store = DictStore()
    with pytest.raises(AirflowFailException, match="out of credits"):
        make_operator().execute(try_context(store, 1))
    assert STATE_KEY not in store.data
    make_operator().execute(try_context(store, 2))
    assert len(sim.ledger.submissions()) == 1


# --- Bad input pays nothing ------------------------------------------------------------------

#: Base URLs that carry credentials; the host is the simulator, the parts must never be shown.
CREDENTIAL_BASE_URLS = {
    "base-url-key-and-secret": "http://KEYPART-5f1c:SECRETPART-90ab@{host}",
    "base-url-without-scheme": "KEYPART-5f1c:SECRETPART-90ab@{host}",
    "base-url-secret-only": "http://SECRETPART-90ab@{host}/",
    "base-url-encoded-at": "http://KEYPART-5f1c:SECRETPART-90ab%40{host}",
    "base-url-backslash": "http://{host}\\@KEYPART-5f1c",
}


def _operator_fields(kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str]] | None:
    """A request-table case as operator arguments and the connection's allow-list (None: no such operator call)."""
    fields = dict(kwargs)
    if "type" in fields and "interaction_type" in fields:
        return None  # the operator has one parameter for both spellings
    if "type" in fields:
        fields["interaction_type"] = fields.pop("type")
    return fields, list(fields.pop("allowed_callback_hosts", []))


def _bad_inputs() -> list[Any]:
    cases = []
    for case in CASES:
        kwargs, _, error = case.values
        converted = _operator_fields(kwargs)
        if error is None or converted is None:
            continue
        fields, hosts = converted
        cases.append(pytest.param(fields, hosts, None, error[0], id=case.id))
    base = {"username": "nasa", "interaction_type": "followers"}
    cases += [pytest.param(base, [], host, "host", id=id_) for id_, host in CREDENTIAL_BASE_URLS.items()]
    return cases


BAD_INPUTS = _bad_inputs()
SECRET_PARTS = ("hunter2", "KEYPART", "SECRETPART")


def _connection(sim: NyneSimulator, hosts: list[str], base_url: str | None) -> str:
    conn = json.loads(sim.connection_json(extra={"callback_allowed_hosts": hosts} if hosts else None))
    if base_url is not None:
        conn["host"] = base_url.format(host=f"127.0.0.1:{sim.port}")
    return json.dumps(conn)


@pytest.mark.parametrize(("fields", "hosts", "base_url", "field"), BAD_INPUTS)
def test_every_bad_input_is_refused_before_any_request(
    simulator_session: NyneSimulator,
    monkeypatch: pytest.MonkeyPatch,
    fields: dict[str, Any],
    hosts: list[str],
    base_url: str | None,
    field: str,
) -> None:
    set_connection(monkeypatch, "nyne_bad_input", _connection(simulator_session, hosts, base_url))
    op = NyneSubmitInteractionsOperator(task_id="bad", nyne_conn_id="nyne_bad_input", **fields)
    store = DictStore()
    with pytest.raises(AirflowFailException) as info:
        op.execute(try_context(store, 1))
    message = str(info.value)
    assert field in message
    assert not any(part in message for part in SECRET_PARTS), message
    assert simulator_session.ledger.requests() == []
    assert store.data == {}  # no intent either: nothing was about to be sent


def test_the_readme_states_how_many_bad_inputs_are_refused() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    match = re.search(r"\*\*(\d+) bad inputs\*\*", readme)
    assert match is not None, "the README's testing section states the number of bad inputs"
    assert int(match.group(1)) == len(BAD_INPUTS)


def _dag_with_bad_inputs() -> tuple[str, dict[str, str], dict[str, tuple[list[str], str | None]]]:
    """
    A DAG with up to three tasks per field the URL-bearing bad inputs are refused for.

    Every case is refused before any request by
    :func:`test_every_bad_input_is_refused_before_any_request`; the DAG run shows the same
    refusal as a failed task without a retry, for which a few cases per field are proof enough
    (Airflow 3.1's ``dag.test`` spends 1.5 s starting each task: all 69 cases took two minutes).

    Returns its source, the field each task's failure must name, and the connections the
    tasks use (allow-list, Base URL) by connection id.
    """
    tasks, expected, connections = [], {}, {}
    per_field: dict[str, int] = {}
    for case in BAD_INPUTS:
        fields, hosts, base_url, field = case.values
        urls = [fields.get(k) for k in ("social_media_url", "twitter_url", "callback_url")]
        if base_url is None and not any(isinstance(u, str) for u in urls):
            continue
        if per_field.get(field, 0) == 3:
            continue
        per_field[field] = per_field.get(field, 0) + 1
        task_id = re.sub(r"[^A-Za-z0-9_]", "_", case.id)
        conn_id = f"nyne_case_{task_id}" if hosts or base_url else "nyne_default"
        if conn_id != "nyne_default":
            connections[conn_id] = (hosts, base_url)
        tasks.append(
            f"    NyneSubmitInteractionsOperator(task_id={task_id!r}, nyne_conn_id={conn_id!r}, "
            f"**{fields!r}, **CALLBACKS)"
        )
        expected[task_id] = field
    source = (
        DAG_HEADER
        + """
with DAG("nyne_bad_urls", schedule=None, start_date=START, catchup=False,
         default_args={"retries": 1, "retry_delay": datetime.timedelta(0)}) as dag:
"""
        + "\n".join(tasks)
        + "\n"
    )
    return source, expected, connections


def test_bad_urls_fail_their_tasks_in_a_dag_run_without_any_request(
    simulator_connection: NyneSimulator, load_dag: Any, failures: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = simulator_connection
    source, expected, connections = _dag_with_bad_inputs()
    for conn_id, (hosts, base_url) in connections.items():
        set_connection(monkeypatch, conn_id, _connection(sim, hosts, base_url))
    assert set(expected.values()) >= {"social_media_url", "callback_url", "host"}

    run = load_dag(source, "nyne_bad_urls").test()

    states = task_instances(run)
    seen = failures()
    for task_id, field in expected.items():
        assert states[task_id] == ("failed", 1), (task_id, states[task_id])  # no retry burned
        [record] = seen[task_id]
        assert_failure(record, field, type_name="AirflowFailException")
    assert not any(part in json.dumps(seen) for part in SECRET_PARTS)
    assert sim.ledger.requests() == []
