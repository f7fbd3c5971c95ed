"""The provider on the reference topology: PostgreSQL, CeleryExecutor with Redis, two of everything.

One deployment serves the module (``production_deployment`` in
:mod:`tests.fixtures.airflow_processes`): two Celery workers, a scheduler, two triggerers
(capacity 60 each), two api-servers and a dag-processor, with the simulator in this process.
Each scenario is a module fixture that runs once and returns what it saw; the tests assert on
it, always against the simulator's ledger (what was submitted, polled, charged, delivered):

* ``fan_out``: ``prod_fan_out`` maps 100 lookups that wait in the triggerer. The simulator
  holds them until every wait is in a triggerer, then they are released: each lookup is
  submitted once, neither triggerer holds more than its capacity, both carry waits.
* ``triggerer_takeover``: ten waits over both triggerers; the one holding more is SIGKILLed
  and the other takes its waits over without a restart (no task retried, nothing resubmitted).
* ``worker_takeover``: a lookup that waits in its worker (``deferrable=False``,
  ``retries=1``); that worker is SIGKILLed; Airflow notices the silent task, the retry runs on
  the other worker and reconnects to the same request.
* ``rate_limited_fan_out``: the fan-out example mapped over 200 profiles while the account
  allows 20 requests a "minute" (the simulator's windows run 20x faster): every lookup
  succeeds on its first try, each is submitted once and charged once, whatever the 429s.
* ``callbacks``: every callback reaches both api-servers twice at the same moment (the
  :class:`~tests.fixtures.airflow_processes.CallbackFanOut` in front of them), and is then
  delivered three times more: each deferred task resumes once, each asset-mode request
  records one Asset event and starts one downstream run.

Then ``pg_dump`` and every log are searched for the API key and secret, the callback signing
secret and the callback tokens. Each scenario prints its wall time and counts.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.airflow_processes import (
    RATE_LIMIT_TIME_SCALE,
    TRIGGERER_CAPACITY,
    AirflowProcesses,
    ProductionDeployment,
)

pytestmark = [pytest.mark.e2e, pytest.mark.production, pytest.mark.timeout(600)]

FAN_OUT = 100
#: Profiles of the rate-limited run of the fan-out example, and the account's limit meanwhile.
PROFILES = 200
TIGHT_PER_MINUTE = 20
TAKEOVER = 10
CALLBACK_DEFERRED = [f"holdcb{n}" for n in range(4)]
CALLBACK_ASSET_MODE = ["cbasset_a", "cbasset_b"]
#: Deliveries of each callback after the simulator's own (each reaching both api-servers twice).
REDELIVERIES = 3


@dataclass
class Scenario:
    """What one scenario saw: its run, wall time, and the facts the tests check."""

    run_id: str
    seconds: float
    facts: dict[str, Any] = field(default_factory=dict)


def _say(request: pytest.FixtureRequest, line: str) -> None:
    """Show a measurement in the test output, also without ``-s``."""
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n[production] {line}", flush=True)


def _submissions(deployment: ProductionDeployment, prefix: str) -> dict[str, list[str]]:
    """Request ids the simulator accepted, by username, for usernames starting with ``prefix``."""
    found: dict[str, list[str]] = {}
    for submission in deployment.sim.ledger.submissions():
        username = str(submission.request.get("username") or "")
        if username.startswith(prefix):
            found.setdefault(username, []).append(submission.request_id)
    return found


def _task_rows(af: AirflowProcesses, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """Every task instance of a run (mapped ones included), with its trigger's triggerer."""
    cols = ("task_id", "map_index", "state", "try_number", "pid", "trigger_id", "triggerer_id")
    rows = af.query(
        "SELECT ti.task_id, ti.map_index, ti.state, ti.try_number, ti.pid, ti.trigger_id, t.triggerer_id "
        "FROM task_instance ti LEFT JOIN trigger t ON t.id = ti.trigger_id "
        "WHERE ti.dag_id = ? AND ti.run_id = ? ORDER BY ti.task_id, ti.map_index",
        (dag_id, run_id),
    )
    return [dict(zip(cols, row, strict=True)) for row in rows]


