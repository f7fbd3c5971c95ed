"""``python -m airflow_provider_nyne.testing.simulator``: the ``nyne-simulator`` command."""

from __future__ import annotations

from airflow_provider_nyne.testing.simulator.cli import main

raise SystemExit(main())
