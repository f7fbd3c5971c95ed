"""Land a callback's result in object storage without asking the Nyne API.

:class:`NyneCallbackResultToObjectStorageOperator` is the transfer operator
(:class:`~airflow_provider_nyne.transfers.interactions_to_storage.NyneInteractionsToObjectStorageOperator`:
same formats, whole-or-nothing writes, Asset outlets) reading the result that the callback
receiver stored, instead of a status request. It takes the request either from the
submit task's XComs (deferred mode) or from the Asset events that triggered the DAG run
(asset mode)::

    # deferred mode, same DAG
    submit = NyneSubmitInteractionsOperator(task_id="submit", ..., wait_mode="callback")
    land = NyneCallbackResultToObjectStorageOperator(
        task_id="land",
        request_id="{{ ti.xcom_pull(task_ids='submit', key='request_id') }}",
        correlation_id="{{ ti.xcom_pull(task_ids='submit', key='callback_correlation_id') }}",
        path="s3://aws_default@bucket/nyne/{{ ds }}/nasa.jsonl",
    )

    # asset mode, in the DAG scheduled on the Asset: both come from the triggering event
    NyneCallbackResultToObjectStorageOperator(task_id="land", path="file:///data/{{ run_id }}.jsonl")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_nyne import client
from airflow_provider_nyne._compat import AirflowException, AirflowFailException
from airflow_provider_nyne.transfers.interactions_to_storage import NyneInteractionsToObjectStorageOperator

# Like the other operator modules, imported on every DAG parse: the callback client and its
# configuration load when a task runs.
if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_nyne.client.models import JobStatus

__all__ = ["NyneCallbackResultToObjectStorageOperator"]


def _blank(value: Any) -> bool:
    return value is None or str(value).strip() in ("", "None")


class NyneCallbackResultToObjectStorageOperator(NyneInteractionsToObjectStorageOperator):
    """
    Write the result a Nyne callback delivered to object storage; no status request to the API.

    Parameters are those of ``NyneInteractionsToObjectStorageOperator``, plus:

    :param request_id: the request (templated); default: the latest Nyne callback Asset event
        that triggered the DAG run
    :param correlation_id: the correlation id of its callback URL (templated; XCom
        ``callback_correlation_id`` of the submit task); default: from the same Asset event
    :param asset: with asset events from several Assets, only this one's (``Asset`` or URI)
    :param fallback_to_api: when the receiver holds no callback for the request (it never
        came, or was purged), ask the API once instead of failing
    """

    template_fields: Sequence[str] = (
        *NyneInteractionsToObjectStorageOperator.template_fields,
        "correlation_id",
    )

    def __init__(
        self,
        *,
        request_id: str | None = None,
        correlation_id: str | None = None,
        asset: Any = None,
        fallback_to_api: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(request_id=request_id or "", **kwargs)
        self.correlation_id = correlation_id
        self.asset = asset
        self.fallback_to_api = fallback_to_api

    def execute(self, context: Context) -> dict[str, Any]:
        """Take the request from the triggering Asset event when not given, then land it."""
        from airflow_provider_nyne.callbacks.assets import callback_refs_from_asset_events

        if _blank(self.request_id) or _blank(self.correlation_id):
            refs = callback_refs_from_asset_events(context, self.asset)
            if _blank(self.request_id) and refs:
                self.request_id = refs[-1].request_id
            if _blank(self.correlation_id):
                match = next((r for r in reversed(refs) if r.request_id == str(self.request_id)), None)
                self.correlation_id = match.correlation_id if match else None
        if _blank(self.request_id):
            raise AirflowFailException(
                "no request to land: pass request_id (and correlation_id), or schedule this DAG on "
                "the Asset the submit task's callback records"
            )
        return super().execute(context)

    def _fetch(self, request_id: str) -> JobStatus:
        from airflow_provider_nyne.callbacks import config
        from airflow_provider_nyne.callbacks.assets import fetch_callback_status

        status: JobStatus | None = None
        if not _blank(self.correlation_id):
            try:
                secret = config.signing_secret(self.hook.settings.callback_secret)
                status = fetch_callback_status(request_id, str(self.correlation_id), secret=secret)
            except client.NyneError as err:
                if not self.fallback_to_api:
                    raise AirflowException(str(err)) from err
                self.log.warning("Could not read the stored callback (%s); asking the API once", err)
        if status is not None:
            self.log.info("Nyne request %s: result taken from its callback (%s)", request_id, status.status)
            return status
        if not self.fallback_to_api:
            raise AirflowFailException(
                f"the callback receiver holds no result for Nyne request {request_id} (never delivered, "
                "or purged after [nyne] callback_retention_days)"
            )
        self.log.info("Nyne request %s: no stored callback; asking the API once", request_id)
        return super()._fetch(request_id)