def _waiting_in(af: AirflowProcesses, dag_id: str, run_id: str, count: int) -> Callable[[], dict[int, int]]:
    """A predicate: triggerer job id -> waits it holds, once all ``count`` waits are held."""

    def held() -> dict[int, int]:
        rows = _task_rows(af, dag_id, run_id)
        failed = [r for r in rows if r["state"] in ("failed", "up_for_retry", "upstream_failed")]
        if failed:
            raise AssertionError(f"tasks failed instead of waiting: {failed[:3]}\n{af.diagnostics()}")
        holders = Counter(r["triggerer_id"] for r in rows if r["state"] == "deferred" and r["triggerer_id"])
        return dict(holders) if sum(holders.values()) == count else {}

    return held


def _task_log_dir(af: AirflowProcesses, dag_id: str, run_id: str, task_id: str, map_index: int) -> Path:
    base = af.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
    return base / f"map_index={map_index}" if map_index >= 0 else base


def _trigger_log_owners(af: AirflowProcesses, log_dir: Path) -> set[str]:
    """Which triggerers wrote a trigger log for the first try (``attempt=1.log.trigger.<job id>.log``)."""
    owners = set()
    for path in log_dir.glob("attempt=1.log.trigger.*.log"):
        owners.add(af.job_owner(int(path.name.rsplit(".", 2)[-2])) or f"unknown job {path.name}")
    return owners


def _executions(log_dir: Path, attempt: int = 1) -> int:
    """How many times a worker ran the try (first start plus every resume), from its task log."""
    path = log_dir / f"attempt={attempt}.log"
    return sum(1 for line in path.read_text().splitlines() if "Worker startup parse complete" in line)


def _release(deployment: ProductionDeployment, request_ids: list[str]) -> None:
    for request_id in request_ids:
        assert deployment.sim.release(request_id) == [request_id], f"{request_id} was not held"


# ----------------------------------------------------------------------------- scenarios


@pytest.fixture(scope="module")
def fan_out(production_deployment: ProductionDeployment, request: pytest.FixtureRequest) -> Scenario:
    """100 mapped lookups, all waiting in the triggerers at once, then released."""
    deployment, af = production_deployment, production_deployment.af
    af.wait_for_dag("prod_fan_out")
    started = time.monotonic()
    run_id = af.trigger_dag("prod_fan_out")
    holders = af.wait_until(
        _waiting_in(af, "prod_fan_out", run_id, FAN_OUT),
        timeout=300,
        what=f"all {FAN_OUT} waits to be held by a triggerer",
    )
    submitted = _submissions(deployment, "holdfan")
    _release(deployment, [rid for rids in submitted.values() for rid in rids])
    state = af.wait_for_run("prod_fan_out", run_id, timeout=300)
    seconds = time.monotonic() - started
    rows = _task_rows(af, "prod_fan_out", run_id)
    owners = {
        r["map_index"]: _trigger_log_owners(
            af, _task_log_dir(af, "prod_fan_out", run_id, "lookup", r["map_index"])
        )
        for r in rows
    }
    submitted = _submissions(deployment, "holdfan")
    _say(
        request,
        f"fan-out: {FAN_OUT} lookups, {sum(map(len, submitted.values()))} submissions, "
        f"waits held per triggerer {sorted(holders.values())}, run {state} in {seconds:.1f} s",
    )
    return Scenario(
        run_id,
        seconds,
        {"state": state, "rows": rows, "holders": holders, "submitted": submitted, "log_owners": owners},
    )


