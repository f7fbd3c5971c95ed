"""Version differences contained in ``airflow_provider_nyne._compat``."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pydantic
import pytest

from airflow_provider_nyne._compat import reschedule_context


class _TaskInstance(pydantic.BaseModel):
    """Like the Task SDK's task instance: a pydantic model whose method returns what the SDK gave."""

    answer: Any = None

    def get_first_reschedule_date(self, context: Any) -> Any:
        return self.answer


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        pytest.param(
            "2026-11-29T09:31:52.911313Z",
            datetime(2026, 11, 29, 9, 31, 52, 911313, tzinfo=timezone.utc),
            id="iso-string-from-old-sdk",
        ),
        pytest.param(
            "2026-11-29T09:31:52",
            datetime(2026, 11, 29, 9, 31, 52, tzinfo=timezone.utc),
            id="naive-string-is-utc",
        ),
        pytest.param(
            datetime(2026, 1, 2, tzinfo=timezone.utc),
            datetime(2026, 1, 2, tzinfo=timezone.utc),
            id="datetime-untouched",
        ),
        pytest.param(None, None, id="first-poke-none"),
    ],
)
def test_first_reschedule_date_is_a_datetime(answer: Any, expected: Any) -> None:
    ti = _TaskInstance(answer=answer)
    context = {"ti": ti, "run_id": "r"}
    fixed = reschedule_context(context)
    assert fixed["ti"].get_first_reschedule_date(fixed) == expected
    assert fixed["ti"].answer == answer  # everything else is the task instance's own
    assert fixed["run_id"] == "r"
    assert context["ti"] is ti  # the task instance itself is not changed


def test_context_without_task_instance_is_left_alone() -> None:
    assert reschedule_context({}) == {}
