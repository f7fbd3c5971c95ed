"""NyneInteractionsToObjectStorageOperator: land a completed request's result in object storage.

The destination is any Airflow object storage path (``ObjectStoragePath``: ``file://``,
``s3://conn_id@bucket/key``, ``gs://``, ...). The file appears complete or not at all, an
existing object is never overwritten unless asked, a retry that finds its own output
succeeds without rewriting it, and each landing is an event on one stable Airflow ``Asset``
(see :func:`output_asset`) whose ``extra`` names the file. With the OpenLineage provider
installed, the task reports the lookup (``nyne`` namespace) as its input and the object as
its output.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from airflow.sdk import Asset, BaseOperator, ObjectStoragePath

from airflow_provider_nyne import client
from airflow_provider_nyne._compat import (
    AirflowException,
    AirflowFailException,
    AirflowSkipException,
    object_storage_conn_id,
)
from airflow_provider_nyne.client.schedule import DEFAULT_MAX_POLL_INTERVAL, DEFAULT_POLL_INTERVAL
from airflow_provider_nyne.utils.arguments import (
    DEFAULT_CONN_ID,
    DEFAULT_TIMEOUT,
    check_format,
    template_start,
)
from airflow_provider_nyne.utils.waiting import NyneWaitMixin

# The DAG processor imports this module on every parse: the hook and its HTTP client and the
# writers are imported where a running task uses them.
if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_nyne.client.models import JobStatus
    from airflow_provider_nyne.transfers._writers import OutputMarker

_LOCAL_SCHEMES = ("", "file", "local")


def asset_uri(path: str | ObjectStoragePath) -> str:
    """
    The Asset URI of a destination: its URL without the connection id (which says how to
    reach the data, not what the data is), local paths as absolute ``file://`` URIs.

    Pure string work, so it is safe at DAG-parse time (building an ``ObjectStoragePath``
    with a connection id may look the connection up).

    :param path: the destination, as a string or ``ObjectStoragePath``
    """
    if isinstance(path, ObjectStoragePath):
        protocol = (path.protocol or "").lower()
        if protocol in _LOCAL_SCHEMES:
            return "file://" + os.path.abspath(path.path)
        return f"{protocol}://{path.path.lstrip('/')}"
    text = str(path)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in _LOCAL_SCHEMES or len(scheme) == 1:  # a Windows drive letter is not a scheme
        local = parts.path if scheme else text
        return "file://" + os.path.abspath(local)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((scheme, host, parts.path, "", ""))


def output_folder(path: str | ObjectStoragePath) -> str | None:
    """
    The fixed folder of a templated destination, as an Asset URI: the text before its first
    template, up to the last ``/``, when that names a place (a bucket, or an absolute local
    folder); otherwise ``None``.

    ``s3://aws_default@bucket/nyne/{{ ds }}/nasa.jsonl`` gives ``s3://bucket/nyne``;
    ``{{ var.value.base }}/x.jsonl`` gives ``None``. Pure string work (DAG-parse time).

    :param path: the destination as the DAG declares it
    """
    text = str(path).strip()
    start = template_start(text)
    prefix = text if start < 0 else text[:start]
    folder = prefix[: prefix.rfind("/")] if "/" in prefix else ""
    parts = urlsplit(folder)
    scheme = parts.scheme.lower()
    if scheme in _LOCAL_SCHEMES:
        local = parts.path if scheme else folder
        # A relative folder would be resolved against wherever the DAG happens to be parsed.
        if not local.startswith("/") or not local.strip("/"):
            return None
        return asset_uri(local)
    if not parts.netloc.rpartition("@")[2]:
        return None
    return asset_uri(folder)


def output_asset(path: str | ObjectStoragePath, *, dag_id: str | None, task_id: str) -> Asset:
    """
    The Asset a transfer lands ``path`` in: one per logical dataset, known when the DAG is parsed.

    * a fixed path: that object (each run replaces it, ``overwrite=True``);
    * a templated path: its fixed folder (:func:`output_folder`), e.g. ``s3://bucket/nyne``
      for ``s3://aws_default@bucket/nyne/{{ ds }}/nasa.jsonl``: every run's file is an event
      on it, the file named in the event's ``extra``;
    * a path whose folder is itself templated: an Asset named after the task,
      ``nyne_interactions__<dag_id>__<task_id>``.

    :param path: the destination as the DAG declares it
    :param dag_id: the transfer's DAG, if known
    :param task_id: the transfer's task id
    """
    if template_start(str(path)) < 0:
        return Asset(uri=asset_uri(path))
    folder = output_folder(path)
    if folder is not None:
        return Asset(uri=folder)
    return Asset(
        name=f"nyne_interactions__{dag_id}__{task_id}" if dag_id else f"nyne_interactions__{task_id}"
    )


class NyneInteractionsToObjectStorageOperator(NyneWaitMixin, BaseOperator):
    """
    Write the result of a completed Nyne interactions request to object storage.

    Formats (every record carries ``request_id``, ``platform``, ``interaction_type``,
    ``target_username`` and ``fetched_at``, then the profile columns, then the untouched
    item under ``raw``):

    * ``jsonl`` (default): one interaction per line; empty result: empty file.
    * ``json``: one document with the request's header (target, total count, fetch time)
      and an ``interactions`` list; empty result: the header and ``[]``.
    * ``csv``: the same columns, header always written; ``raw`` as JSON text.
    * ``parquet`` (extra ``parquet``, needs pyarrow): an explicit schema (counts nullable
      int64, ``verified`` nullable bool, ``fetched_at`` UTC timestamp), the header in the
      file's ``nyne.*`` metadata; empty result: the schema with 0 rows.

    Whole or nothing: the object appears complete or not at all (see
    :func:`~airflow_provider_nyne.transfers._writers.atomic_writer`). An existing object
    fails the task unless ``overwrite=True``, except when it already holds this request's
    output (same ``request_id`` inside the file): then a retry succeeds without rewriting.

    Returns (XCom) ``{"uri": ..., "records": N, "format": ..., "request_id": ...}``; ``uri``
    is the destination as ``ObjectStoragePath`` spells it (connection id included), so a
    downstream task can open it.

    Assets: the task's outlet is one stable Asset, declared when the DAG is parsed (see
    :func:`output_asset`): the object for a fixed path, the fixed folder of a templated one
    (``s3://bucket/nyne`` for ``s3://aws_default@bucket/nyne/{{ ds }}/x.jsonl``), else an
    Asset named ``nyne_interactions__<dag_id>__<task_id>``. Pass ``outlets=[Asset(...)]`` to
    choose it yourself. Each landing records an event on it whose ``extra`` holds ``file``
    (the object written), ``request_id``, ``records``, ``format`` and ``source``
    (``"nyne_transfer"``); a DAG scheduled on the Asset reads them with
    :func:`~airflow_provider_nyne.assets.landed_files_from_asset_events`.

    OpenLineage (with ``apache-airflow-providers-openlineage``): input the lookup (namespace
    ``nyne``, name ``interactions/<platform>/<username>/<type>``), output the object (the
    namespace OpenLineage uses for its store: ``file``, ``s3://<bucket>``, ...) with its
    record count.

    :param request_id: the request whose result to write (templated), e.g.
        ``"{{ ti.xcom_pull(task_ids='submit', key='request_id') }}"``
    :param path: destination (templated), e.g. ``"s3://aws_default@bucket/nyne/{{ ds }}/x.jsonl"``
        or an ``ObjectStoragePath``
    :param nyne_conn_id: the ``nyne`` connection
    :param conn_id: storage connection for a path without one in its URL (templated)
    :param format: ``jsonl`` (default), ``json``, ``csv`` or ``parquet``
    :param overwrite: replace an existing object at ``path``
    :param skip_if_empty: skip the task (``AirflowSkipException``) when the result has no
        interactions, instead of writing an empty file
    :param wait_for_completion: when the request is still running, wait for it (deferring
        to the triggerer when ``deferrable``) instead of failing
    :param deferrable: wait in the triggerer rather than in the worker (default: the deployment's
        ``[operators] default_deferrable`` when it sets it, else ``True``)
    :param timeout: how long to wait for completion before failing, seconds or a timedelta (default 24 h)
    :param poll_interval: seconds before the first status poll while waiting (default 2;
        the wait backs off from there, up to a minute between polls)
    :param outlets: the Assets the landed file belongs to; each landing records an event on
        every ``Asset`` listed (default: :func:`output_asset` of ``path``)
    """

    template_fields: Sequence[str] = ("request_id", "path", "conn_id")
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        request_id: str,
        path: str | ObjectStoragePath,
        nyne_conn_id: str = DEFAULT_CONN_ID,
        conn_id: str | None = None,
        format: str = "jsonl",
        overwrite: bool = False,
        skip_if_empty: bool = False,
        wait_for_completion: bool = False,
        deferrable: bool | None = None,
        timeout: float | timedelta = DEFAULT_TIMEOUT,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        **kwargs: Any,
    ) -> None:
        outlets = list(kwargs.pop("outlets", None) or [])
        super().__init__(**kwargs)
        self.request_id = request_id
        self.path = path
        self.conn_id = conn_id
        self.format = check_format(format)
        self.overwrite = overwrite
        self.skip_if_empty = skip_if_empty
        self.wait_for_completion = wait_for_completion
        self.init_waiting(
            nyne_conn_id=nyne_conn_id,
            deferrable=deferrable,
            timeout=timeout,
            poll_interval=poll_interval,
            max_poll_interval=max(DEFAULT_MAX_POLL_INTERVAL, poll_interval),
        )
        # One Asset per dataset, declared now so that the UI links it to this task and to the
        # DAGs scheduled on it; the file each run wrote goes in that run's event.
        self.landed_asset: Asset | None = None
        if not any(isinstance(o, Asset) for o in outlets):
            self.landed_asset = output_asset(
                path, dag_id=self.dag_id if self.has_dag() else None, task_id=self.task_id
            )
            outlets.append(self.landed_asset)
        self.outlets = outlets
        self._lineage: tuple[ObjectStoragePath, int, str | None] | None = None

    # Run --------------------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        """Write the result, wait for it first, or fail; see the class docstring."""
        from airflow_provider_nyne.client.models import JobState

        request_id = self._request_id()
        destination = self.destination()
        # A retry finding its own complete output is done without asking the API (the request
        # may even have expired by now); someone else's file fails before any waiting.
        if not self.overwrite:
            state, marker = self._inspect(destination, request_id)
            if state == "ours" and marker is not None:
                self._already_written(destination, marker, request_id)
                return self._finish(context, destination, request_id, marker.records)
            if state == "foreign":
                raise self._exists_error(destination, marker)
        status = self._fetch(request_id)
        if status.state is JobState.COMPLETED:
            return self._land(context, destination, status)
        self._raise_if_failed(status)
        if not self.wait_for_completion:
            raise AirflowException(
                f"Nyne request {request_id} is not completed yet (status {status.status!r}): set "
                "wait_for_completion=True, or wait for it first with NyneInteractionsSensor"
            )
        self.wait_for(request_id, status=status)  # defers, or returns once it completed in the worker
        return self._land_completed(context, request_id)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired: check its event, then fetch and write the result."""
        request_id = self._request_id()
        self.finish(event, request_id=request_id)
        return self._land_completed(context, request_id)

    def _land_completed(self, context: Context, request_id: str) -> dict[str, Any]:
        from airflow_provider_nyne.client.models import JobState

        status = self._fetch(request_id)
        if status.state is not JobState.COMPLETED:
            self._raise_if_failed(status)
            raise AirflowException(
                f"Nyne request {request_id} was reported completed but now reads {status.status!r}"
            )
        return self._land(context, self.destination(), status)

    # Pieces -----------------------------------------------------------------------------

    def _request_id(self) -> str:
        request_id = str(self.request_id or "").strip()
        if not request_id or request_id == "None":
            raise AirflowFailException(
                "request_id is empty: pass the id returned by the submit task, e.g. "
                "\"{{ ti.xcom_pull(task_ids='submit', key='request_id') }}\""
            )
        return request_id

    def destination(self) -> ObjectStoragePath:
        """The rendered destination as an ``ObjectStoragePath`` (with ``conn_id`` applied)."""
        path = self.path
        conn_id = self.conn_id or None
        if isinstance(path, ObjectStoragePath):
            in_path = object_storage_conn_id(path)
            if conn_id and in_path and in_path != conn_id:
                raise AirflowFailException(
                    f"path names connection {in_path!r} but conn_id is {conn_id!r}: keep one"
                )
            result = ObjectStoragePath(str(path), conn_id=conn_id) if conn_id and not in_path else path
        else:
            text = str(path).strip()
            in_url = urlsplit(text).netloc.rpartition("@")[0]
            if conn_id and in_url and in_url != conn_id:
                raise AirflowFailException(
                    f"path names connection {in_url!r} but conn_id is {conn_id!r}: keep one"
                )
            result = ObjectStoragePath(text, conn_id=conn_id) if conn_id else ObjectStoragePath(text)
        if not result.path or str(path).rstrip().endswith("/") or result.path.endswith("/"):
            raise AirflowFailException(f"path {str(path)!r} must name a file, not a folder")
        return result

    def _fetch(self, request_id: str) -> JobStatus:
        """The request's status with its result; subclasses may read it from elsewhere (callbacks)."""
        try:
            return self.hook.get_interactions_status(request_id)
        except client.NyneError as err:
            # 404 says the request expired, 401/403 name the credential or reason: no retry;
            # transient failures raise a retryable error.
            self.fail(err)

    def _raise_if_failed(self, status: JobStatus) -> None:
        from airflow_provider_nyne.client.models import JobState

        if status.state is JobState.FAILED:
            raise AirflowFailException(
                f"Nyne request {status.request_id} failed: {status.error or 'no reason given'}"
            )

    def _inspect(self, destination: ObjectStoragePath, request_id: str) -> tuple[str, OutputMarker | None]:
        """
        What the destination holds: ``("absent", None)``, ``("ours", marker)`` (this request's
        output), ``("empty", marker)`` (an output with no record, so no request id to compare)
        or ``("foreign", marker_or_None)``.
        """
        from airflow_provider_nyne.transfers import _writers

        fs = destination.fs
        try:
            fs.invalidate_cache(destination.path)
        except Exception:
            pass
        if not fs.exists(destination.path):
            return "absent", None
        if fs.isdir(destination.path):
            raise AirflowFailException(f"path {destination} is a folder: name a file inside it")
        try:
            with fs.open(destination.path, "rb") as source:
                marker = _writers.read_output_marker(self.format, source)
        except _writers.UnreadableOutputError:
            return "foreign", None
        except FileNotFoundError:
            return "absent", None
        if marker.request_id == request_id:
            return "ours", marker
        if marker.request_id is None and marker.records == 0:
            return "empty", marker
        return "foreign", marker

    def _already_written(self, destination: ObjectStoragePath, marker: OutputMarker, request_id: str) -> None:
        self.log.info(
            "%s already holds the %s output of Nyne request %s (%d records): not rewriting it",
            destination,
            self.format,
            request_id,
            marker.records,
        )

    def _exists_error(
        self, destination: ObjectStoragePath, marker: OutputMarker | None
    ) -> AirflowFailException:
        if marker is None:
            holds = f"an object that is not {self.format} output of this transfer"
        elif marker.request_id is None:
            holds = f"an empty {self.format} output"
        else:
            holds = f"the output of another request ({marker.request_id})"
        return AirflowFailException(
            f"{destination} already exists and holds {holds}; not overwriting it. Set overwrite=True "
            "to replace it, or write to another path (e.g. one templated with {{ ds }} or {{ run_id }})"
        )

    def _land(self, context: Context, destination: ObjectStoragePath, status: JobStatus) -> dict[str, Any]:
        from airflow_provider_nyne.assets import interactions_asset_uri_of_result
        from airflow_provider_nyne.transfers import _writers

        result = status.result
        request_id = status.request_id or self._request_id()
        if result is None:
            raise AirflowFailException(f"Nyne request {request_id} completed without a result object")
        lookup = interactions_asset_uri_of_result(result)
        if len(result) == 0 and self.skip_if_empty:
            raise AirflowSkipException(f"Nyne request {request_id} has no interactions: nothing to write")
        if not self.overwrite:
            state, marker = self._inspect(destination, request_id)
            # An empty result is written without a request id (empty jsonl, header-only csv):
            # an existing empty output has exactly the bytes this run would write.
            if marker is not None and (state == "ours" or (state == "empty" and len(result) == 0)):
                self._already_written(destination, marker, request_id)
                return self._finish(context, destination, request_id, marker.records, lookup)
            if state != "absent":
                raise self._exists_error(destination, marker)
        meta = _writers.OutputMeta.from_result(request_id, result, fetched_at=datetime.now(timezone.utc))
        try:
            with _writers.atomic_writer(destination.fs, destination.path, overwrite=self.overwrite) as sink:
                written = _writers.write_output(self.format, meta, _writers.iter_records(meta, result), sink)
        except _writers.DestinationExistsError:
            # Another writer committed between our check and our commit.
            raise self._exists_error(destination, self._read_marker(destination)) from None
        self.log.info(
            "Wrote %d %s records of Nyne request %s to %s", written, self.format, request_id, destination
        )
        return self._finish(context, destination, request_id, written, lookup)

    def _read_marker(self, destination: ObjectStoragePath) -> OutputMarker | None:
        from airflow_provider_nyne.transfers import _writers

        try:
            with destination.fs.open(destination.path, "rb") as source:
                return _writers.read_output_marker(self.format, source)
        except (_writers.UnreadableOutputError, FileNotFoundError):
            return None

    def _finish(
        self,
        context: Context,
        destination: ObjectStoragePath,
        request_id: str,
        records: int,
        lookup_uri: str | None = None,
    ) -> dict[str, Any]:
        from airflow_provider_nyne.assets import landed_event_extra

        extra = landed_event_extra(destination, request_id=request_id, records=records, format=self.format)
        events = context.get("outlet_events") if hasattr(context, "get") else None
        if events is not None:
            for outlet in self.outlets:
                if isinstance(outlet, Asset):
                    events[outlet].extra.update(extra)
        self._lineage = (destination, records, lookup_uri)
        return {"uri": str(destination), "records": records, "format": self.format, "request_id": request_id}

    # OpenLineage ------------------------------------------------------------------------

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """
        What this run read and wrote, for the OpenLineage provider (called by it after success).

        Input: the lookup (namespace ``nyne``, name ``interactions/<platform>/...``), when the
        result says which it is (a retry that found its output already written has no result
        to read it from). Output: the object, named as the OpenLineage provider names the
        store's datasets (the converters registered for Asset URIs: ``file``,
        ``s3://<bucket>``, ...), with its record count.

        :param task_instance: the finished task instance (unused)
        """
        from airflow.providers.common.compat.openlineage.facet import (
            OutputDataset,
            OutputStatisticsOutputDatasetFacet,
        )
        from airflow.providers.openlineage.extractors import OperatorLineage

        from airflow_provider_nyne.assets import openlineage_dataset

        if self._lineage is None:
            return OperatorLineage()
        destination, records, lookup_uri = self._lineage
        stored = self._storage_dataset(destination)
        output = OutputDataset(
            namespace=stored.namespace,
            name=stored.name,
            outputFacets={"outputStatistics": OutputStatisticsOutputDatasetFacet(rowCount=records)},
        )
        inputs = [openlineage_dataset(lookup_uri)] if lookup_uri else []
        return OperatorLineage(inputs=inputs, outputs=[output])

    def _storage_dataset(self, destination: ObjectStoragePath) -> Any:
        from airflow.providers.common.compat.openlineage.facet import Dataset
        from airflow.providers.openlineage.utils.utils import translate_airflow_asset

        dataset = translate_airflow_asset(Asset(uri=asset_uri(destination)), lineage_context=self)
        if dataset is None:
            # No converter registered for this store: the path's own namespace, as common-io's
            # file transfer reports it.
            dataset = Dataset(namespace=destination.namespace, name=destination.key)
        return dataset
