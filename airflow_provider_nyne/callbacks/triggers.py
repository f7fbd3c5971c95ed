"""Where :class:`NyneCallbackTrigger` lived in 1.0; it is now in :mod:`airflow_provider_nyne.triggers.callbacks`.

Kept because a task deferred by 1.0 carries this class path in its serialized trigger, and
kept free of warnings because DAG test suites run with ``-W error``.
"""

from __future__ import annotations

from airflow_provider_nyne.triggers.callbacks import NyneCallbackTrigger

__all__ = ["NyneCallbackTrigger"]
