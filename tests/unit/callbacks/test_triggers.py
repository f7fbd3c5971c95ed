"""``callbacks.triggers`` keeps the 1.0 class path of the trigger working."""

from __future__ import annotations

import subprocess
import sys

from airflow_provider_nyne.callbacks import triggers as old
from airflow_provider_nyne.callbacks.dispatch import TRIGGER_CLASSPATH, TRIGGER_CLASSPATHS
from airflow_provider_nyne.triggers.callbacks import NyneCallbackTrigger


def test_old_path_is_the_same_class() -> None:
    assert old.NyneCallbackTrigger is NyneCallbackTrigger


def test_new_triggers_serialize_under_the_new_path_and_the_receiver_knows_both() -> None:
    trigger = NyneCallbackTrigger(request_id="r", correlation_id="c", end_time=0)
    assert (
        trigger.serialize()[0]
        == TRIGGER_CLASSPATH
        == "airflow_provider_nyne.triggers.callbacks.NyneCallbackTrigger"
    )
    assert "airflow_provider_nyne.callbacks.triggers.NyneCallbackTrigger" in TRIGGER_CLASSPATHS


def test_a_trigger_serialized_by_1_0_loads_without_a_warning() -> None:
    # The triggerer imports the class path stored with the trigger; -W error as in DAG test suites.
    code = (
        "import importlib\n"
        "module, name = 'airflow_provider_nyne.callbacks.triggers.NyneCallbackTrigger'.rsplit('.', 1)\n"
        "cls = getattr(importlib.import_module(module), name)\n"
        "t = cls(request_id='r', correlation_id='c', end_time=0)\n"
        "print(t.serialize()[0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == TRIGGER_CLASSPATH
