"""The event schema rejects bad input with messages that name the field and never the raw id."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from privrec.events.schema import Event, describe_error

GOOD = {"user": "alice-7781", "item": "sku-1", "type": "view", "timestamp": 1_600_000_000}


def _error(**changes: object) -> str:
    row = {**GOOD, **changes}
    row = {k: v for k, v in row.items() if v is not ...}
    with pytest.raises(ValidationError) as info:
        Event.model_validate(row, context={"rating_min": 1, "rating_max": 5})
    return describe_error(info.value)


def test_good_event_and_iso_timestamp() -> None:
    e = Event.model_validate({**GOOD, "timestamp": "2020-09-13T12:26:40+00:00"})
    assert e.timestamp == 1_600_000_000


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"type": "click"}, "type", "is not one of"),
        ({"item": ...}, "item", "is missing"),
        ({"timestamp": 1_600_000_000_000}, "timestamp", "future"),
        ({"timestamp": 12}, "timestamp", "before 1990"),
        ({"timestamp": "yesterday"}, "timestamp", "ISO-8601"),
        ({"type": "rating"}, "rating", "required"),
        ({"type": "rating", "rating": 9}, "rating", "outside the rating scale"),
        ({"colour": "red"}, "unknown field", "not a known field"),
        ({"user": ""}, "user", "at least 1"),
    ],
)
def test_bad_events_name_field_and_problem(changes: dict, field: str, problem: str) -> None:
    msg = _error(**changes)
    assert field in msg and problem in msg
    assert "alice-7781" not in msg