@pytest.fixture(scope="module")
def triggerer_takeover(
    production_deployment: ProductionDeployment, request: pytest.FixtureRequest
) -> Scenario:
    """Ten waits over both triggerers; the one holding more is SIGKILLed and not restarted."""
    deployment, af = production_deployment, production_deployment.af
    dag_id, prefix = "prod_triggerer_takeover", "holdtko"
    af.wait_for_dag(dag_id)
    started = time.monotonic()
    run_id = af.trigger_dag(dag_id)
    holders = af.wait_until(
        _waiting_in(af, dag_id, run_id, TAKEOVER), timeout=180, what="all waits to be held by a triggerer"
    )
    victim_job = max(holders, key=lambda job: holders[job])
    victim = af.job_owner(victim_job)
    assert victim is not None, f"triggerer job {victim_job} is none of ours"
    [survivor] = [name for name in af.names("triggerer") if name != victim]
    survivor_job = af.job_id(survivor)
    submitted = _submissions(deployment, prefix)
    by_index = {int(username.removeprefix(prefix)): rids[0] for username, rids in submitted.items()}
    moved = [r["map_index"] for r in _task_rows(af, dag_id, run_id) if r["triggerer_id"] == victim_job]
    victims = [by_index[map_index] for map_index in moved]

    def victim_is_polling() -> bool:
        # The worker polled once before deferring; a second poll and a trigger log are the victim's.
        return all(deployment.sim.ledger.poll_count(rid) >= 2 for rid in victims) and all(
            victim in _trigger_log_owners(af, _task_log_dir(af, dag_id, run_id, "lookup", i)) for i in moved
        )

    af.wait_until(victim_is_polling, timeout=60, what=f"{victim} to poll the waits it holds")
    try:
        af.kill(victim)  # SIGKILL of the whole process tree: a crash, no clean-up
        killed_at = time.monotonic()
        polls_before = {rid: deployment.sim.ledger.poll_count(rid) for rid in victims}
        af.wait_until(
            lambda: _waiting_in(af, dag_id, run_id, TAKEOVER)() == {survivor_job: TAKEOVER},
            timeout=120,
            what=f"{survivor} to hold every wait",
        )
        taken_over_after = time.monotonic() - killed_at
        af.wait_until(
            lambda: all(deployment.sim.ledger.poll_count(rid) > polls_before[rid] for rid in victims),
            timeout=60,
            what=f"{survivor} to poll the waits it took over",
        )
        rows_before_release = _task_rows(af, dag_id, run_id)
        _release(deployment, list(by_index.values()))
        state = af.wait_for_run(dag_id, run_id, timeout=180)
    finally:
        af.start(victim)  # the topology is whole again for the next scenario
    seconds = time.monotonic() - started
    rows = _task_rows(af, dag_id, run_id)
    owners = {
        r["map_index"]: _trigger_log_owners(af, _task_log_dir(af, dag_id, run_id, "lookup", r["map_index"]))
        for r in rows
    }
    _say(
        request,
        f"triggerer crash: {len(victims)} of {TAKEOVER} waits moved from {victim} to {survivor} "
        f"{taken_over_after:.1f} s after SIGKILL; run {state} in {seconds:.1f} s",
    )
    return Scenario(
        run_id,
        seconds,
        {
            "state": state,
            "victim": victim,
            "survivor": survivor,
            "victims": victims,
            "by_index": by_index,
            "rows_before_release": rows_before_release,
            "rows": rows,
            "submitted": _submissions(deployment, prefix),
            "log_owners": owners,
        },
    )


@pytest.fixture(scope="module")
def worker_takeover(production_deployment: ProductionDeployment, request: pytest.FixtureRequest) -> Scenario:
    """A lookup waiting in its worker; the worker is SIGKILLed; the retry runs on the other one."""
    deployment, af = production_deployment, production_deployment.af
    dag_id, username = "prod_worker_crash", "holdworker"
    af.wait_for_dag(dag_id)
    started = time.monotonic()
    run_id = af.trigger_dag(dag_id)
    [request_id] = af.wait_until(
        lambda: _submissions(deployment, username).get(username), timeout=180, what="the submission"
    )
    af.wait_until(
        lambda: deployment.sim.ledger.poll_count(request_id) >= 1, timeout=60, what="the worker to poll"
    )

    def running_on() -> str | None:
        [row] = _task_rows(af, dag_id, run_id)
        return af.pid_owner(row["pid"]) if row["state"] == "running" and row["pid"] else None

    victim = af.wait_until(running_on, timeout=60, what="the task's process in a worker")
    assert victim in af.names("celery-worker"), f"the task runs under {victim}, not a worker"
    [survivor] = [name for name in af.names("celery-worker") if name != victim]
    try:
        af.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        polls_before = deployment.sim.ledger.poll_count(request_id)

        def retried_on() -> str | None:
            [row] = _task_rows(af, dag_id, run_id)
            return running_on() if row["try_number"] == 2 else None

        retry_worker = af.wait_until(retried_on, timeout=180, what="the retry to run in a worker")
        retried_after = time.monotonic() - killed_at
        af.wait_until(
            lambda: deployment.sim.ledger.poll_count(request_id) > polls_before,
            timeout=60,
            what="the retry to poll the request",
        )
        _release(deployment, [request_id])
        state = af.wait_for_run(dag_id, run_id, timeout=120)
    finally:
        af.start(victim)
    seconds = time.monotonic() - started
    history = af.query(
        "SELECT try_number, state FROM task_instance_history WHERE dag_id = ? AND run_id = ? ORDER BY try_number",
        (dag_id, run_id),
    )
    _say(
        request,
        f"worker crash: retry on {retry_worker} {retried_after:.1f} s after SIGKILL of {victim}; "
        f"{len(_submissions(deployment, username)[username])} submission; run {state} in {seconds:.1f} s",
    )
    return Scenario(
        run_id,
        seconds,
        {
            "state": state,
            "request_id": request_id,
            "victim": victim,
            "survivor": survivor,
            "retry_worker": retry_worker,
            "rows": _task_rows(af, dag_id, run_id),
            "history": history,
            "submitted": _submissions(deployment, username),
        },
    )


