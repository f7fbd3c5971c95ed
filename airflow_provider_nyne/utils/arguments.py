"""Defaults and checks of the operators' arguments: what a DAG file needs when it is parsed.

The DAG processor imports the operator modules on every parse, so they import this module
(and :mod:`airflow_provider_nyne.client.schedule`) at the top and everything that talks to
the API, waits or writes only when a task runs. Nothing here imports the client; Airflow's
configuration is read (from memory, no I/O) only by :func:`default_deferrable`.
"""

from __future__ import annotations

import importlib.util
import os
from datetime import timedelta

from airflow_provider_nyne._compat import get_config_option

#: The connection the provider's hook, operators and sensor use unless told otherwise.
DEFAULT_CONN_ID = "nyne_default"

#: Default bound of a whole wait, seconds (24 h): far beyond any lookup, cheap to wait in the triggerer.
DEFAULT_TIMEOUT = 24 * 60 * 60.0

#: How an operator waits for a lookup: by polling the API, or for Nyne's callback.
WAIT_MODES = ("poll", "callback")

#: Credits a lookup costs when it completes with results (empty and failed lookups are free).
CREDITS_PER_LOOKUP = 3

#: The Airflow option that sets, for a whole deployment, whether operators wait in the triggerer.
DEFERRABLE_OPTION = ("operators", "default_deferrable")
#: Airflow's own default of that option (the same in 3.1 and 3.3): the value every generated
#: ``airflow.cfg`` carries, so meeting it there says nothing about what the administrator wants.
AIRFLOW_DEFAULT_DEFERRABLE = False
#: The provider's default when the deployment does not choose: waiting in the triggerer is its point.
PROVIDER_DEFAULT_DEFERRABLE = True

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


def _config_bool(value: str, option: str) -> bool:
    """Read a boolean option the way Airflow's ``conf.getboolean`` does."""
    text = value.split("#", 1)[0].strip().lower()
    if text in ("t", "true", "1"):
        return True
    if text in ("f", "false", "0"):
        return False
    raise ValueError(f"{option} must be True or False; got {value!r}: fix the Airflow configuration")


def deployment_default_deferrable() -> bool | None:
    """
    ``[operators] default_deferrable`` when the deployment set it on purpose, else ``None``.

    Airflow writes every default into a new ``airflow.cfg`` (``default_deferrable = False``
    included, on 3.1.3 and 3.3.2 alike), and its configuration API cannot tell that line from
    one an administrator wrote. So a value counts as set when it differs from Airflow's own
    default (``True``, from any source), or when it comes from the environment variable
    ``AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE`` (``False`` too). Read from memory: no I/O.

    :raises ValueError: when the option holds something other than a boolean
    """
    section, key = DEFERRABLE_OPTION
    option = f"[{section}] {key}"
    value = get_config_option(section, key)
    if value is None:
        return None
    chosen = _config_bool(value, option)
    if chosen != AIRFLOW_DEFAULT_DEFERRABLE:
        return chosen
    if f"AIRFLOW__{section.upper()}__{key.upper()}" in os.environ:
        return chosen
    return None


def default_deferrable() -> bool:
    """
    Whether a waiting operator defers when its DAG does not say: the deployment's choice, else ``True``.

    The rule of every operator built on
    :class:`~airflow_provider_nyne.utils.waiting.NyneWaitMixin` (submit, sensor, transfers);
    see :func:`deployment_default_deferrable` for what counts as the deployment's choice.
    Read when the DAG is parsed, as Airflow's own providers read this option.
    """
    chosen = deployment_default_deferrable()
    return PROVIDER_DEFAULT_DEFERRABLE if chosen is None else chosen


def resolve_deferrable(deferrable: bool | None) -> bool:
    """
    The ``deferrable`` an operator uses: its own argument, or :func:`default_deferrable` when it is ``None``.

    :param deferrable: the argument (``None``: not given)
    """
    return default_deferrable() if deferrable is None else bool(deferrable)


#: What starts a Jinja expression, statement or comment.
TEMPLATE_MARKERS = ("{{", "{%", "{#")


def template_start(text: str) -> int:
    """Where the first Jinja expression, statement or comment starts in ``text`` (-1: none)."""
    found = [i for i in (text.find(m) for m in TEMPLATE_MARKERS) if i >= 0]
    return min(found) if found else -1


def is_templated(value: object) -> bool:
    """
    Whether ``value`` is a Jinja template, rendered only when the task runs.

    :param value: an argument's value
    """
    return isinstance(value, str) and template_start(value) >= 0


def credits_argument(value: object, *, name: str) -> int | None:
    """
    A credit amount (``credit_budget``, ``min_credit_balance``): a whole number of credits, 0 or more.

    ``None``, ``""`` and ``"None"`` (what a template of an unset param renders to) mean
    "no limit". Called when the DAG is parsed with the argument as written (a template
    passes, and is checked again once rendered) and when the task runs.

    :param value: the argument
    :param name: its name, for the error message
    :raises ValueError: for anything but a whole, non-negative number of credits
    """
    if value is None or (isinstance(value, str) and value.strip() in ("", "None")):
        return None
    if is_templated(value):
        raise ValueError(f"{name} is a template that was not rendered: {value!r}")
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    if number is None or number < 0:
        raise ValueError(
            f"{name} must be a whole number of credits, 0 or more (each lookup with results costs "
            f"{CREDITS_PER_LOOKUP}), "
            f"or None for no limit; got {value!r}"
        )
    return number


def check_credits_argument(value: object, *, name: str) -> object:
    """
    Parse-time check of a credit amount; a template is kept as is and checked once rendered.

    :param value: the argument as written in the DAG
    :param name: its name, for the error message
    :raises ValueError: as :func:`credits_argument`
    """
    if is_templated(value):
        return value
    credits_argument(value, name=name)
    return value
