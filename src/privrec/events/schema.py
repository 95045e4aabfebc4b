"""The event schema, validated with pydantic.

`Event` is the source of truth for what a valid event is. The bulk ingestion path checks the
same rules column-wise for speed (see `privrec.events.gate`) and asks `Event` for the exact
message of every row it rejects, so both paths always agree.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from privrec.core.types import EventType

# 1990-01-01: before any e-commerce log we load (MovieLens starts in 1997).
MIN_TIMESTAMP = 631_152_000.0
# Events may not come from the future; one day of clock skew is tolerated.
MAX_FUTURE_SKEW_S = 86_400.0
MAX_ID_LEN = 256
MAX_QUERY_LEN = 1_000


def max_timestamp() -> float:
    """The latest timestamp accepted right now."""
    return time.time() + MAX_FUTURE_SKEW_S


class Event(BaseModel):
    """One behaviour event as it arrives at the door (raw user id, before pseudonymisation).

    Attributes:
        user: the shop's user id (never stored; replaced by its pseudonym at the gate).
        item: the shop's item id.
        type: one of view, search, cart, favorite, purchase, rating.
        timestamp: Unix seconds (int or float) or an ISO-8601 string.
        rating: the rating value, required for `rating` events, within the configured scale.
        query: search query text (optional).
        session: session id (optional; pseudonymised like the user).
        event_id: idempotency key; derived from the event's content when absent.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    user: str = Field(min_length=1, max_length=MAX_ID_LEN)
    item: str = Field(min_length=1, max_length=MAX_ID_LEN)
    type: EventType
    timestamp: float
    rating: float | None = None
    query: str | None = Field(default=None, max_length=MAX_QUERY_LEN)
    session: str | None = Field(default=None, max_length=MAX_ID_LEN)
    event_id: str | None = Field(default=None, min_length=1, max_length=MAX_ID_LEN)

    @field_validator("user", "item", "session", "event_id", mode="before")
    @classmethod
    def _ids_as_text(cls, v: Any) -> Any:
        # Numeric ids are common in exports (MovieLens, Taobao); accept them as text, never bools.
        if isinstance(v, bool):
            raise ValueError("must be a string or an integer id, not a boolean")
        if isinstance(v, int):
            return str(v)
        return v

    @field_validator("timestamp", mode="before")
    @classmethod
    def _parse_timestamp(cls, v: Any) -> Any:
        if isinstance(v, bool):
            raise ValueError("must be Unix seconds or an ISO-8601 date-time, not a boolean")
        if isinstance(v, str):
            try:
                return float(v)
            except ValueError:
                pass
            from datetime import datetime, timezone

            try:
                dt = datetime.fromisoformat(v)
            except ValueError:
                raise ValueError("must be Unix seconds or an ISO-8601 date-time") from None
            if dt.tzinfo is None:
                dt = dt.replace(tzinfo=timezone.utc)
            return dt.timestamp()
        return v

    @field_validator("timestamp")
    @classmethod
    def _timestamp_in_range(cls, v: float) -> float:
        if v != v:  # NaN
            raise ValueError("is not a number")
        if v < MIN_TIMESTAMP:
            raise ValueError(f"{v:.0f} is before 1990-01-01 (Unix seconds expected, not milliseconds?)")
        if v > max_timestamp():
            raise ValueError(f"{v:.0f} is in the future (Unix seconds expected, not milliseconds?)")
        return v

    @model_validator(mode="after")
    def _rating_rules(self, info: ValidationInfo) -> Event:
        lo, hi = 1.0, 5.0
        if info.context:
            lo = float(info.context.get("rating_min", lo))
            hi = float(info.context.get("rating_max", hi))
        if self.type is EventType.RATING and self.rating is None:
            raise ValueError("rating: is required for events of type 'rating'")
        if self.rating is not None and not (lo <= self.rating <= hi):
            raise ValueError(f"rating: {self.rating} is outside the rating scale [{lo}, {hi}]")
        return self


def describe_error(exc: Exception) -> str:
    """Turn a pydantic ValidationError into one line naming each field and its problem.

    The offending input values are left out on purpose: they may be raw user ids.
    """
    from pydantic import ValidationError as PydValidationError

    if not isinstance(exc, PydValidationError):
        return str(exc)
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is missing"
        elif err["type"] == "extra_forbidden":
            msg = "is not a known field"
        elif err["type"] == "enum":
            msg = "is not one of " + ", ".join(t.value for t in EventType)
        if ":" in msg and not loc:
            parts.append(msg)
        else:
            parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)