@pytest.fixture(scope="module")
def rate_limited_fan_out(
    production_deployment: ProductionDeployment, request: pytest.FixtureRequest
) -> Scenario:
    """The fan-out example over 200 profiles while the account allows 20 requests a (scaled) minute."""
    deployment, af, sim = production_deployment, production_deployment.af, production_deployment.sim
    dag_id = "example_nyne_fan_out"
    af.wait_for_dag(dag_id)
    profiles = [f"https://x.com/ratefan{n:03d}" for n in range(PROFILES)]
    sim.configure(rate_limit_per_minute=TIGHT_PER_MINUTE)
    try:
        before = sim.ledger.status_counts()
        started = time.monotonic()
        run_id = af.trigger_dag(dag_id, conf={"profiles": profiles, "max_results": 10})
        state = af.wait_for_run(dag_id, run_id, timeout=600)
        seconds = time.monotonic() - started
        after = sim.ledger.status_counts()
        rejected = after.get(429, 0) - before.get(429, 0)
        requests = sum(after.values()) - sum(before.values())
    finally:
        sim.configure(rate_limit_per_minute=100_000)
    rows = _task_rows(af, dag_id, run_id)
    submitted = _submissions(deployment, "ratefan")
    floor = (2 * PROFILES / TIGHT_PER_MINUTE) * 60 * RATE_LIMIT_TIME_SCALE
    _say(
        request,
        f"rate-limited fan-out: {PROFILES} profiles at {TIGHT_PER_MINUTE}/scaled minute, "
        f"{sum(map(len, submitted.values()))} submissions, {rejected} answers 429 of {requests} "
        f"requests, run {state} in {seconds:.1f} s (the limit alone allows it in {floor:.0f} s)",
    )
    return Scenario(
        run_id,
        seconds,
        {"state": state, "rows": rows, "submitted": submitted, "rejected": rejected, "requests": requests},
    )


def _consumer_runs(af: AirflowProcesses, username: str) -> list[tuple[Any, ...]]:
    return af.query(
        "SELECT run_id, state FROM dag_run WHERE dag_id = ? AND run_type = 'asset_triggered'",
        (f"prod_callback_consumer_{username}",),
    )


def _asset_events(af: AirflowProcesses, username: str) -> list[dict[str, Any]]:
    rows = af.query(
        "SELECT e.extra FROM asset_event e JOIN asset a ON a.id = e.asset_id WHERE a.uri = ?",
        (f"nyne://interactions/twitter/{username}/followers",),
    )
    return [extra if isinstance(extra, dict) else json.loads(extra) for (extra,) in rows]


