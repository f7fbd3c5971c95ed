"""The transfer operator against the simulator over real sockets, writing to ``file://``."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_nyne._compat import AirflowException, AirflowFailException, AirflowSkipException
from airflow_provider_nyne.client.models import JobState
from airflow_provider_nyne.client.polling import PollSchedule, wait_for_job_sync
from airflow_provider_nyne.hooks.nyne import NyneHook
from airflow_provider_nyne.testing.simulator import NyneSimulator
from airflow_provider_nyne.transfers._writers import META_COLUMNS, RECORD_COLUMNS
from airflow_provider_nyne.transfers.interactions_to_storage import NyneInteractionsToObjectStorageOperator

pytestmark = pytest.mark.integration

TARGET = "https://twitter.com/data_person"


def submit(username: str = "data_person", *, wait: bool = True, **fields: Any) -> str:
    """Submit a followers lookup through the hook and, by default, wait until it is terminal."""
    hook = NyneHook()
    fields.setdefault("social_media_url", f"https://twitter.com/{username}")
    fields.setdefault("type", "followers")
    request_id = hook.submit_interactions(hook.build_request(**fields))
    if wait:
        outcome = wait_for_job_sync(
            hook.client,
            request_id,
            deadline=time.time() + 20,
            schedule=PollSchedule(poll_interval=0.05, max_poll_interval=0.2),
        )
        assert outcome.status in ("success", "failed"), outcome
    return request_id


def run(request_id: str, path: Path | str, **kwargs: Any) -> dict[str, Any]:
    op = NyneInteractionsToObjectStorageOperator(
        task_id="land", request_id=request_id, path=f"file://{path}", **kwargs
    )
    return op.execute({"outlet_events": OutletEventAccessors()})


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def flat(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The columns that must not depend on the item shape or the request."""
    return [{k: v for k, v in r.items() if k not in ("raw", "request_id", "fetched_at")} for r in records]


@pytest.mark.parametrize("shape", ["actor", "string_counts", "string_verified", "results_list", "variant"])
def test_alternate_result_shapes_give_the_same_columns(
    simulator_connection: NyneSimulator, tmp_path: Path, shape: str
) -> None:
    plain_id = submit()
    simulator_connection.faults.result_shape(shape)
    shaped_id = submit()
    run(plain_id, tmp_path / "plain.jsonl")
    run(shaped_id, tmp_path / "shaped.jsonl")

    plain, shaped = jsonl(tmp_path / "plain.jsonl"), jsonl(tmp_path / "shaped.jsonl")
    assert len(plain) >= 10
    assert flat(shaped) == flat(plain)
    assert all(list(r) == list(RECORD_COLUMNS) for r in shaped)
    assert {r["request_id"] for r in shaped} == {shaped_id}
    # ``raw`` is the item exactly as the API sent it, in its own shape.
    status = NyneHook().get_interactions_status(shaped_id)
    result = status.data["result"]
    sent = result.get("interactions") or result.get("results")
    assert [r["raw"] for r in shaped] == sent


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_every_format_holds_every_record(
    simulator_connection: NyneSimulator, tmp_path: Path, fmt: str
) -> None:
    simulator_connection.faults.result_shape("variant")
    request_id = submit()
    dest = tmp_path / f"out.{fmt}"
    summary = run(request_id, dest, format=fmt)

    status = NyneHook().get_interactions_status(request_id)
    assert status.result is not None
    expected = [i.to_record() for i in status.result.interactions]
    data = dest.read_bytes()
    if fmt == "jsonl":
        rows = [json.loads(line) for line in data.decode().splitlines()]
    elif fmt == "json":
        document = json.loads(data)
        assert document["target"]["username"] == "data_person"
        assert document["total_count"] == status.result.total_count
        rows = document["interactions"]
    elif fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
        for row in rows:
            for key in ("followers_count", "following_count"):
                row[key] = int(row[key]) if row[key] else None
            row["verified"] = {"true": True, "false": False, "": None}[row["verified"]]
            for key in (
                "bio",
                "display_name",
                "reply_text",
                "reply_date",
                "relationship_type",
                "profile_url",
            ):
                row[key] = row[key] or None
    else:
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
    assert summary == {
        "uri": f"file://{dest}",
        "records": len(expected),
        "format": fmt,
        "request_id": request_id,
    }
    assert [{k: r[k] for k in expected[0]} for r in rows] == expected
    assert {(r["request_id"], r["platform"], r["interaction_type"], r["target_username"]) for r in rows} == {
        (request_id, "twitter", "followers", "data_person")
    }
    assert all(set(META_COLUMNS) <= set(r) for r in rows)


