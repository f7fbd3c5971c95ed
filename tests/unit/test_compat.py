"""Version differences contained in ``airflow_provider_nyne._compat``."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pydantic
import pytest

from airflow_provider_nyne._compat import fix_first_reschedule_date


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
    context = {"ti": ti}
    fix_first_reschedule_date(context)
    fix_first_reschedule_date(context)  # idempotent: wrapping twice changes nothing
    assert ti.get_first_reschedule_date(context) == expected


def test_context_without_task_instance_is_left_alone() -> None:
    fix_first_reschedule_date({})  # no error
