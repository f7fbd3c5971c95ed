"""Airflow-side helpers shared by the provider's operators and sensors."""

from __future__ import annotations