@pytest.fixture(scope="module")
def callbacks(production_deployment: ProductionDeployment, request: pytest.FixtureRequest) -> Scenario:
    """Deferred and asset-mode callbacks, each delivered to both api-servers at once, again and again."""
    deployment, af, sim = production_deployment, production_deployment.af, production_deployment.sim
    consumers = [f"prod_callback_consumer_{u}" for u in CALLBACK_ASSET_MODE]
    for dag_id in ("prod_callback_deferred", "prod_callback_producer", *consumers):
        af.wait_for_dag(dag_id)
    started = time.monotonic()
    deferred_run = af.trigger_dag("prod_callback_deferred")
    producer_run = af.trigger_dag("prod_callback_producer")

    def all_deferred() -> bool:
        rows = _task_rows(af, "prod_callback_deferred", deferred_run)
        return len(rows) == len(CALLBACK_DEFERRED) and all(r["state"] == "deferred" for r in rows)

    af.wait_until(all_deferred, timeout=180, what="the callback-mode tasks to defer")
    deferred_ids = {u: rids[0] for u, rids in _submissions(deployment, "holdcb").items()}
    # Released: the simulator delivers each callback through the fan-out, to both api-servers.
    _release(deployment, list(deferred_ids.values()))
    deferred_state = af.wait_for_run("prod_callback_deferred", deferred_run, timeout=180)
    producer_state = af.wait_for_run("prod_callback_producer", producer_run, timeout=180)
    for username in CALLBACK_ASSET_MODE:
        af.wait_until(
            lambda u=username: [r for r in _consumer_runs(af, u) if r[1] in ("success", "failed")],
            timeout=180,
            what=f"the consumer of {username} to finish",
        )
    asset_ids = {u: rids[0] for u, rids in _submissions(deployment, "cbasset_").items()}

    # Nyne delivers every callback again (as after lost acknowledgements), each time to both
    # api-servers twice at once; the receiver answers after its commit, so what a repeat
    # would dispatch is visible as soon as the answers are in.
    redelivered: dict[str, list[int]] = {}
    for request_id in [*deferred_ids.values(), *asset_ids.values()]:
        [submission] = [s for s in sim.ledger.submissions() if s.request_id == request_id]
        body = {"success": True, "data": sim.job(request_id)}
        redelivered[request_id] = [
            httpx.post(submission.request["callback_url"], json=body, timeout=60).status_code
            for _ in range(REDELIVERIES)
        ]
    seconds = time.monotonic() - started

    deferred_rows = _task_rows(af, "prod_callback_deferred", deferred_run)
    resumes = {
        r["map_index"]: _executions(
            _task_log_dir(af, "prod_callback_deferred", deferred_run, "submit", r["map_index"])
        )
        - 1
        for r in deferred_rows
    }
    events = {u: _asset_events(af, u) for u in CALLBACK_ASSET_MODE}
    consumer_runs = {u: _consumer_runs(af, u) for u in CALLBACK_ASSET_MODE}
    duplicates = sum(n - 1 for n in resumes.values()) + sum(len(e) - 1 for e in events.values())
    deliveries = [e for e in deployment.callbacks.exchanges if "/nyne/v1/callback/" in e.path]
    answers = Counter(status for e in deliveries for status in e.statuses)
    _say(
        request,
        f"callbacks: {len(deferred_ids) + len(asset_ids)} requests, {len(deliveries)} deliveries, "
        f"{sum(answers.values())} receiver answers {dict(answers)}, duplicates dispatched {duplicates}; "
        f"{seconds:.1f} s",
    )
    return Scenario(
        deferred_run,
        seconds,
        {
            "deferred_state": deferred_state,
            "producer_state": producer_state,
            "deferred_ids": deferred_ids,
            "asset_ids": asset_ids,
            "deferred_rows": deferred_rows,
            "resumes": resumes,
            "events": events,
            "consumer_runs": consumer_runs,
            "redelivered": redelivered,
            "deliveries": deliveries,
            "duplicates": duplicates,
        },
    )


# ----------------------------------------------------------------------------- tests


