"""Writing to S3: a real S3 API on loopback (moto server) reached through s3fs and an Airflow connection."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pyarrow.parquet as pq
import pytest
from airflow.sdk import ObjectStoragePath
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_nyne._compat import AirflowFailException
from airflow_provider_nyne.client.models import JobStatus
from airflow_provider_nyne.transfers import _writers
from airflow_provider_nyne.transfers._writers import (
    DestinationExistsError,
    OutputMeta,
    atomic_writer,
    choose_strategy,
    iter_records,
    write_output,
)
from airflow_provider_nyne.transfers.interactions_to_storage import NyneInteractionsToObjectStorageOperator
from tests.fixtures.s3 import S3Env
from tests.unit.transfers.samples import completed, flat_items

pytestmark = [pytest.mark.integration, pytest.mark.s3]

MIB = 1 << 20


class FakeHook:
    """A hook answering one completed status; counts polls."""

    def __init__(self, status: JobStatus) -> None:
        self.status = status
        self.polls = 0

    def get_interactions_status(self, request_id: str) -> JobStatus:
        self.polls += 1
        return self.status


def make_op(url: str, status: JobStatus, **kwargs: Any) -> NyneInteractionsToObjectStorageOperator:
    op = NyneInteractionsToObjectStorageOperator(
        task_id="land", request_id=status.request_id, path=url, **kwargs
    )
    op.__dict__["hook"] = FakeHook(status)
    return op


def big_status(n: int = 400) -> JobStatus:
    """A result big enough to flush several buffers."""
    items = [{"username": f"user{i}", "bio": "x" * 2000, "followers_count": i} for i in range(n)]
    return completed(items, request_id="req-big")


class Boom(RuntimeError):
    pass


def failing_after(n: int) -> Any:
    real = _writers.iter_records

    def records(meta: OutputMeta, result: Any) -> Iterator[dict[str, Any]]:
        for i, record in enumerate(real(meta, result)):
            if i == n:
                raise Boom(f"failed after {n} records")
            yield record

    return records


def test_connection_reaches_the_local_server(s3: S3Env) -> None:
    path = ObjectStoragePath(s3.url("probe.txt"))
    assert choose_strategy(path.fs) == "s3"
    assert not path.exists()


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_object_lands_whole(s3: S3Env, fmt: str) -> None:
    key = f"nyne/2025-01-02/out.{fmt}"
    op = make_op(s3.url(key), completed(flat_items()), format=fmt)
    ctx = {"outlet_events": OutletEventAccessors()}
    summary = op.execute(ctx)

    assert summary == {"uri": s3.url(key), "records": 3, "format": fmt, "request_id": "req-1"}
    assert s3.keys() == [key]
    assert s3.uploads() == []
    data = s3.get(key)
    if fmt == "jsonl":
        usernames = [json.loads(line)["username"] for line in data.decode().splitlines()]
    elif fmt == "json":
        usernames = [r["username"] for r in json.loads(data)["interactions"]]
    elif fmt == "csv":
        usernames = [line.split(",")[5] for line in data.decode().split("\r\n")[1:] if line]
    else:
        usernames = pq.read_table(io.BytesIO(data)).column("username").to_pylist()
    assert usernames == ["alice", "bob", "carol"]
    # The asset is the bucket/key, without the connection id.
    from airflow.sdk import Asset

    assert op.outlets == [Asset(uri=f"s3://{s3.bucket}/{key}")]
    assert ctx["outlet_events"][Asset(uri=f"s3://{s3.bucket}/{key}")].extra["records"] == 3


def test_storage_conn_id_parameter(s3: S3Env) -> None:
    key = "by-param/out.jsonl"
    op = make_op(f"s3://{s3.bucket}/{key}", completed(flat_items()), conn_id=s3.conn_id)
    assert op.execute({"outlet_events": OutletEventAccessors()})["uri"] == s3.url(key)
    assert s3.keys() == [key]


@pytest.mark.parametrize("after", [0, 2, 300], ids=["before-first-record", "midway", "late"])
def test_failure_midway_leaves_no_object(s3: S3Env, monkeypatch: pytest.MonkeyPatch, after: int) -> None:
    monkeypatch.setattr(_writers, "iter_records", failing_after(after))
    op = make_op(s3.url("nyne/out.jsonl"), big_status())
    with pytest.raises(Boom):
        op.execute({"outlet_events": OutletEventAccessors()})
    assert s3.keys() == []
    assert s3.uploads() == []


def test_multipart_upload_is_invisible_until_committed_and_aborted_on_failure(s3: S3Env) -> None:
    path = ObjectStoragePath(s3.url("big/out.bin"))
    seen: dict[str, list[str]] = {}

    def write_then_fail() -> None:
        with atomic_writer(path.fs, path.path, block_size=5 * MIB) as sink:
            sink.write(b"a" * (6 * MIB))  # over the part size: a multipart upload starts
            seen.update(uploads=s3.uploads(), keys=s3.keys())
            raise Boom("midway")

    with pytest.raises(Boom):
        write_then_fail()
    assert seen == {"uploads": ["big/out.bin"], "keys": []}, "parts uploaded, but no object before completion"
    assert s3.keys() == []
    assert s3.uploads() == [], "the multipart upload was aborted"


def test_multipart_upload_commits_at_the_end(s3: S3Env) -> None:
    path = ObjectStoragePath(s3.url("big/out.bin"))
    with atomic_writer(path.fs, path.path, block_size=5 * MIB) as sink:
        sink.write(b"a" * (6 * MIB))
        sink.write(b"b" * 10)
        assert s3.keys() == []
    assert s3.keys() == ["big/out.bin"]
    assert s3.uploads() == []
    assert s3.get("big/out.bin") == b"a" * (6 * MIB) + b"b" * 10


def test_overwrite_refused_by_default(s3: S3Env) -> None:
    key = "nyne/out.jsonl"
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b'{"request_id": "other"}\n')
    op = make_op(s3.url(key), completed(flat_items()))
    with pytest.raises(AirflowFailException) as info:
        op.execute({"outlet_events": OutletEventAccessors()})
    assert s3.url(key) in str(info.value)
    assert "overwrite=True" in str(info.value)
    assert s3.get(key) == b'{"request_id": "other"}\n'


def test_overwrite_true_replaces(s3: S3Env) -> None:
    key = "nyne/out.jsonl"
    s3.client.put_object(Bucket=s3.bucket, Key=key, Body=b"old\n")
    make_op(s3.url(key), completed(flat_items()), overwrite=True).execute(
        {"outlet_events": OutletEventAccessors()}
    )
    assert len(s3.get(key).decode().splitlines()) == 3


def test_conditional_write_loses_to_a_concurrent_writer(s3: S3Env) -> None:
    path = ObjectStoragePath(s3.url("race/out.jsonl"))

    def write_while_someone_else_commits() -> None:
        with atomic_writer(path.fs, path.path) as sink:
            sink.write(b"mine\n")
            s3.client.put_object(Bucket=s3.bucket, Key="race/out.jsonl", Body=b"theirs\n")

    with pytest.raises(DestinationExistsError):
        write_while_someone_else_commits()
    assert s3.get("race/out.jsonl") == b"theirs\n"
    assert s3.uploads() == []


def test_retry_finds_its_output_and_does_not_rewrite(s3: S3Env, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "nyne/out.parquet"
    first = make_op(s3.url(key), completed(flat_items()), format="parquet").execute(
        {"outlet_events": OutletEventAccessors()}
    )
    etag = s3.client.head_object(Bucket=s3.bucket, Key=key)["ETag"]

    def no_write(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the retry must not write again")

    monkeypatch.setattr(_writers, "atomic_writer", no_write)
    retry = make_op(s3.url(key), completed(flat_items()), format="parquet")
    assert retry.execute({"outlet_events": OutletEventAccessors()}) == first
    assert retry.hook.polls == 0  # type: ignore[attr-defined]
    assert s3.client.head_object(Bucket=s3.bucket, Key=key)["ETag"] == etag


def test_temp_and_move_strategy_on_s3(s3: S3Env) -> None:
    """The generic strategy (for stores without a verified direct commit) also works on S3."""
    path = ObjectStoragePath(s3.url("generic/out.jsonl"))
    status = completed(flat_items())
    assert status.result is not None
    meta = OutputMeta.from_result("req-1", status.result, fetched_at=datetime.now(timezone.utc))
    with atomic_writer(path.fs, path.path, strategy="temp_move") as sink:
        write_output("jsonl", meta, iter_records(meta, status.result), sink)
    assert s3.keys() == ["generic/out.jsonl"]

    def write_then_fail() -> None:
        with atomic_writer(path.fs, f"{s3.bucket}/generic/other.jsonl", strategy="temp_move") as sink:
            sink.write(b"partial")
            raise Boom("midway")

    with pytest.raises(Boom):
        write_then_fail()
    assert s3.keys() == ["generic/out.jsonl"], "no object and no temporary key left"
    assert s3.uploads() == []
