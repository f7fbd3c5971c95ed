"""Testing helpers: a local Nyne API simulator (:mod:`airflow_provider_nyne.testing.simulator`).

``from airflow_provider_nyne.testing import NyneSimulator`` works too; the server module is
imported only when first used, so importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_nyne.testing.simulator import NyneSimulator

__all__ = ["NyneSimulator"]


def __getattr__(name: str) -> Any:
    if name == "NyneSimulator":
        from airflow_provider_nyne.testing.simulator import NyneSimulator

        return NyneSimulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