def test_failed_job_fails_with_the_api_reason(simulator_connection: NyneSimulator, tmp_path: Path) -> None:
    request_id = submit("fail_private")
    with pytest.raises(AirflowFailException, match="Profile is private"):
        run(request_id, tmp_path / "out.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_unknown_request_says_it_expired(simulator_connection: NyneSimulator, tmp_path: Path) -> None:
    with pytest.raises(AirflowFailException, match=r"not found: it expired"):
        run("no-such-request", tmp_path / "out.jsonl")


def test_running_request_without_waiting_fails_clearly(
    simulator_connection: NyneSimulator, tmp_path: Path
) -> None:
    request_id = submit("slow_account", wait=False)
    with pytest.raises(AirflowException, match=r"not completed yet.*wait_for_completion=True") as info:
        run(request_id, tmp_path / "out.jsonl")
    assert not isinstance(info.value, AirflowFailException)
    assert list(tmp_path.iterdir()) == []


def test_waits_in_the_worker_when_not_deferrable(simulator_connection: NyneSimulator, tmp_path: Path) -> None:
    request_id = submit(wait=False)
    assert NyneHook().get_interactions_status(request_id).state is not JobState.COMPLETED
    summary = run(
        request_id,
        tmp_path / "out.jsonl",
        wait_for_completion=True,
        deferrable=False,
        poll_interval=0.05,
        timeout=20,
    )
    assert summary["records"] == len(jsonl(tmp_path / "out.jsonl")) > 0


def test_sync_wait_for_a_failing_job_fails_with_reason(
    simulator_connection: NyneSimulator, tmp_path: Path
) -> None:
    request_id = submit("fail_private", wait=False)
    with pytest.raises(AirflowFailException, match="Profile is private"):
        run(
            request_id, tmp_path / "out.jsonl", wait_for_completion=True, deferrable=False, poll_interval=0.05
        )


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        pytest.param("jsonl", b"", id="jsonl"),
        pytest.param("csv", (",".join(RECORD_COLUMNS) + "\r\n").encode(), id="csv"),
    ],
)
def test_empty_result_writes_header_only(
    simulator_connection: NyneSimulator, tmp_path: Path, fmt: str, expected: bytes
) -> None:
    request_id = submit("empty_account")
    assert run(request_id, tmp_path / f"out.{fmt}", format=fmt)["records"] == 0
    assert (tmp_path / f"out.{fmt}").read_bytes() == expected


def test_empty_result_skipped_when_asked(simulator_connection: NyneSimulator, tmp_path: Path) -> None:
    request_id = submit("empty_account")
    with pytest.raises(AirflowSkipException):
        run(request_id, tmp_path / "out.jsonl", skip_if_empty=True)
    assert list(tmp_path.iterdir()) == []


def test_credentials_never_reach_output_xcom_or_fields(
    simulator_connection: NyneSimulator, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    request_id = submit()
    secrets = (simulator_connection.api_key, simulator_connection.api_secret)
    outputs = []
    for fmt in ("jsonl", "json", "csv", "parquet"):
        op = NyneInteractionsToObjectStorageOperator(
            task_id=f"land_{fmt}", request_id=request_id, path=f"file://{tmp_path}/out.{fmt}", format=fmt
        )
        summary = op.execute({"outlet_events": OutletEventAccessors()})
        outputs += [
            (tmp_path / f"out.{fmt}").read_bytes().decode("latin-1"),
            json.dumps(summary),
            repr(op),
            repr(op.hook),
            *(str(getattr(op, f)) for f in op.template_fields),
        ]
    captured = capfd.readouterr()
    outputs += [captured.out, captured.err]
    for secret in secrets:
        assert secret
        assert not [o for o in outputs if secret in o]
