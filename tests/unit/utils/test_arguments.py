"""utils.arguments: what a DAG file's operators decide when parsed (the deployment's deferrable default, credit amounts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_nyne.utils.arguments import (
    check_credits_argument,
    credits_argument,
    default_deferrable,
    deployment_default_deferrable,
    is_templated,
    template_start,
)

ENV = "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE"


@pytest.fixture
def no_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)


@pytest.mark.parametrize(
    ("value", "deployment", "default"),
    [
        pytest.param(None, None, True, id="unset-waits-in-the-triggerer"),
        pytest.param("True", True, True, id="env-true"),
        pytest.param("False", False, False, id="env-false"),
        pytest.param("false", False, False, id="env-false-lowercase"),
        pytest.param("0", False, False, id="env-zero"),
        pytest.param("t", True, True, id="env-t"),
    ],
)
def test_the_environment_variable_is_honoured_both_ways(
    monkeypatch: pytest.MonkeyPatch, value: str | None, deployment: bool | None, default: bool
) -> None:
    if value is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, value)
    assert deployment_default_deferrable() is deployment
    assert default_deferrable() is default


def test_a_value_that_is_not_a_boolean_names_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, "sometimes")
    with pytest.raises(ValueError, match=r"\[operators\] default_deferrable must be True or False"):
        default_deferrable()


_CHILD = """
import json
from airflow.sdk import DAG
from airflow_provider_nyne.operators.interactions import NyneSubmitInteractionsOperator
from airflow_provider_nyne.sensors.interactions import NyneInteractionsSensor
from airflow_provider_nyne.transfers.interactions_to_storage import NyneInteractionsToObjectStorageOperator
from airflow_provider_nyne.transfers.callback_to_storage import NyneCallbackResultToObjectStorageOperator

with DAG("parsed", schedule=None):
    tasks = [
        NyneSubmitInteractionsOperator(task_id="submit", username="nasa", interaction_type="followers"),
        NyneInteractionsSensor(task_id="sense", request_id="r"),
        NyneInteractionsToObjectStorageOperator(task_id="land", request_id="r", path="file:///tmp/a.jsonl"),
        NyneCallbackResultToObjectStorageOperator(task_id="cb", request_id="r", path="file:///tmp/b.jsonl"),
    ]
print(json.dumps({t.task_id: t.deferrable for t in tasks}))
"""


def _parse_in(home: Path, env_value: str | None) -> dict[str, bool]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"})
    if env_value is not None:
        env[ENV] = env_value
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, cwd=home, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    ("cfg_line", "env_value", "expected"),
    [
        # What Airflow writes into every new airflow.cfg: not the administrator's choice.
        pytest.param(None, None, True, id="generated-cfg-false-keeps-the-triggerer"),
        pytest.param("default_deferrable = True", None, True, id="cfg-true"),
        pytest.param(None, "False", False, id="generated-cfg-and-env-false"),
        pytest.param("default_deferrable = True", "False", False, id="env-false-wins-over-cfg"),
    ],
)
def test_a_real_airflow_cfg_is_read_when_the_dag_is_parsed(
    tmp_path: Path, cfg_line: str | None, env_value: str | None, expected: bool
) -> None:
    home = tmp_path / "airflow"
    home.mkdir()
    # Airflow writes the file the way every first command of a new deployment does.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from airflow.configuration import write_default_airflow_configuration_if_needed as w; w()",
        ],
        env={**env, "AIRFLOW_HOME": str(home)},
        cwd=home,
        check=True,
        capture_output=True,
        timeout=180,
    )
    cfg = home / "airflow.cfg"
    text = cfg.read_text()
    assert "\ndefault_deferrable = false\n" in text.lower()
    if cfg_line is not None:
        cfg.write_text(text.replace("default_deferrable = false", cfg_line))
    assert _parse_in(home, env_value) == {
        "submit": expected,
        "sense": expected,
        "land": expected,
        "cb": expected,
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty-render"),
        pytest.param("None", None, id="unset-param-render"),
        pytest.param(0, 0, id="zero"),
        pytest.param(15, 15, id="int"),
        pytest.param("15", 15, id="rendered-string"),
        pytest.param(" 30 ", 30, id="padded-string"),
        pytest.param(12.0, 12, id="whole-float"),
    ],
)
def test_credit_amounts_read(value: Any, expected: int | None) -> None:
    assert credits_argument(value, name="credit_budget") == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(-3, id="negative"),
        pytest.param("-3", id="negative-string"),
        pytest.param(2.5, id="fraction"),
        pytest.param("lots", id="word"),
        pytest.param(True, id="bool"),
        pytest.param([15], id="list"),
    ],
)
def test_bad_credit_amounts_name_the_argument_and_the_fix(value: Any) -> None:
    with pytest.raises(ValueError, match=r"credit_budget must be a whole number of credits, 0 or more"):
        check_credits_argument(value, name="credit_budget")


def test_a_template_is_checked_once_rendered() -> None:
    template = "{{ params.budget }}"
    assert is_templated(template)
    assert check_credits_argument(template, name="credit_budget") == template
    with pytest.raises(ValueError, match="template that was not rendered"):
        credits_argument(template, name="credit_budget")


@pytest.mark.parametrize(
    ("text", "start"),
    [
        ("s3://bucket/nasa.jsonl", -1),
        ("s3://bucket/{{ ds }}/x", 12),
        ("{% if params.x %}a{% endif %}", 0),
        ("a/{# note #}b/{{ ds }}", 2),
        ("brace { only } here", -1),
    ],
)
def test_one_rule_says_where_a_template_starts(text: str, start: int) -> None:
    # The operators' parse-time checks and the transfer's asset URI use the same rule.
    assert template_start(text) == start
    assert is_templated(text) is (start >= 0)
    assert not is_templated(12)
