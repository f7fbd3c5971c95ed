"""Apache Airflow provider for the Nyne Social Interactions API."""

from __future__ import annotations

__version__ = "1.1.0"

__all__ = ["__version__"]
