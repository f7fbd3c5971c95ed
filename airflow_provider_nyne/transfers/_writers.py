"""Output formats and whole-or-nothing writes for the interactions transfer.

Two independent parts, both usable without an operator:

* **Formats** (:func:`write_output`, :func:`read_output_marker`): turn a completed
  :class:`~airflow_provider_nyne.client.models.InteractionsResult` into ``jsonl``, ``json``,
  ``csv`` or ``parquet`` bytes, streaming record by record (row batches for parquet), and
  read back which request an existing file holds.
* **Atomic writes** (:func:`atomic_writer`): a binary sink whose content appears at the
  destination complete or not at all, with the best mechanism the storage offers.

Every record carries the same stable columns (:data:`RECORD_COLUMNS`) whatever shape the API
used for its items (flat, ``actor``-wrapped, counts as strings), plus the untouched item
under ``raw``, so that files from many requests can be unioned.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any

from airflow_provider_nyne.client.models import PROFILE_FIELDS, InteractionsResult
from airflow_provider_nyne.utils.arguments import check_format

#: Columns describing where a record comes from; identical on every record of one file.
META_COLUMNS = ("request_id", "platform", "interaction_type", "target_username", "fetched_at")
#: Every record's columns, in file order: provenance, the profile fields, the original item.
RECORD_COLUMNS = (*META_COLUMNS, *PROFILE_FIELDS, "raw")

#: Keys of the parquet file's key-value metadata.
PARQUET_META_PREFIX = "nyne."
#: Rows per parquet row group written at once (bounds memory for big results).
PARQUET_BATCH_ROWS = 10_000

_TEXT_CHUNK = 1 << 16
_COUNT_COLUMNS = frozenset({"followers_count", "following_count"})


# -- records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class OutputMeta:
    """
    What every record and file header says about the request a result belongs to.

    :param request_id: the Nyne request id
    :param fetched_at: when the completed result was fetched (UTC; one value per run)
    :param platform: ``twitter`` or ``instagram``
    :param interaction_type: ``replies``, ``followers``, ``following`` or ``followers,following``
    :param target_username: the account looked up
    :param target_profile_url: its profile URL
    :param total_count: the total the API reports
    :param extra: top-level keys of the result this provider does not know, untouched
    """

    request_id: str
    fetched_at: datetime
    platform: str | None = None
    interaction_type: str | None = None
    target_username: str | None = None
    target_profile_url: str | None = None
    total_count: int = 0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_result(
        cls, request_id: str, result: InteractionsResult, fetched_at: datetime | None = None
    ) -> OutputMeta:
        """
        Build the header of a completed result.

        :param request_id: the Nyne request id
        :param result: the parsed result
        :param fetched_at: fetch time (default: now, UTC)
        """
        known = {"interaction_type", "type", "platform", "target", "interactions", "results", "total_count"}
        return cls(
            request_id=request_id,
            fetched_at=(fetched_at or datetime.now(timezone.utc)).astimezone(timezone.utc),
            platform=result.platform,
            interaction_type=result.interaction_type,
            target_username=result.target_username,
            target_profile_url=result.target_profile_url,
            total_count=result.total_count,
            extra={k: v for k, v in result.raw.items() if k not in known},
        )

    @property
    def fetched_at_iso(self) -> str:
        """The fetch time as an ISO 8601 string with an explicit UTC offset."""
        return self.fetched_at.isoformat(timespec="microseconds")


def iter_records(meta: OutputMeta, result: InteractionsResult) -> Iterator[dict[str, Any]]:
    """
    Yield one flat record per interaction, in :data:`RECORD_COLUMNS` order.

    :param meta: provenance columns shared by every record
    :param result: the parsed result
    """
    base: dict[str, Any] = {
        "request_id": meta.request_id,
        "platform": meta.platform,
        "interaction_type": meta.interaction_type,
        "target_username": meta.target_username,
        "fetched_at": meta.fetched_at_iso,
    }
    for interaction in result.interactions:
        record = dict(base)
        record.update(interaction.to_record())
        record["raw"] = interaction.raw
        yield record


# -- formats ------------------------------------------------------------------------------


def _json_default(value: object) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


class _TextSink:
    """Collects text and writes it to a binary sink as UTF-8 in large chunks."""

    def __init__(self, sink: IO[bytes]) -> None:
        self._sink = sink
        self._parts: list[str] = []
        self._size = 0

    def write(self, text: str) -> int:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= _TEXT_CHUNK:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self._parts:
            self._sink.write("".join(self._parts).encode("utf-8"))
            self._parts.clear()
            self._size = 0


def _write_jsonl(meta: OutputMeta, records: Iterable[Mapping[str, Any]], sink: IO[bytes]) -> int:
    out = _TextSink(sink)
    count = 0
    for record in records:
        out.write(_dumps(record))
        out.write("\n")
        count += 1
    out.flush()
    return count


def _write_json(meta: OutputMeta, records: Iterable[Mapping[str, Any]], sink: IO[bytes]) -> int:
    # Written by hand so that the interactions stream into the list instead of being
    # collected first; request_id is the first key so that a reader finds it early.
    out = _TextSink(sink)
    head = {
        "request_id": meta.request_id,
        "fetched_at": meta.fetched_at_iso,
        "status": "completed",
        "platform": meta.platform,
        "interaction_type": meta.interaction_type,
        "target": {"username": meta.target_username, "profile_url": meta.target_profile_url},
        "total_count": meta.total_count,
        "extra": dict(meta.extra),
    }
    out.write(_dumps(head)[:-1])
    out.write(',"interactions":[')
    count = 0
    for record in records:
        if count:
            out.write(",")
        out.write("\n")
        out.write(_dumps(record))
        count += 1
    out.write("\n]}\n" if count else "]}\n")
    out.flush()
    return count


def _csv_value(name: str, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if name == "raw":
        return _dumps(value)
    return str(value)


def _write_csv(meta: OutputMeta, records: Iterable[Mapping[str, Any]], sink: IO[bytes]) -> int:
    out = _TextSink(sink)
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(RECORD_COLUMNS)
    count = 0
    for record in records:
        writer.writerow([_csv_value(name, record.get(name)) for name in RECORD_COLUMNS])
        count += 1
    out.flush()
    return count


def parquet_schema(meta: OutputMeta | None = None) -> Any:
    """
    The explicit pyarrow schema of parquet output (needs the ``parquet`` extra).

    Counts are nullable ``int64``, ``verified`` a nullable ``bool``, ``fetched_at`` a UTC
    ``timestamp[us]``, ``raw`` the original item as a JSON string, everything else ``string``.
    With ``meta``, the request's header is attached as ``nyne.*`` key-value metadata.

    :param meta: the request header to attach as schema metadata
    """
    pa = _pyarrow()
    fields = []
    for name in RECORD_COLUMNS:
        if name in _COUNT_COLUMNS:
            kind = pa.int64()
        elif name == "verified":
            kind = pa.bool_()
        elif name == "fetched_at":
            kind = pa.timestamp("us", tz="UTC")
        else:
            kind = pa.string()
        fields.append(pa.field(name, kind, nullable=True))
    schema = pa.schema(fields)
    if meta is not None:
        schema = schema.with_metadata(
            {
                f"{PARQUET_META_PREFIX}request_id": meta.request_id,
                f"{PARQUET_META_PREFIX}fetched_at": meta.fetched_at_iso,
                f"{PARQUET_META_PREFIX}platform": meta.platform or "",
                f"{PARQUET_META_PREFIX}interaction_type": meta.interaction_type or "",
                f"{PARQUET_META_PREFIX}target_username": meta.target_username or "",
                f"{PARQUET_META_PREFIX}target_profile_url": meta.target_profile_url or "",
                f"{PARQUET_META_PREFIX}total_count": str(meta.total_count),
            }
        )
    return schema


def _pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "format='parquet' needs pyarrow: pip install 'airflow-provider-nyne[parquet]'"
        ) from None
    return pyarrow


def _write_parquet(
    meta: OutputMeta,
    records: Iterable[Mapping[str, Any]],
    sink: IO[bytes],
    *,
    batch_rows: int = PARQUET_BATCH_ROWS,
) -> int:
    pa = _pyarrow()
    import pyarrow.parquet as pq

    schema = parquet_schema(meta)
    # pyarrow wants the same instant for every row; the ISO string in records is for text formats.
    fetched_at = meta.fetched_at
    count = 0
    writer = pq.ParquetWriter(sink, schema)
    try:
        batch: list[dict[str, Any]] = []
        for record in records:
            row = dict(record)
            row["fetched_at"] = fetched_at
            row["raw"] = _dumps(record.get("raw"))
            batch.append(row)
            if len(batch) >= batch_rows:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count += len(batch)
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            count += len(batch)
    finally:
        # Writes the footer, so a file with 0 rows still has the schema. The sink stays open.
        writer.close()
    return count


_WRITERS: dict[str, Callable[..., int]] = {
    "jsonl": _write_jsonl,
    "json": _write_json,
    "csv": _write_csv,
    "parquet": _write_parquet,
}


def write_output(
    fmt: str, meta: OutputMeta, records: Iterable[Mapping[str, Any]], sink: IO[bytes], **options: Any
) -> int:
    """
    Stream records to ``sink`` in ``fmt``; returns how many records were written.

    Empty input gives a file that still describes itself: ``jsonl`` an empty file, ``csv``
    the header line, ``parquet`` the schema with 0 rows, ``json`` the header with an empty
    ``interactions`` list.

    :param fmt: ``jsonl``, ``json``, ``csv`` or ``parquet``
    :param meta: the request header (used by ``json`` and ``parquet``)
    :param records: records from :func:`iter_records`
    :param sink: a binary file-like object; it is not closed
    :param options: format options (``batch_rows`` for parquet)
    """
    return _WRITERS[check_format(fmt)](meta, records, sink, **options)


# -- reading back what a file holds --------------------------------------------------------


@dataclass(frozen=True)
class OutputMarker:
    """
    What an existing output file says about itself.

    :param request_id: the request whose result it holds (``None`` when the file has no
        record to tell, i.e. an empty ``jsonl`` file or a header-only ``csv`` file)
    :param records: how many records it holds
    """

    request_id: str | None
    records: int


class UnreadableOutputError(ValueError):
    """An existing file is not output of this transfer in the expected format."""


def read_output_marker(fmt: str, source: IO[bytes]) -> OutputMarker:
    """
    Read which request an existing output file holds, and how many records.

    :param fmt: the format the file should be in
    :param source: the file, opened for binary reading
    :raises UnreadableOutputError: when the file is not this transfer's output in ``fmt``
    """
    try:
        return _MARKER_READERS[check_format(fmt)](source)
    except UnreadableOutputError:
        raise
    except Exception as err:
        raise UnreadableOutputError(f"not a {fmt} output of this transfer: {err}") from err


def _marker_jsonl(source: IO[bytes]) -> OutputMarker:
    request_id: str | None = None
    count = 0
    for line in source:
        if not line.strip():
            continue
        if request_id is None:
            request_id = _request_id_of(json.loads(line))
        count += 1
    return OutputMarker(request_id, count)


def _marker_json(source: IO[bytes]) -> OutputMarker:
    document = json.load(source)
    items = document.get("interactions") if isinstance(document, dict) else None
    if not isinstance(items, list):
        raise UnreadableOutputError("no 'interactions' list")
    return OutputMarker(_request_id_of(document), len(items))


def _marker_csv(source: IO[bytes]) -> OutputMarker:
    text = io.TextIOWrapper(source, encoding="utf-8", newline="")
    try:
        reader = csv.reader(text)
        header = next(reader, None)
        if header is None or tuple(header) != RECORD_COLUMNS:
            raise UnreadableOutputError("header does not match this transfer's columns")
        position = RECORD_COLUMNS.index("request_id")
        request_id: str | None = None
        count = 0
        for row in reader:
            if request_id is None:
                request_id = row[position] or None
            count += 1
    finally:
        text.detach()
    return OutputMarker(request_id, count)


def _marker_parquet(source: IO[bytes]) -> OutputMarker:
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(source)
    metadata = parquet.schema_arrow.metadata or {}
    request_id = metadata.get(f"{PARQUET_META_PREFIX}request_id".encode())
    if not request_id:
        raise UnreadableOutputError("no nyne.request_id in the parquet metadata")
    return OutputMarker(request_id.decode("utf-8"), parquet.metadata.num_rows)


def _request_id_of(document: object) -> str:
    if not isinstance(document, dict) or not isinstance(document.get("request_id"), str):
        raise UnreadableOutputError("no request_id")
    return str(document["request_id"])


_MARKER_READERS: dict[str, Callable[[IO[bytes]], OutputMarker]] = {
    "jsonl": _marker_jsonl,
    "json": _marker_json,
    "csv": _marker_csv,
    "parquet": _marker_parquet,
}


# -- whole-or-nothing writes ----------------------------------------------------------------


class DestinationExistsError(FileExistsError):
    """The destination already holds an object and overwriting was not allowed."""


#: Write strategies :func:`atomic_writer` knows, by name.
STRATEGIES = ("local", "s3", "temp_move")


def choose_strategy(fs: Any) -> str:
    """
    The best whole-or-nothing strategy for a filesystem.

    * ``local``: a temporary file beside the destination, fsynced, then renamed (or
      hard-linked when overwriting is not allowed, which fails if the name exists).
    * ``s3``: s3fs writes the destination key directly; its file object uploads one
      ``PUT`` (or a multipart upload for big files) only when closed, and aborts on
      failure, so no object and no temporary key ever exists before success. Without
      ``overwrite`` the write is conditional (``If-None-Match: *``).
    * ``temp_move``: any other store: write a temporary key beside the destination, then
      move it into place (copy + delete on object stores); the temporary key is removed on
      failure.

    :param fs: an fsspec filesystem
    """
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        return "local"
    try:
        from s3fs import S3FileSystem
    except ImportError:
        return "temp_move"
    return "s3" if isinstance(fs, S3FileSystem) else "temp_move"


def temp_name(name: str) -> str:
    """
    The temporary name used beside a destination named ``name``.

    It starts with a dot (hidden from Hadoop/Spark-style readers and ``*.ext`` globs) and
    ends with a random suffix so that concurrent attempts never share one.

    :param name: the destination's file name
    """
    return f".{name}.tmp-{uuid.uuid4().hex}"


@contextlib.contextmanager
def atomic_writer(
    fs: Any, path: str, *, overwrite: bool = False, strategy: str | None = None, block_size: int | None = None
) -> Iterator[IO[bytes]]:
    """
    A binary sink whose content appears at ``path`` complete, or not at all.

    Leaving the ``with`` block normally publishes the content; an exception inside it (or
    while publishing) leaves the destination as it was and removes any temporary object.

    :param fs: the fsspec filesystem (``ObjectStoragePath.fs``)
    :param path: the destination in ``fs`` (``ObjectStoragePath.path``)
    :param overwrite: replace an existing object; otherwise an existing object raises
        :class:`DestinationExistsError` and is left untouched
    :param strategy: force one of :data:`STRATEGIES` (default: :func:`choose_strategy`)
    :param block_size: buffer/part size for remote writes (s3fs needs at least 5 MiB)
    :raises DestinationExistsError: when ``path`` exists and ``overwrite`` is false
    """
    chosen = strategy or choose_strategy(fs)
    if chosen not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}; got {strategy!r}")
    if chosen == "local":
        with _local_writer(fs, path, overwrite=overwrite) as sink:
            yield sink
    elif chosen == "s3":
        with _s3_writer(fs, path, overwrite=overwrite, block_size=block_size) as sink:
            yield sink
    else:
        with _temp_move_writer(fs, path, overwrite=overwrite, block_size=block_size) as sink:
            yield sink


def _exists_error(path: str) -> DestinationExistsError:
    return DestinationExistsError(errno.EEXIST, "destination already exists", path)


@contextlib.contextmanager
def _local_writer(fs: Any, path: str, *, overwrite: bool) -> Iterator[IO[bytes]]:
    final = os.path.abspath(fs._strip_protocol(path))
    directory = os.path.dirname(final)
    os.makedirs(directory, exist_ok=True)
    if not overwrite and os.path.lexists(final):
        raise _exists_error(final)
    tmp = os.path.join(directory, temp_name(os.path.basename(final)))
    try:
        with open(tmp, "xb") as sink:
            yield sink
            sink.flush()
            os.fsync(sink.fileno())
        if overwrite:
            os.replace(tmp, final)
        else:
            _link_no_clobber(tmp, final)
        _fsync_dir(directory)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _link_no_clobber(tmp: str, final: str) -> None:
    # A hard link fails atomically when the name exists, unlike rename; the temporary name
    # is unlinked by the caller afterwards.
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise _exists_error(final) from None
    except OSError:
        # Filesystems without hard links: check, then rename (a small race window).
        if os.path.lexists(final):
            raise _exists_error(final) from None
        os.rename(tmp, final)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _s3_writer(fs: Any, path: str, *, overwrite: bool, block_size: int | None) -> Iterator[IO[bytes]]:
    # fsspec's ``with fs.open(...)`` commits on exit even after an exception, which would
    # publish a partial object; so the file is driven by hand and discarded on failure.
    fs.invalidate_cache(path)
    if not overwrite and fs.exists(path):
        raise _exists_error(path)
    kwargs: dict[str, Any] = {}
    if block_size:
        kwargs["block_size"] = block_size
    # Without overwrite the commit is conditional (If-None-Match: *), so a writer racing
    # this one cannot be overwritten either; S3 answers 412, which s3fs raises as FileExistsError.
    sink = fs.open(path, "wb" if overwrite else "xb", **kwargs)
    try:
        yield sink
        try:
            sink.close()
        except FileExistsError:
            raise _exists_error(path) from None
    except BaseException:
        # Also after a failed close: a multipart upload whose completion failed is aborted.
        _discard(sink)
        raise
    finally:
        fs.invalidate_cache(path)


def _discard(sink: Any) -> None:
    """Abort an unfinished s3fs upload so that nothing is committed, and mark the file closed."""
    with contextlib.suppress(Exception):
        sink.discard()
    # A discarded s3fs file has no buffer left; marking it closed stops a later close()
    # (explicit or from __del__) from trying to commit it.
    with contextlib.suppress(Exception):
        sink.closed = True


@contextlib.contextmanager
def _temp_move_writer(fs: Any, path: str, *, overwrite: bool, block_size: int | None) -> Iterator[IO[bytes]]:
    if not overwrite and fs.exists(path):
        raise _exists_error(path)
    parent = fs._parent(path)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    tmp = f"{parent}/{temp_name(name)}" if parent else temp_name(name)
    kwargs: dict[str, Any] = {}
    if block_size:
        kwargs["block_size"] = block_size
    with contextlib.suppress(Exception):
        fs.makedirs(parent, exist_ok=True)
    try:
        sink = fs.open(tmp, "wb", **kwargs)
        try:
            yield sink
        except BaseException:
            _discard(sink)
            with contextlib.suppress(Exception):
                sink.close()
            raise
        sink.close()
        if not overwrite and fs.exists(path):
            raise _exists_error(path)
        fs.mv(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            if fs.exists(tmp):
                fs.rm(tmp)
