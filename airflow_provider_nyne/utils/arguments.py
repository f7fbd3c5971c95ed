"""Defaults and checks of the operators' arguments: what a DAG file needs when it is parsed.

The DAG processor imports the operator modules on every parse, so they import this module
(and :mod:`airflow_provider_nyne.client.schedule`) at the top and everything that talks to
the API, waits or writes only when a task runs. Nothing here imports Airflow or the client.
"""

from __future__ import annotations

import importlib.util
from datetime import timedelta

#: The connection the provider's hook, operators and sensor use unless told otherwise.
DEFAULT_CONN_ID = "nyne_default"

#: Default bound of a whole wait, seconds (24 h): far beyond any lookup, cheap to wait in the triggerer.
DEFAULT_TIMEOUT = 24 * 60 * 60.0

#: How an operator waits for a lookup: by polling the API, or for Nyne's callback.
WAIT_MODES = ("poll", "callback")

#: Output formats of the transfer and their usual file extension.
FORMATS: dict[str, str] = {"jsonl": ".jsonl", "json": ".json", "csv": ".csv", "parquet": ".parquet"}


def check_wait_mode(wait_mode: str) -> str:
    """
    Validate a ``wait_mode`` argument (at DAG-parse time).

    :param wait_mode: ``poll`` or ``callback``
    :raises ValueError: for anything else
    """
    if wait_mode not in WAIT_MODES:
        raise ValueError(f"wait_mode must be one of {', '.join(WAIT_MODES)}; got {wait_mode!r}")
    return wait_mode


def timeout_seconds(timeout: float | timedelta, *, name: str = "timeout") -> float:
    """
    A positive duration in seconds, from seconds or a ``timedelta``.

    :param timeout: the argument's value
    :param name: the argument's name, for the error message
    :raises ValueError: when it is not positive
    """
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    if not seconds > 0:
        raise ValueError(f"{name} must be positive; got {timeout!r}")
    return seconds


def parquet_available() -> bool:
    """Whether pyarrow is installed, so that ``format='parquet'`` can work (checked without importing it)."""
    return importlib.util.find_spec("pyarrow") is not None


def check_format(fmt: str) -> str:
    """
    Normalise and validate an output format name.

    :param fmt: ``jsonl``, ``json``, ``csv`` or ``parquet`` (case-insensitive)
    :raises ValueError: for another name, or ``parquet`` without pyarrow installed
    """
    name = str(fmt).strip().lower()
    if name not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if name == "parquet" and not parquet_available():
        raise ValueError("format='parquet' needs pyarrow: pip install 'airflow-provider-nyne[parquet]'")
    return name
