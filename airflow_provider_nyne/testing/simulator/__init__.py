"""A local Nyne Social Interactions API for tests, demos and offline DAG development.

:class:`NyneSimulator` serves the public Nyne contract over real sockets on loopback, with
scriptable faults and a ledger; ``nyne-simulator`` (``python -m`` this package) runs it from
the command line. It shares no code with :mod:`airflow_provider_nyne.client`, whose
independent check it is, and does not import Airflow. How it behaves, its settings, faults,
ledger and admin endpoints: the documentation page "The simulator" (``docs/simulator.md``).
"""

from __future__ import annotations

from airflow_provider_nyne.testing.simulator.cli import main
from airflow_provider_nyne.testing.simulator.faults import FaultControls
from airflow_provider_nyne.testing.simulator.ledger import Ledger
from airflow_provider_nyne.testing.simulator.records import (
    Account,
    CallbackAttempt,
    Charge,
    JobTiming,
    Poll,
    RequestRecord,
    Submission,
    UsageCall,
)
from airflow_provider_nyne.testing.simulator.server import NyneSimulator
from airflow_provider_nyne.testing.simulator.settings import Settings

__all__ = [
    "Account",
    "CallbackAttempt",
    "Charge",
    "FaultControls",
    "JobTiming",
    "Ledger",
    "NyneSimulator",
    "Poll",
    "RequestRecord",
    "Settings",
    "Submission",
    "UsageCall",
    "main",
]
