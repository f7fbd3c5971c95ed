"""Output formats and whole-or-nothing writes (``airflow_provider_nyne/transfers/_writers.py``)."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem

from airflow_provider_nyne.client.models import PROFILE_FIELDS, JobStatus
from airflow_provider_nyne.transfers._writers import (
    RECORD_COLUMNS,
    DestinationExistsError,
    OutputMeta,
    UnreadableOutputError,
    atomic_writer,
    choose_strategy,
    iter_records,
    parquet_schema,
    read_output_marker,
    write_output,
)
from airflow_provider_nyne.utils.arguments import check_format
from tests.unit.transfers.samples import EXPECTED_PROFILES, PEOPLE, completed, flat_items

FETCHED = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=timezone.utc)
FETCHED_ISO = "2025-03-04T05:06:07.890123+00:00"
META_VALUES = {
    "request_id": "req-1",
    "platform": "twitter",
    "interaction_type": "followers",
    "target_username": "target_user",
    "fetched_at": FETCHED_ISO,
}


def _meta(status: JobStatus) -> OutputMeta:
    assert status.result is not None
    return OutputMeta.from_result(status.request_id, status.result, fetched_at=FETCHED)


def _write(fmt: str, status: JobStatus, **options: Any) -> tuple[bytes, int]:
    meta = _meta(status)
    assert status.result is not None
    sink = io.BytesIO()
    count = write_output(fmt, meta, iter_records(meta, status.result), sink, **options)
    assert not sink.closed, "writers must leave the sink open for the atomic writer to commit"
    return sink.getvalue(), count


def _expected_records(status: JobStatus) -> list[dict[str, Any]]:
    raw = status.data["result"]["interactions"]
    return [
        {**META_VALUES, **profile, "raw": item} for profile, item in zip(EXPECTED_PROFILES, raw, strict=True)
    ]


# -- records --------------------------------------------------------------------------------


def test_records_are_identical_across_item_shapes_except_raw(shaped_status: JobStatus) -> None:
    meta = _meta(shaped_status)
    assert shaped_status.result is not None
    records = list(iter_records(meta, shaped_status.result))
    assert [list(r) for r in records] == [list(RECORD_COLUMNS)] * len(PEOPLE)
    assert records == _expected_records(shaped_status)
    # The untouched item, wrapper and strings included, is kept beside the flat columns.
    assert [r["raw"] for r in records] == shaped_status.data["result"]["interactions"]


def test_meta_keeps_unknown_top_level_keys_and_uses_utc() -> None:
    status = completed(flat_items(), cursor="abc", next_page=None)
    assert status.result is not None
    local = datetime(2025, 3, 4, 7, 6, 7, 890123).astimezone()
    meta = OutputMeta.from_result("req-1", status.result, fetched_at=local)
    assert meta.extra == {"cursor": "abc", "next_page": None}
    assert meta.fetched_at.utcoffset() is not None
    assert meta.fetched_at_iso.endswith("+00:00")


def test_results_list_is_read_like_interactions() -> None:
    status = completed(flat_items(), list_key="results")
    meta = _meta(status)
    assert status.result is not None
    usernames = [r["username"] for r in iter_records(meta, status.result)]
    assert usernames == ["alice", "bob", "carol"]


# -- formats ----------------------------------------------------------------------------------


def test_jsonl_one_record_per_line(shaped_status: JobStatus) -> None:
    data, count = _write("jsonl", shaped_status)
    lines = data.decode("utf-8").splitlines()
    assert count == len(lines) == 3
    assert data.endswith(b"\n")
    assert [json.loads(line) for line in lines] == _expected_records(shaped_status)
    # Non-ASCII text stays readable rather than \u-escaped.
    assert "Bøb ünïcode 🚀" in data.decode("utf-8")


def test_json_is_the_whole_result_with_header(shaped_status: JobStatus) -> None:
    data, count = _write("json", shaped_status)
    document = json.loads(data)
    assert count == 3
    assert list(document)[:2] == ["request_id", "fetched_at"]
    assert document == {
        "request_id": "req-1",
        "fetched_at": FETCHED_ISO,
        "status": "completed",
        "platform": "twitter",
        "interaction_type": "followers",
        "target": {"username": "target_user", "profile_url": "https://twitter.com/target_user"},
        "total_count": 3,
        "extra": {},
        "interactions": _expected_records(shaped_status),
    }


def _csv_expected(record: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in record.items():
        if value is None:
            out[key] = ""
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif key == "raw":
            out[key] = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        else:
            out[key] = str(value)
    return out


def test_csv_has_stable_header_and_quoted_values(shaped_status: JobStatus) -> None:
    data, count = _write("csv", shaped_status)
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
    assert count == len(rows) == 3
    assert data.decode("utf-8").split("\r\n", 1)[0] == ",".join(RECORD_COLUMNS)
    assert rows == [_csv_expected(r) for r in _expected_records(shaped_status)]
    assert json.loads(rows[0]["raw"]) == shaped_status.data["result"]["interactions"][0]


def test_parquet_schema_types_and_values(shaped_status: JobStatus) -> None:
    data, count = _write("parquet", shaped_status)
    table = pq.read_table(io.BytesIO(data))
    assert count == table.num_rows == 3
    schema = table.schema
    assert schema.names == list(RECORD_COLUMNS)
    assert schema.field("followers_count").type == pa.int64()
    assert schema.field("following_count").type == pa.int64()
    assert schema.field("verified").type == pa.bool_()
    assert schema.field("fetched_at").type == pa.timestamp("us", tz="UTC")
    for name in ("request_id", "username", "bio", "reply_date", "raw"):
        assert schema.field(name).type == pa.string()
    assert all(f.nullable for f in schema)
    rows = table.to_pylist()
    expected = _expected_records(shaped_status)
    for row, want in zip(rows, expected, strict=True):
        assert row["fetched_at"] == FETCHED
        assert json.loads(row["raw"]) == want["raw"]
        assert {k: row[k] for k in (*PROFILE_FIELDS, "request_id", "platform")} == {
            k: want[k] for k in (*PROFILE_FIELDS, "request_id", "platform")
        }
    metadata = schema.metadata
    assert metadata[b"nyne.request_id"] == b"req-1"
    assert metadata[b"nyne.target_username"] == b"target_user"
    assert metadata[b"nyne.total_count"] == b"3"


def test_parquet_streams_in_row_batches() -> None:
    items = [{"username": f"user{i}", "followers_count": i} for i in range(7)]
    data, count = _write("parquet", completed(items), batch_rows=3)
    parquet = pq.ParquetFile(io.BytesIO(data))
    assert count == parquet.metadata.num_rows == 7
    # One row group per batch: records were never all converted at once.
    assert [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)] == [3, 3, 1]
    assert parquet.read().column("username").to_pylist() == [f"user{i}" for i in range(7)]


@pytest.mark.parametrize(
    ("fmt", "check"),
    [
        pytest.param("jsonl", lambda data: data == b"", id="jsonl-empty-file"),
        pytest.param(
            "csv", lambda data: data == (",".join(RECORD_COLUMNS) + "\r\n").encode(), id="csv-header-only"
        ),
        pytest.param(
            "json",
            lambda data: json.loads(data)["interactions"] == [] and json.loads(data)["request_id"] == "req-1",
            id="json-empty-list",
        ),
        pytest.param(
            "parquet",
            lambda data: (
                pq.read_table(io.BytesIO(data)).num_rows == 0
                and pq.read_schema(io.BytesIO(data)).remove_metadata() == parquet_schema()
            ),
            id="parquet-schema-0-rows",
        ),
    ],
)
def test_empty_result_still_describes_itself(fmt: str, check: Any) -> None:
    data, count = _write(fmt, completed([]))
    assert count == 0
    assert check(data)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param("JSONL", "jsonl", id="case-insensitive"),
        pytest.param(" csv ", "csv", id="stripped"),
        pytest.param("parquet", "parquet", id="parquet-with-pyarrow"),
    ],
)
def test_check_format_normalises(given: str, expected: str) -> None:
    assert check_format(given) == expected


def test_check_format_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="format must be one of jsonl, json, csv, parquet; got 'xml'"):
        check_format("xml")


# -- reading back ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet"])
def test_marker_reads_request_id_and_count(fmt: str) -> None:
    data, _ = _write(fmt, completed(flat_items(), request_id="req-42"))
    marker = read_output_marker(fmt, io.BytesIO(data))
    assert (marker.request_id, marker.records) == ("req-42", 3)


@pytest.mark.parametrize(
    ("fmt", "request_id"),
    [
        pytest.param("jsonl", None, id="jsonl-empty-has-no-id"),
        pytest.param("csv", None, id="csv-header-has-no-id"),
        pytest.param("json", "req-1", id="json"),
        pytest.param("parquet", "req-1", id="parquet"),
    ],
)
def test_marker_of_empty_output(fmt: str, request_id: str | None) -> None:
    data, _ = _write(fmt, completed([]))
    marker = read_output_marker(fmt, io.BytesIO(data))
    assert (marker.request_id, marker.records) == (request_id, 0)


@pytest.mark.parametrize(
    ("fmt", "content"),
    [
        pytest.param("jsonl", b"not json\n", id="jsonl-garbage"),
        pytest.param("jsonl", b'{"id": 1}\n', id="jsonl-without-request-id"),
        pytest.param("json", b"[1, 2]", id="json-list"),
        pytest.param("csv", b"a,b\n1,2\n", id="csv-other-columns"),
        pytest.param("parquet", b"PAR1 nope", id="parquet-garbage"),
    ],
)
def test_marker_rejects_foreign_files(fmt: str, content: bytes) -> None:
    with pytest.raises(UnreadableOutputError):
        read_output_marker(fmt, io.BytesIO(content))


def test_marker_rejects_parquet_without_nyne_metadata() -> None:
    sink = io.BytesIO()
    pq.write_table(pa.table({"request_id": ["req-1"]}), sink)
    with pytest.raises(UnreadableOutputError, match=r"nyne\.request_id"):
        read_output_marker("parquet", io.BytesIO(sink.getvalue()))


# -- whole-or-nothing writes --------------------------------------------------------------------


class Boom(RuntimeError):
    pass


def _failing_records(n: int) -> Iterator[dict[str, Any]]:
    status = completed(flat_items())
    meta = _meta(status)
    assert status.result is not None
    for i, record in enumerate(iter_records(meta, status.result)):
        if i == n:
            raise Boom(f"failed after {n} records")
        yield record


def _listing(directory: os.PathLike[str] | str) -> list[str]:
    return sorted(os.listdir(directory))


def _write_then_fail(fs: Any, path: str, **kwargs: Any) -> None:
    """Write part of an output, then fail inside the atomic writer."""
    with atomic_writer(fs, path, **kwargs) as sink:
        meta = _meta(completed(flat_items()))
        write_output("jsonl", meta, _failing_records(2), sink)


def _write_while_someone_else_commits(dest: Any) -> None:
    with atomic_writer(LocalFileSystem(), str(dest)) as sink:
        sink.write(b"mine\n")
        dest.write_bytes(b"someone else's\n")  # a concurrent writer wins the race


def test_strategy_per_filesystem() -> None:
    assert choose_strategy(LocalFileSystem()) == "local"
    assert choose_strategy(MemoryFileSystem()) == "temp_move"


def test_local_write_publishes_complete_file(tmp_path: Any) -> None:
    dest = tmp_path / "a" / "b" / "out.jsonl"
    with atomic_writer(LocalFileSystem(), str(dest)) as sink:
        sink.write(b"one\n")
        # Nothing visible at the destination while writing; the temporary file is hidden.
        assert not dest.exists()
        hidden = [n for n in _listing(dest.parent) if n.startswith(".out.jsonl.tmp-")]
        assert len(hidden) == 1
        sink.write(b"two\n")
    assert dest.read_bytes() == b"one\ntwo\n"
    assert _listing(dest.parent) == ["out.jsonl"]


@pytest.mark.parametrize("overwrite", [False, True], ids=["no-overwrite", "overwrite"])
def test_local_failure_midway_leaves_nothing(tmp_path: Any, overwrite: bool) -> None:
    dest = tmp_path / "out.jsonl"
    with pytest.raises(Boom, match="after 2 records"):
        _write_then_fail(LocalFileSystem(), str(dest), overwrite=overwrite)
    assert _listing(tmp_path) == []


def test_local_failure_keeps_previous_file_when_overwriting(tmp_path: Any) -> None:
    dest = tmp_path / "out.jsonl"
    dest.write_bytes(b"previous\n")
    with pytest.raises(Boom):
        _write_then_fail(LocalFileSystem(), str(dest), overwrite=True)
    assert dest.read_bytes() == b"previous\n"
    assert _listing(tmp_path) == ["out.jsonl"]


def test_local_refuses_existing_without_overwrite(tmp_path: Any) -> None:
    dest = tmp_path / "out.jsonl"
    dest.write_bytes(b"previous\n")
    with pytest.raises(DestinationExistsError) as info, atomic_writer(LocalFileSystem(), str(dest)):
        pytest.fail("the body must not run when the destination exists")
    assert info.value.filename == str(dest)
    assert dest.read_bytes() == b"previous\n"


def test_local_no_clobber_when_destination_appears_during_write(tmp_path: Any) -> None:
    dest = tmp_path / "out.jsonl"
    with pytest.raises(DestinationExistsError):
        _write_while_someone_else_commits(dest)
    assert dest.read_bytes() == b"someone else's\n"
    assert _listing(tmp_path) == ["out.jsonl"]


def test_local_overwrite_replaces(tmp_path: Any) -> None:
    dest = tmp_path / "out.jsonl"
    dest.write_bytes(b"previous\n")
    with atomic_writer(LocalFileSystem(), str(dest), overwrite=True) as sink:
        sink.write(b"new\n")
    assert dest.read_bytes() == b"new\n"


@pytest.fixture
def memfs() -> Iterator[MemoryFileSystem]:
    fs = MemoryFileSystem()
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")
    yield fs
    fs.store.clear()


def test_temp_move_publishes_and_cleans_up(memfs: MemoryFileSystem) -> None:
    with atomic_writer(memfs, "/bucket/x/out.csv", strategy="temp_move") as sink:
        sink.write(b"a,b\r\n")
        assert not memfs.exists("/bucket/x/out.csv")
    assert memfs.cat("/bucket/x/out.csv") == b"a,b\r\n"
    assert memfs.ls("/bucket/x", detail=False) == ["/bucket/x/out.csv"]


def test_temp_move_failure_leaves_no_object_and_no_temp(memfs: MemoryFileSystem) -> None:
    with pytest.raises(Boom):
        _write_then_fail(memfs, "/bucket/x/out.csv", strategy="temp_move")
    assert not memfs.exists("/bucket/x/out.csv")
    assert [p for p in memfs.find("/bucket") if "tmp-" in p] == []


def test_temp_move_refuses_existing(memfs: MemoryFileSystem) -> None:
    memfs.pipe("/bucket/out.csv", b"previous")
    with pytest.raises(DestinationExistsError), atomic_writer(memfs, "/bucket/out.csv", strategy="temp_move"):
        pytest.fail("the body must not run when the destination exists")
    assert memfs.cat("/bucket/out.csv") == b"previous"


def test_unknown_strategy_is_rejected(tmp_path: Any) -> None:
    with (
        pytest.raises(ValueError, match="strategy must be one of"),
        atomic_writer(LocalFileSystem(), str(tmp_path / "x"), strategy="rename"),
    ):
        pass
