"""The event schema, validated with pydantic.

`Event` is the source of truth for what a valid event is. The bulk ingestion path checks the
same rules column-wise for speed (see `privrec.events.gate`) and asks `Event` for the exact
message of every row it rejects, so both paths always agree.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from privrec.core.types import EventType

# 1990-01-01: before any e-commerce log we load (MovieLens starts in 1997).
MIN_TIMESTAMP = 631_152_000.0
# Events may not come from the future; one day of clock skew is tolerated.
MAX_FUTURE_SKEW_S = 86_400.0
MAX_ID_LEN = 256
MAX_QUERY_LEN = 1_000

# Columns of a gated event frame: the output of the privacy gate and what the event store holds.
EVENT_COLUMNS: tuple[str, ...] = (
    "event_id",
    "user",
    "item",
    "type",
    "ts",
    "rating",
    "query",
    "session",
)
# Columns of the item catalogue (public shop data, no personal data).
ITEM_COLUMNS: tuple[str, ...] = (
    "item",
    "title",
    "category",
    "brand",
    "price",
    "in_stock",
    "text",
    "image_url",  # an https URL of the product's picture (public catalogue data)
)
# Field names that producers often use instead of ours; an error names them with a hint. Any other
# unknown field name is never echoed (see describe_error): the first row of a CSV file without a
# header, or a key of a malformed record, may itself be a raw user id.
FIELD_ALIASES: dict[str, str] = {
    "ts": "timestamp",
    "time": "timestamp",
    "timestamp_ms": "timestamp",
    "datetime": "timestamp",
    "user_id": "user",
    "userid": "user",
    "customer_id": "user",
    "item_id": "item",
    "itemid": "item",
    "product_id": "item",
    "sku": "item",
    "event_type": "type",
    "behavior_type": "type",
    "behaviour_type": "type",
    "action": "type",
    "session_id": "session",
    "id": "event_id",
    "score": "rating",
    "search": "query",
    "category_id": "",
    "category": "",
    "price": "",
    "title": "",
}


def max_timestamp() -> float:
    """The latest timestamp accepted right now."""
    return time.time() + MAX_FUTURE_SKEW_S


def coerce_timestamp(v: Any) -> Any:
    """Turn a timestamp as given (Unix seconds, numeric or ISO-8601 text, datetime) into seconds.

    Values of other kinds are returned unchanged for pydantic's float validation. The bulk path
    of the gate calls this same function, so both paths parse text identically.

    Raises:
        ValueError: a boolean, or text that is neither a number nor an ISO-8601 date-time.
    """
    if isinstance(v, bool):
        raise ValueError("must be Unix seconds or an ISO-8601 date-time, not a boolean")
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
        try:
            v = datetime.fromisoformat(v)
        except ValueError:
            raise ValueError("must be Unix seconds or an ISO-8601 date-time") from None
    if isinstance(v, datetime):  # includes pandas.Timestamp; naive means UTC
        if v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        return v.timestamp()
    return v


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
        return coerce_timestamp(v)

    @field_validator("timestamp")
    @classmethod
    def _timestamp_in_range(cls, v: float) -> float:
        if v != v:  # NaN
            raise ValueError("is not a number")
        # The value itself is left out of messages: reasons never echo input (design.md).
        if v < MIN_TIMESTAMP:
            raise ValueError("is before 1990-01-01 (Unix seconds expected)")
        if v > max_timestamp():
            raise ValueError("is in the future (Unix seconds expected, not milliseconds?)")
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
            raise ValueError(f"rating: is outside the rating scale [{lo:g}, {hi:g}]")
        return self


def describe_error(exc: Exception, *, columns: Mapping[str, str] | None = None) -> str:
    """Turn a pydantic ValidationError into one line naming each field and its problem.

    The offending input values are left out on purpose: they may be raw user ids. So are the
    names of unknown fields (a name can be a value too), except the common aliases of
    FIELD_ALIASES, which are our own words.

    Args:
        exc: the error.
        columns: how to name an unknown field of tabular input instead (e.g. "column 3").
    """
    from pydantic import ValidationError as PydValidationError

    if not isinstance(exc, PydValidationError):
        return str(exc)
    parts = []
    unnamed_extra = 0
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = "is missing"
        elif err["type"] == "extra_forbidden":
            hint = FIELD_ALIASES.get(loc.lower())
            if hint is None:
                if columns is None or loc not in columns:
                    unnamed_extra += 1  # not echoed: it may be personal data (an id as a key)
                    continue
                loc = columns[loc]
                msg = "is not a known field"
            else:
                loc = loc.lower()  # the alias as we spell it, not as the input did
                msg = "is not a known field" + (f" (did you mean {hint}?)" if hint else "")
        elif err["type"] == "enum":
            msg = "is not one of " + ", ".join(t.value for t in EventType)
        if ":" in msg and not loc:
            parts.append(msg)
        else:
            parts.append(f"{loc}: {msg}" if loc else msg)
    if unnamed_extra:
        known = ", ".join(Event.model_fields)
        parts.append(f"{unnamed_extra} unknown field(s): not a known field; the fields are {known}")
    return "; ".join(parts)
