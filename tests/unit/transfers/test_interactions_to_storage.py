"""NyneInteractionsToObjectStorageOperator against ``file://`` with a stubbed hook."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from airflow.sdk import Asset, AssetAlias, ObjectStoragePath
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_nyne._compat import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    TaskDeferred,
    object_storage_conn_id,
)
from airflow_provider_nyne.client.errors import NyneNotFoundError, NyneServerError
from airflow_provider_nyne.client.http import error_from_response
from airflow_provider_nyne.client.models import JobStatus
from airflow_provider_nyne.transfers._writers import RECORD_COLUMNS
from airflow_provider_nyne.transfers.interactions_to_storage import (
    NyneInteractionsToObjectStorageOperator,
    asset_uri,
)
from tests.unit.transfers.samples import EXPECTED_PROFILES, completed, flat_items


class FakeHook:
    """Answers status polls from a script; records every request id polled."""

    def __init__(self, *answers: JobStatus | Exception) -> None:
        self.answers = list(answers)
        self.polled: list[str] = []

    def get_interactions_status(self, request_id: str, *, deadline: float | None = None) -> JobStatus:
        self.polled.append(request_id)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def running(request_id: str = "req-1", status: str = "processing") -> JobStatus:
    return JobStatus.from_api({"request_id": request_id, "status": status})


def failed(reason: str, request_id: str = "req-1") -> JobStatus:
    return JobStatus.from_api({"request_id": request_id, "status": "failed", "error": reason})


def make_op(path: Any, hook: FakeHook, **kwargs: Any) -> NyneInteractionsToObjectStorageOperator:
    kwargs.setdefault("request_id", "req-1")
    op = NyneInteractionsToObjectStorageOperator(task_id="land", path=path, **kwargs)
    op.__dict__["hook"] = hook  # the cached_property, replaced
    return op


def context() -> dict[str, Any]:
    return {"outlet_events": OutletEventAccessors()}


def read_back(fmt: str, data: bytes) -> list[dict[str, Any]]:
    """Records as the text formats would give them back, typed like jsonl."""
    if fmt == "jsonl":
        return [json.loads(line) for line in data.decode().splitlines()]
    if fmt == "json":
        return list(json.loads(data)["interactions"])
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(data.decode(), newline="")))
        out = []
        for row in rows:
            rec: dict[str, Any] = {k: (v if v != "" else None) for k, v in row.items()}
            for key in ("followers_count", "following_count"):
                rec[key] = None if rec[key] is None else int(rec[key])
            rec["verified"] = None if rec["verified"] is None else rec["verified"] == "true"
            rec["raw"] = json.loads(rec["raw"])
            out.append(rec)
        return out
    table = pq.read_table(io.BytesIO(data))
    rows = table.to_pylist()
    for row in rows:
        row["fetched_at"] = row["fetched_at"].isoformat(timespec="microseconds")
        row["raw"] = json.loads(row["raw"])
    return rows


FORMATS = ["jsonl", "json", "csv", "parquet"]


# -- writing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_writes_every_record_and_column(tmp_path: Path, fmt: str, shaped_status: JobStatus) -> None:
    dest = tmp_path / "lake" / f"out.{fmt}"
    hook = FakeHook(shaped_status)
    op = make_op(f"file://{dest}", hook, format=fmt)

    summary = op.execute(context())

    assert summary == {"uri": f"file://{dest}", "records": 3, "format": fmt, "request_id": "req-1"}
    records = read_back(fmt, dest.read_bytes())
    assert [list(r) for r in records] == [list(RECORD_COLUMNS)] * 3
    raw_items = shaped_status.data["result"]["interactions"]
    fetched = {r["fetched_at"] for r in records}
    assert len(fetched) == 1, "one fetch time per run"
    for record, profile, item in zip(records, EXPECTED_PROFILES, raw_items, strict=True):
        assert record == {
            "request_id": "req-1",
            "platform": "twitter",
            "interaction_type": "followers",
            "target_username": "target_user",
            "fetched_at": next(iter(fetched)),
            **profile,
            "raw": item,
        }
    assert fetched.pop().endswith("+00:00")
    assert sorted(p.name for p in dest.parent.iterdir()) == [dest.name], "no temporary file left"


def test_accepts_object_storage_path(tmp_path: Path) -> None:
    dest = tmp_path / "out.jsonl"
    op = make_op(ObjectStoragePath(f"file://{dest}"), FakeHook(completed(flat_items())))
    assert op.execute(context())["records"] == 3
    assert len(dest.read_text().splitlines()) == 3


# -- existing objects -------------------------------------------------------------------------


def test_existing_object_is_not_overwritten_by_default(tmp_path: Path) -> None:
    dest = tmp_path / "out.jsonl"
    dest.write_text('{"request_id": "someone-else"}\n')
    hook = FakeHook(completed(flat_items()))
    op = make_op(f"file://{dest}", hook)

    with pytest.raises(AirflowFailException) as info:
        op.execute(context())

    message = str(info.value)
    assert str(dest) in message
    assert "overwrite=True" in message
    assert "someone-else" in message
    assert dest.read_text() == '{"request_id": "someone-else"}\n'
    assert hook.polled == [], "a foreign file fails before any API call"


def test_existing_non_output_file_is_named_as_such(tmp_path: Path) -> None:
    dest = tmp_path / "out.csv"
    dest.write_text("a,b\n1,2\n")
    op = make_op(f"file://{dest}", FakeHook(completed(flat_items())), format="csv")
    with pytest.raises(AirflowFailException, match="not csv output of this transfer"):
        op.execute(context())
    assert dest.read_text() == "a,b\n1,2\n"


def test_overwrite_true_replaces(tmp_path: Path) -> None:
    dest = tmp_path / "out.jsonl"
    dest.write_text("old\n")
    op = make_op(f"file://{dest}", FakeHook(completed(flat_items())), overwrite=True)
    assert op.execute(context())["records"] == 3
    assert [json.loads(line)["username"] for line in dest.read_text().splitlines()] == [
        "alice",
        "bob",
        "carol",
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_retry_finds_its_own_output_and_does_not_rewrite(tmp_path: Path, fmt: str) -> None:
    dest = tmp_path / f"out.{fmt}"
    first = make_op(f"file://{dest}", FakeHook(completed(flat_items())), format=fmt)
    summary = first.execute(context())
    before = dest.stat()

    # The retry's API would even fail (the request expired): it must not be asked.
    hook = FakeHook(NyneNotFoundError("request_not_found", status_code=404))
    retry = make_op(f"file://{dest}", hook, format=fmt)
    assert retry.execute(context()) == summary
    after = dest.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert hook.polled == []


@pytest.mark.parametrize("fmt", FORMATS)
def test_output_of_another_request_is_refused(tmp_path: Path, fmt: str) -> None:
    dest = tmp_path / f"out.{fmt}"
    make_op(f"file://{dest}", FakeHook(completed(flat_items(), request_id="req-0")), format=fmt).execute(
        context()
    )
    content = dest.read_bytes()
    op = make_op(f"file://{dest}", FakeHook(completed(flat_items())), format=fmt)
    with pytest.raises(AirflowFailException, match=r"the output of another request \(req-0\)"):
        op.execute(context())
    assert dest.read_bytes() == content


# -- empty results ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        pytest.param("jsonl", b"", id="jsonl-empty-file"),
        pytest.param("csv", (",".join(RECORD_COLUMNS) + "\r\n").encode(), id="csv-header-only"),
    ],
)
def test_empty_result_writes_a_file_with_header(tmp_path: Path, fmt: str, expected: bytes) -> None:
    dest = tmp_path / f"out.{fmt}"
    op = make_op(f"file://{dest}", FakeHook(completed([])), format=fmt)
    assert op.execute(context())["records"] == 0
    assert dest.read_bytes() == expected
    # A retry recognises the empty output by its content (it holds no request id).
    retry = make_op(f"file://{dest}", FakeHook(completed([])), format=fmt)
    assert retry.execute(context())["records"] == 0


def test_empty_result_parquet_has_schema(tmp_path: Path) -> None:
    dest = tmp_path / "out.parquet"
    make_op(f"file://{dest}", FakeHook(completed([])), format="parquet").execute(context())
    table = pq.read_table(dest)
    assert table.num_rows == 0
    assert table.schema.names == list(RECORD_COLUMNS)


def test_existing_empty_output_does_not_pass_for_a_non_empty_result(tmp_path: Path) -> None:
    dest = tmp_path / "out.jsonl"
    dest.write_bytes(b"")
    op = make_op(f"file://{dest}", FakeHook(completed(flat_items())))
    with pytest.raises(AirflowFailException, match="an empty jsonl output"):
        op.execute(context())
    assert dest.read_bytes() == b""


def test_skip_if_empty(tmp_path: Path) -> None:
    dest = tmp_path / "out.jsonl"
    op = make_op(f"file://{dest}", FakeHook(completed([])), skip_if_empty=True)
    with pytest.raises(AirflowSkipException, match="req-1 has no interactions"):
        op.execute(context())
    assert list(tmp_path.iterdir()) == []


# -- request states ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "error", "match"),
    [
        pytest.param(
            failed("Profile is private"),
            AirflowFailException,
            "req-1 failed: Profile is private",
            id="failed-job-carries-reason",
        ),
        pytest.param(
            error_from_response(404, {"error": {"code": "request_not_found"}}, {}, request_id="req-1"),
            AirflowFailException,
            "request 'req-1' was not found: it expired",
            id="404-says-expired",
        ),
        pytest.param(
            running(),
            AirflowException,
            "not completed yet .status 'processing'.*wait_for_completion=True",
            id="running-without-waiting",
        ),
        pytest.param(
            NyneServerError("internal_error", status_code=500),
            AirflowException,
            "internal_error",
            id="server-error-is-retryable",
        ),
    ],
)
def test_request_not_writable(tmp_path: Path, answer: Any, error: type[Exception], match: str) -> None:
    dest = tmp_path / "out.jsonl"
    op = make_op(f"file://{dest}", FakeHook(answer))
    with pytest.raises(error, match=match) as info:
        op.execute(context())
    if error is AirflowException:
        assert not isinstance(info.value, AirflowFailException), "a retry can still succeed"
    assert list(tmp_path.iterdir()) == []


# -- inputs -----------------------------------------------------------------------------------


@pytest.mark.parametrize("request_id", ["", "  ", "None"], ids=["empty", "blank", "rendered-none"])
def test_empty_request_id_fails_clearly(tmp_path: Path, request_id: str) -> None:
    hook = FakeHook(completed(flat_items()))
    op = make_op(f"file://{tmp_path}/out.jsonl", hook, request_id=request_id)
    with pytest.raises(AirflowFailException, match="request_id is empty"):
        op.execute(context())
    assert hook.polled == []


@pytest.mark.parametrize(
    ("suffix", "match"),
    [
        pytest.param("/", "must name a file", id="trailing-slash"),
        pytest.param("", "is a folder", id="existing-folder"),
    ],
)
def test_folder_path_is_rejected(tmp_path: Path, suffix: str, match: str) -> None:
    hook = FakeHook(completed(flat_items()))
    op = make_op(f"file://{tmp_path}{suffix}", hook)
    with pytest.raises(AirflowFailException, match=match):
        op.execute(context())
    assert hook.polled == []


def test_conflicting_connection_ids_are_rejected() -> None:
    op = make_op("s3://conn_a@bucket/key.jsonl", FakeHook(completed(flat_items())), conn_id="conn_b")
    with pytest.raises(AirflowFailException, match="names connection 'conn_a' but conn_id is 'conn_b'"):
        op.destination()


def test_conn_id_is_applied_to_a_url_without_one() -> None:
    op = make_op("s3://bucket/key.jsonl", FakeHook(completed(flat_items())), conn_id="aws_x")
    assert object_storage_conn_id(op.destination()) == "aws_x"
    assert str(op.destination()) == "s3://aws_x@bucket/key.jsonl"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        pytest.param({"format": "xml"}, "format must be one of", id="unknown-format"),
        pytest.param({"timeout": 0}, "timeout must be positive", id="zero-timeout"),
        pytest.param({"poll_interval": -1}, "poll_interval must be > 0", id="negative-interval"),
    ],
)
def test_bad_arguments_fail_at_parse_time(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        NyneInteractionsToObjectStorageOperator(task_id="t", request_id="r", path="/tmp/x.jsonl", **kwargs)


def test_template_fields() -> None:
    assert tuple(NyneInteractionsToObjectStorageOperator.template_fields) == ("request_id", "path", "conn_id")


# -- assets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "uri"),
    [
        pytest.param("s3://aws_conn@bucket/a/b.jsonl", "s3://bucket/a/b.jsonl", id="s3-conn-dropped"),
        pytest.param("s3://bucket/a/b.jsonl", "s3://bucket/a/b.jsonl", id="s3"),
        pytest.param("gs://bucket/x.csv", "gs://bucket/x.csv", id="gcs"),
        pytest.param("file:///data/x.jsonl", "file:///data/x.jsonl", id="file"),
        pytest.param("/data/x.jsonl", "file:///data/x.jsonl", id="bare-path"),
        pytest.param("local:///data/x.jsonl", "file:///data/x.jsonl", id="local-scheme"),
        pytest.param(ObjectStoragePath("file:///data/x.jsonl"), "file:///data/x.jsonl", id="object-path"),
    ],
)
def test_asset_uri(path: Any, uri: str) -> None:
    assert asset_uri(path) == uri


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(
            "s3://aws_conn@bucket/a/b.jsonl",
            Asset(uri="s3://bucket/a/b.jsonl"),
            id="fixed-path-is-the-object",
        ),
        pytest.param(
            "s3://aws_conn@bucket/nyne/{{ ds }}/x.jsonl", Asset(uri="s3://bucket/nyne"), id="s3-fixed-folder"
        ),
        pytest.param(
            "s3://bucket/nyne/followers_{{ ds }}.jsonl",
            Asset(uri="s3://bucket/nyne"),
            id="template-inside-a-name",
        ),
        pytest.param("s3://bucket/{{ ds }}.jsonl", Asset(uri="s3://bucket"), id="bucket-root"),
        pytest.param("file:///data/out/{{ ds }}/x.csv", Asset(uri="file:///data/out"), id="file-folder"),
        pytest.param(
            "/data/out/{% if true %}a{% endif %}.csv", Asset(uri="file:///data/out"), id="bare-path-statement"
        ),
        pytest.param(
            "{{ var.value.base }}/x.jsonl",
            Asset(name="nyne_interactions__nyne_dag__land"),
            id="base-templated",
        ),
        pytest.param(
            "s3://{{ var.value.bucket }}/x.jsonl",
            Asset(name="nyne_interactions__nyne_dag__land"),
            id="bucket-templated",
        ),
        pytest.param(
            "file:///{{ ds }}.jsonl", Asset(name="nyne_interactions__nyne_dag__land"), id="root-folder"
        ),
        pytest.param(
            "out/{{ ds }}.jsonl", Asset(name="nyne_interactions__nyne_dag__land"), id="relative-folder"
        ),
    ],
)
def test_output_asset_is_one_per_dataset_and_known_at_parse_time(path: str, expected: Asset) -> None:
    from airflow.sdk import DAG

    with DAG("nyne_dag", schedule=None):
        op = NyneInteractionsToObjectStorageOperator(task_id="land", request_id="r", path=path)
    assert op.outlets == [expected]
    assert op.landed_asset == expected


def test_output_asset_without_a_dag_is_named_after_the_task() -> None:
    op = NyneInteractionsToObjectStorageOperator(task_id="land", request_id="r", path="{{ var.value.b }}/x")
    assert op.outlets == [Asset(name="nyne_interactions__land")]


def test_fixed_path_event_names_the_file_request_and_records(tmp_path: Path) -> None:
    dest = tmp_path / "out.jsonl"
    op = make_op(f"file://{dest}", FakeHook(completed(flat_items())))
    asset = Asset(uri=f"file://{dest}")
    assert op.outlets == [asset]

    ctx = context()
    op.execute(ctx)
    assert ctx["outlet_events"][asset].extra == {
        "source": "nyne_transfer",
        "file": f"file://{dest}",
        "request_id": "req-1",
        "records": 3,
        "format": "jsonl",
    }


def test_templated_runs_record_their_files_on_one_folder_asset(tmp_path: Path) -> None:
    op = make_op(f"file://{tmp_path}/{{{{ ds }}}}/out.jsonl", FakeHook(completed(flat_items())))
    folder = Asset(uri=f"file://{tmp_path}")
    assert op.outlets == [folder]

    files = []
    for day in ("2025-01-01", "2025-01-02", "2025-01-03"):
        op.path = f"file://{tmp_path}/{day}/out.jsonl"  # as rendering leaves it
        ctx = context()
        op.execute(ctx)
        files.append(ctx["outlet_events"][folder].extra["file"])
        assert op.outlets == [folder], "rendering the path does not change the Asset"
    assert files == [
        f"file://{tmp_path}/{day}/out.jsonl" for day in ("2025-01-01", "2025-01-02", "2025-01-03")
    ]


def test_declared_assets_replace_the_default_and_each_gets_the_event(tmp_path: Path) -> None:
    mine, also = Asset(name="followers", uri="s3://bucket/followers"), Asset(name="audit")
    alias = AssetAlias(name="side")
    op = make_op(
        f"file://{tmp_path}/out.jsonl", FakeHook(completed(flat_items())), outlets=[mine, alias, also]
    )
    assert op.outlets == [mine, alias, also]
    assert op.landed_asset is None

    ctx = context()
    op.execute(ctx)
    for asset in (mine, also):
        assert ctx["outlet_events"][asset].extra["file"] == f"file://{tmp_path}/out.jsonl"
    assert ctx["outlet_events"][alias].asset_alias_events == []


def test_an_alias_alone_keeps_the_default_asset() -> None:
    alias = AssetAlias(name="side")
    op = NyneInteractionsToObjectStorageOperator(
        task_id="t", request_id="r", path="s3://b/x.jsonl", outlets=[alias]
    )
    assert op.outlets == [alias, Asset(uri="s3://b/x.jsonl")]


def test_retry_finding_its_output_records_the_event_again(tmp_path: Path) -> None:
    dest = tmp_path / "out.jsonl"
    make_op(str(dest), FakeHook(completed(flat_items()))).execute(context())
    retry = make_op(str(dest), FakeHook(NyneServerError("must not be asked", status_code=500)))
    ctx = context()
    retry.execute(ctx)
    assert ctx["outlet_events"][Asset(uri=f"file://{dest}")].extra["records"] == 3


# -- OpenLineage ------------------------------------------------------------------------------


def test_openlineage_reports_the_lookup_and_the_landed_file(tmp_path: Path) -> None:
    dest = tmp_path / "followers.jsonl"
    op = make_op(f"file://{dest}", FakeHook(completed(flat_items())))
    assert op.get_openlineage_facets_on_complete(None).inputs == []  # nothing landed yet

    op.execute(context())
    lineage = op.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        ("nyne", "interactions/twitter/target_user/followers")
    ]
    [output] = lineage.outputs
    assert (output.namespace, output.name) == ("file", str(dest))
    assert output.outputFacets["outputStatistics"].rowCount == 3


@pytest.mark.parametrize(
    ("path", "namespace", "name"),
    [
        pytest.param("s3://aws_conn@bucket/nyne/x.jsonl", "s3://bucket", "nyne/x.jsonl", id="s3"),
        pytest.param("file:///data/nyne/x.jsonl", "file", "/data/nyne/x.jsonl", id="file"),
    ],
)
def test_openlineage_output_names_the_store_as_openlineage_does(path: str, namespace: str, name: str) -> None:
    op = NyneInteractionsToObjectStorageOperator(task_id="t", request_id="r", path=path)
    dataset = op._storage_dataset(ObjectStoragePath(path))
    assert (dataset.namespace, dataset.name) == (namespace, name)


def test_openlineage_output_of_a_store_without_converter_is_named_by_the_path() -> None:
    path = ObjectStoragePath("memory://scratch/x.jsonl")
    op = NyneInteractionsToObjectStorageOperator(task_id="t", request_id="r", path=str(path))
    dataset = op._storage_dataset(path)
    assert (dataset.namespace, dataset.name) == (path.namespace, path.key)
    assert dataset.namespace.startswith("memory")


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        pytest.param(
            {"platform": "instagram", "interaction_type": "following", "target": {"username": "Nat.Geo"}},
            [("nyne", "interactions/instagram/nat.geo/following")],
            id="instagram",
        ),
        pytest.param(
            {
                "platform": "twitter",
                "interaction_type": "replies",
                "target": {"username": None, "profile_url": "https://x.com/i/status/1234567890123"},
            },
            [("nyne", "interactions/twitter/tweet/1234567890123/replies")],
            id="replies-status-url",
        ),
        pytest.param(
            {"platform": "twitter", "interaction_type": "replies", "target": {"username": "nasa"}},
            [],
            id="replies-tweet-unknown",
        ),
        pytest.param(
            {
                "interaction_type": "followers",
                "target": {"username": "natgeo", "profile_url": "https://www.instagram.com/natgeo/"},
            },
            [("nyne", "interactions/instagram/natgeo/followers")],
            id="platform-from-profile-url",
        ),
        pytest.param(
            {"interaction_type": "followers", "target": {"username": "natgeo"}}, [], id="platform-unknown"
        ),
    ],
)
def test_openlineage_input_is_read_from_the_result(
    tmp_path: Path, result: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    status = JobStatus.from_api(
        {"request_id": "req-1", "status": "completed", "result": {**result, "interactions": flat_items()}}
    )
    op = make_op(str(tmp_path / "x.jsonl"), FakeHook(status))
    op.execute(context())
    assert [(d.namespace, d.name) for d in op.get_openlineage_facets_on_complete(None).inputs] == expected


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    # The stubbed hook must be the only way to the API in these tests.
    monkeypatch.delenv("AIRFLOW_CONN_NYNE_DEFAULT", raising=False)


# -- waiting ------------------------------------------------------------------------------------


def test_waits_by_deferring_on_the_trigger(tmp_path: Path) -> None:
    from airflow_provider_nyne.triggers.interactions import NyneInteractionsTrigger

    hook = FakeHook(running())
    op = make_op(
        f"file://{tmp_path}/out.jsonl",
        hook,
        wait_for_completion=True,
        nyne_conn_id="nyne_x",
        poll_interval=0.5,
        timeout=600,
    )
    with pytest.raises(TaskDeferred) as info:
        op.execute(context())
    trigger = info.value.trigger
    assert isinstance(trigger, NyneInteractionsTrigger)
    assert info.value.method_name == "execute_complete"
    _, kwargs = trigger.serialize()
    assert (kwargs["request_id"], kwargs["nyne_conn_id"], kwargs["poll_interval"]) == ("req-1", "nyne_x", 0.5)
    assert 0 < kwargs["end_time"] - time.time() <= 600
    assert list(tmp_path.iterdir()) == [], "nothing written before the request completes"


def test_execute_complete_fetches_and_writes(tmp_path: Path) -> None:
    dest = tmp_path / "out.jsonl"
    hook = FakeHook(completed(flat_items()))
    op = make_op(f"file://{dest}", hook, wait_for_completion=True)
    event = {"status": "success", "request_id": "req-1", "total_count": 3, "message": None, "polls": 2}
    assert op.execute_complete(context(), event)["records"] == 3
    assert hook.polled == ["req-1"]
    assert len(dest.read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("event", "error", "match"),
    [
        pytest.param(
            {
                "status": "failed",
                "request_id": "req-1",
                "message": "request req-1 failed: Profile is private",
            },
            AirflowFailException,
            "Profile is private",
            id="failed-job-no-retry",
        ),
        pytest.param(
            {
                "status": "error",
                "request_id": "req-1",
                "message": "request 'req-1' was not found: it expired or never existed",
                "http_status": 404,
                "error_code": "request_not_found",
            },
            AirflowFailException,
            "it expired",
            id="expired",
        ),
        pytest.param(
            {"status": "timeout", "request_id": "req-1", "message": "request req-1 still processing"},
            AirflowException,
            "Timed out waiting",
            id="timeout",
        ),
        pytest.param({"status": "weird"}, AirflowException, "unexpected event", id="bad-event"),
    ],
)
def test_execute_complete_raises_on_non_success(
    tmp_path: Path, event: dict[str, Any], error: type[Exception], match: str
) -> None:
    hook = FakeHook(completed(flat_items()))
    op = make_op(f"file://{tmp_path}/out.jsonl", hook, wait_for_completion=True)
    with pytest.raises(error, match=match):
        op.execute_complete(context(), event)
    assert hook.polled == []
    assert list(tmp_path.iterdir()) == []


def test_foreign_destination_fails_before_waiting(tmp_path: Path) -> None:
    dest = tmp_path / "out.jsonl"
    dest.write_text("not ours\n")
    op = make_op(f"file://{dest}", FakeHook(running()), wait_for_completion=True)
    with pytest.raises(AirflowFailException, match="overwrite=True"):
        op.execute(context())