def test_fan_out_of_100_lookups_pays_once_each_and_both_triggerers_carry_waits(
    production_deployment: ProductionDeployment, fan_out: Scenario
) -> None:
    af, facts = production_deployment.af, fan_out.facts
    states = Counter(r["state"] for r in facts["rows"])
    assert facts["state"] == "success", f"{states}\n{af.diagnostics()}"
    assert states == {"success": FAN_OUT}
    assert {r["try_number"] for r in facts["rows"]} == {1}

    submitted = facts["submitted"]
    assert sorted(submitted) == [f"holdfan{n:03d}" for n in range(FAN_OUT)]
    assert all(len(rids) == 1 for rids in submitted.values()), "a lookup was submitted twice"
    request_ids = {rids[0] for rids in submitted.values()}
    charged = Counter(
        c.request_id for c in production_deployment.sim.ledger.charges() if c.request_id in request_ids
    )
    assert charged == dict.fromkeys(request_ids, 1), "each lookup is charged exactly once"

    # All 100 waits were held at one moment; capacity 60 each: both triggerers had to carry some.
    holders = {af.job_owner(job): count for job, count in facts["holders"].items()}
    assert set(holders) == set(af.names("triggerer")), holders
    assert sum(holders.values()) == FAN_OUT
    assert max(holders.values()) <= TRIGGERER_CAPACITY
    # And each triggerer logged the waits it ran.
    owners = facts["log_owners"]
    assert all(owners.values()), "a wait left no trigger log"
    assert set().union(*owners.values()) == set(af.names("triggerer"))


def test_killed_triggerer_waits_are_taken_over_by_the_other_without_resubmitting(
    production_deployment: ProductionDeployment, triggerer_takeover: Scenario
) -> None:
    af, facts = production_deployment.af, triggerer_takeover.facts
    assert facts["state"] == "success", af.diagnostics()
    assert facts["victims"], "the killed triggerer held no wait"
    # Still the first try, still deferred, when the survivor held them all: resumed, not retried.
    assert {(r["state"], r["try_number"]) for r in facts["rows_before_release"]} == {("deferred", 1)}
    assert {(r["state"], r["try_number"]) for r in facts["rows"]} == {("success", 1)}
    assert sorted(facts["submitted"]) == [f"holdtko{n:03d}" for n in range(TAKEOVER)]
    assert all(len(rids) == 1 for rids in facts["submitted"].values()), "a lookup was submitted twice"
    moved = [i for i, rid in facts["by_index"].items() if rid in facts["victims"]]
    for map_index in moved:  # both triggerers logged each wait that moved
        assert facts["log_owners"][map_index] == {facts["victim"], facts["survivor"]}, map_index


def test_killed_celery_worker_task_is_retried_on_the_other_worker_and_reconnects(
    production_deployment: ProductionDeployment, worker_takeover: Scenario
) -> None:
    af, facts = production_deployment.af, worker_takeover.facts
    [row] = facts["rows"]
    assert facts["state"] == "success", af.diagnostics()
    assert (row["state"], row["try_number"]) == ("success", 2)
    assert facts["history"] == [(1, "failed")], "the first try was failed for its lost heartbeat"
    assert facts["retry_worker"] == facts["survivor"] != facts["victim"]
    assert facts["submitted"] == {"holdworker": [facts["request_id"]]}, "the retry submitted again"
    charges = [c for c in production_deployment.sim.ledger.charges() if c.request_id == facts["request_id"]]
    assert len(charges) == 1


def test_callbacks_to_both_api_servers_dispatch_exactly_once(
    production_deployment: ProductionDeployment, callbacks: Scenario
) -> None:
    af, sim, facts = production_deployment.af, production_deployment.sim, callbacks.facts
    assert (facts["deferred_state"], facts["producer_state"]) == ("success", "success"), af.diagnostics()
    request_ids = [*facts["deferred_ids"].values(), *facts["asset_ids"].values()]
    assert sorted(facts["deferred_ids"]) == sorted(CALLBACK_DEFERRED)
    assert sorted(facts["asset_ids"]) == sorted(CALLBACK_ASSET_MODE)

    for request_id in request_ids:
        attempts = sim.ledger.callback_attempts(request_id)
        assert [a.status_code for a in attempts] == [200], "the simulator's delivery was acknowledged"
        assert facts["redelivered"][request_id] == [200] * REDELIVERIES
        assert sim.ledger.poll_count(request_id) == 0, "callback mode never asks the API"
    # Every delivery reached both api-servers twice at once.
    upstreams = len(production_deployment.callbacks.upstreams) * production_deployment.callbacks.copies
    assert len(facts["deliveries"]) == len(request_ids) * (1 + REDELIVERIES)
    assert {len(e.statuses) for e in facts["deliveries"]} == {upstreams} == {4}
    assert all(any(200 <= s < 300 for s in e.statuses) for e in facts["deliveries"])

    # Deferred mode: each task resumed exactly once, and is still done after the repeats.
    assert {(r["state"], r["try_number"]) for r in facts["deferred_rows"]} == {("success", 1)}
    assert facts["resumes"] == dict.fromkeys(range(len(CALLBACK_DEFERRED)), 1)
    # Asset mode: one event and one downstream run per request, which landed that request.
    for username, request_id in facts["asset_ids"].items():
        assert [e["request_id"] for e in facts["events"][username]] == [request_id]
        [(consumer_run, consumer_state)] = facts["consumer_runs"][username]
        assert consumer_state == "success", af.diagnostics()
        landed = (af.home / "output" / username / f"{consumer_run}.jsonl").read_text().splitlines()
        assert landed
        assert {json.loads(line)["request_id"] for line in landed} == {request_id}
    assert facts["duplicates"] == 0


def test_the_fan_out_example_under_a_tight_limit_succeeds_first_try_paying_once_each(
    production_deployment: ProductionDeployment, rate_limited_fan_out: Scenario
) -> None:
    af, sim, facts = production_deployment.af, production_deployment.sim, rate_limited_fan_out.facts
    assert facts["state"] == "success", af.diagnostics()
    mapped = [r for r in facts["rows"] if r["task_id"] in ("lookup", "land")]
    assert Counter(r["task_id"] for r in mapped) == {"lookup": PROFILES, "land": PROFILES}
    # No lookup used a retry: rate limits are waited out, never failed on.
    assert {(r["state"], r["try_number"]) for r in mapped} == {("success", 1)}
    submitted = facts["submitted"]
    assert sorted(submitted) == [f"ratefan{n:03d}" for n in range(PROFILES)]
    assert all(len(rids) == 1 for rids in submitted.values()), "a lookup was submitted twice"
    request_ids = {rids[0] for rids in submitted.values()}
    charges = [c for c in sim.ledger.charges() if c.request_id in request_ids]
    assert Counter(c.request_id for c in charges) == dict.fromkeys(request_ids, 1)
    assert {c.credits for c in charges} == {3}  # every profile has followers: 3 credits each


def test_secrets_appear_nowhere_in_the_database_dump_or_any_log(
    production_deployment: ProductionDeployment,
    request: pytest.FixtureRequest,
    fan_out: Scenario,
    triggerer_takeover: Scenario,
    worker_takeover: Scenario,
    callbacks: Scenario,
) -> None:
    deployment, af = production_deployment, production_deployment.af
    needles = dict(deployment.secrets())
    for submission in deployment.sim.ledger.submissions():
        url = str(submission.request.get("callback_url") or "")
        if url:
            needles[f"callback token of {submission.request_id}"] = url.rstrip("/").rsplit("/", 1)[1]
    assert len(needles) == 3 + len(CALLBACK_DEFERRED) + len(CALLBACK_ASSET_MODE)

    dump = deployment.postgres.dump()
    for scenario in (fan_out, triggerer_takeover, worker_takeover, callbacks):
        assert scenario.run_id in dump, "the dump holds the runs"
    leaks = [f"pg_dump: {name}" for name, value in needles.items() if value in dump]

    # Every file under AIRFLOW_HOME (process, task, trigger, scheduler and dag-processor logs,
    # configuration, results), and the logs of PostgreSQL and Redis.
    files = [p for p in af.home.rglob("*") if p.is_file()]
    files += [deployment.postgres.log_path, deployment.redis.log_path]
    assert len([p for p in files if "process-logs" in p.parts]) >= 9, "every process's own log is searched"
    assert any(".log.trigger." in p.name for p in files), "trigger logs are searched"
    for path in files:
        text = path.read_bytes()
        leaks += [f"{path}: {name}" for name, value in needles.items() if value.encode() in text]
    _say(request, f"secrets: {len(needles)} searched in pg_dump ({len(dump)} bytes) and {len(files)} files")
    assert leaks == []
