"""The privacy gate: validate, pseudonymise and minimise events before anything stores them.

Every event enters privrec here, whether it comes from the HTTP API, a file or a dataset loader.
The gate checks the rules of `privrec.events.schema.Event`, replaces the raw user id by its keyed
pseudonym, pseudonymises the session id, derives a keyed idempotency key (`event_id`) and drops
the search text unless the settings keep it. Raw ids exist only in memory inside this module.

Two paths, one set of rules:
- `Gate.process_records` validates Python mappings one by one with pydantic.
- `Gate.process_frame` checks the same rules column-wise (numpy / pandas / pyarrow), which is
  what makes bulk ingestion fast. It is conservative: anything unusual (whitespace to strip,
  a numeric id given as a float, a timestamp that is neither a plain number nor text) is sent
  to pydantic, and every row the bulk check rejects is re-validated by `Event` to get its exact
  message. If pydantic accepts such a row, the row is accepted with pydantic's values: pydantic
  is the authority. A randomized test checks that both paths agree on messy rows.

A null value (None, NaN, NA) in a record or frame means the field is absent.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError as PydValidationError

from privrec.core.errors import ConfigError, ValidationError
from privrec.core.settings import Settings
from privrec.core.types import EVENT_TYPES
from privrec.events.columns import (
    empty_events,
    is_null,
    put_rows,
    rating_column,
    text_column,
    timestamp_column,
)
from privrec.events.limits import ArrivalRateLimiter, flood_excess
from privrec.events.rejects import Reject
from privrec.events.schema import (
    EVENT_COLUMNS,
    MAX_ID_LEN,
    MAX_QUERY_LEN,
    MIN_TIMESTAMP,
    Event,
    describe_error,
)
from privrec.privacy.pseudonym import Pseudonymiser

__all__ = [
    "EVENT_COLUMNS",
    "INPUT_FIELDS",
    "ArrivalRateLimiter",
    "Gate",
    "GateResult",
    "Reject",
    "empty_events",
]

logger = logging.getLogger(__name__)

# The fields an input record may carry (the Event model's fields).
INPUT_FIELDS: tuple[str, ...] = tuple(Event.model_fields)


# Domain-separation prefixes of the keyed derivations (never change: stored ids depend on them).
_EVENT_PREFIX = "\x1fevent"
_CONTENT_PREFIX = "\x1fevent-content"
_SESSION_PREFIX = "\x1fsession\x1f"

_KNOWN = frozenset(INPUT_FIELDS)

# Any valid row with these values, used to validate one field on its own with `Event`.
_FILLER = {"user": "u", "item": "i", "type": "view", "timestamp": MIN_TIMESTAMP + 1.0}


@dataclass
class GateResult:
    """What the gate let through and what it refused.

    Attributes:
        accepted: gated events, one row each, columns EVENT_COLUMNS (see `empty_events`).
        rejects: refused rows, in input order.
        read: rows looked at.
        duplicates: rows dropped because an earlier row of the same input had the same event_id.
    """

    accepted: pd.DataFrame
    rejects: list[Reject] = field(default_factory=list)
    read: int = 0
    duplicates: int = 0


class Gate:
    """The privacy gate.

    Args:
        pseudonymiser: maps raw user ids to pseudonyms (and derives event / session ids).
        rating_min / rating_max: the accepted rating scale.
        keep_query_text: keep search query text (minimisation drops it by default).
        max_line_bytes: file lines longer than this are rejected without being parsed (used by
            `privrec.events.ingest`).
        max_events_per_user_per_minute: flood limit per pseudonym within one input batch: a row
            is rejected when the same user already has this many rows in the 60 seconds up to
            its timestamp (earlier rows first; rejected rows still count, so a sustained flood
            stays cut off). None: no limit.

    Attribute `arrivals` (None by default): an `ArrivalRateLimiter` that a long-lived gate (the
    server's) sets to limit each pseudonym's accepted rows per minute of arrival across batches.
    """

    def __init__(
        self,
        pseudonymiser: Pseudonymiser,
        *,
        rating_min: float = 1.0,
        rating_max: float = 5.0,
        keep_query_text: bool = False,
        max_line_bytes: int = 1_000_000,
        max_events_per_user_per_minute: int | None = None,
    ) -> None:
        if not rating_min <= rating_max:
            raise ConfigError(
                f"rating_min: {rating_min} is above rating_max {rating_max}; swap them"
            )
        if max_line_bytes < 1:
            raise ConfigError("max_line_bytes: must be positive")
        self.pseudonymiser = pseudonymiser
        self.rating_min = float(rating_min)
        self.rating_max = float(rating_max)
        self.keep_query_text = bool(keep_query_text)
        self.max_line_bytes = int(max_line_bytes)
        if max_events_per_user_per_minute is not None and max_events_per_user_per_minute < 1:
            raise ConfigError(
                "max_events_per_user_per_minute: must be at least 1 (or None for no limit)"
            )
        self.max_events_per_minute = max_events_per_user_per_minute
        self.arrivals: ArrivalRateLimiter | None = None
        self._context = {"rating_min": self.rating_min, "rating_max": self.rating_max}

    @classmethod
    def from_settings(cls, settings: Settings, pseudonymiser: Pseudonymiser) -> Gate:
        """A gate configured by the settings' rating scale, query policy and line limit."""
        return cls(
            pseudonymiser,
            rating_min=settings.rating_min,
            rating_max=settings.rating_max,
            keep_query_text=settings.keep_query_text,
            max_line_bytes=settings.max_line_bytes,
            max_events_per_user_per_minute=settings.max_events_per_user_per_minute,
        )

    # ---- the two entry points ------------------------------------------------------------
    def process_records(
        self,
        records: Iterable[Mapping[str, Any] | Event],
        *,
        first_line: int = 1,
        lines: Sequence[int] | None = None,
    ) -> GateResult:
        """Validate Python records one by one with pydantic, then pseudonymise and minimise.

        Args:
            records: mappings of field name to value (or `Event` objects).
            first_line: the number of the first record in reject reports.
            lines: explicit numbers per record (overrides `first_line`).
        """
        events: list[Event] = []
        ev_lines: list[int] = []
        rejects: list[Reject] = []
        read = 0
        for k, rec in enumerate(records):
            read += 1
            line = int(lines[k]) if lines is not None else first_line + k
            positions: dict[str, str] | None = None
            if isinstance(rec, Event):
                raw: dict[str, Any] = rec.model_dump(mode="json", exclude_none=True)
            elif isinstance(rec, Mapping):
                raw = {str(key): v for key, v in rec.items() if not is_null(v)}
                if not raw.keys() <= _KNOWN:
                    positions = _positions(str(key) for key in rec)
            else:
                rejects.append(Reject(line, "record: is not a mapping of field names to values"))
                continue
            checked = self._validate(raw, line, columns=positions)
            if isinstance(checked, Reject):
                rejects.append(checked)
            else:
                events.append(checked)
                ev_lines.append(line)
        clean = _events_to_clean(events)
        return self._finalise(clean, np.asarray(ev_lines, dtype=np.int64), rejects, read)

    def process_frame(
        self, df: pd.DataFrame, *, line_numbers: Sequence[int] | np.ndarray | None = None
    ) -> GateResult:
        """The fast bulk path: check a raw frame column-wise, then pseudonymise and minimise.

        Args:
            df: raw events, columns named like `Event`'s fields (user, item, type, timestamp,
                optional rating, query, session, event_id). Any other non-null column rejects
                its row, as in `Event`.
            line_numbers: source line number of each row (default 1..n).

        Raises:
            ValidationError: the frame's shape itself is wrong (duplicate column names,
                line_numbers of another length).
        """
        n = len(df)
        lines = (
            np.arange(1, n + 1, dtype=np.int64)
            if line_numbers is None
            else np.asarray(line_numbers, dtype=np.int64)
        )
        if lines.shape != (n,):
            raise ValidationError(
                "line_numbers", f"has {lines.size} entries for {n} rows; give one per row"
            )
        if df.columns.has_duplicates:
            raise ValidationError(
                "columns", "a column name appears twice; rename or drop the duplicate"
            )
        if n == 0:
            return GateResult(empty_events(), [], 0, 0)
        df = df.reset_index(drop=True)
        df.columns = [str(c) for c in df.columns]
        get = df.get

        user, ok_user, _ = text_column(
            get("user"), n, allow_int=True, min_len=1, max_len=MAX_ID_LEN
        )
        item, ok_item, _ = text_column(
            get("item"), n, allow_int=True, min_len=1, max_len=MAX_ID_LEN
        )
        etype, ok_type, _ = text_column(
            get("type"), n, allow_int=False, min_len=1, max_len=MAX_ID_LEN
        )
        ok_type &= etype.isin(EVENT_TYPES).to_numpy(dtype=bool)
        ts, ok_ts, _ = timestamp_column(get("timestamp"), n)
        rating, ok_rating, has_rating = rating_column(get("rating"), n)
        query, ok_query, has_query = text_column(
            get("query"), n, allow_int=False, min_len=0, max_len=MAX_QUERY_LEN
        )
        session, ok_session, has_session = text_column(
            get("session"), n, allow_int=True, min_len=0, max_len=MAX_ID_LEN
        )
        given, ok_given, has_given = text_column(
            get("event_id"), n, allow_int=True, min_len=1, max_len=MAX_ID_LEN
        )

        ok = ok_user & ok_item & ok_type & ok_ts
        is_rating = (etype == "rating").to_numpy(dtype=bool, na_value=False)
        with np.errstate(invalid="ignore"):
            in_scale = (rating >= self.rating_min) & (rating <= self.rating_max)
        ok &= np.where(has_rating, ok_rating & in_scale, ~is_rating)
        ok &= ok_query | ~has_query
        ok &= ok_session | ~has_session
        ok &= ok_given | ~has_given
        # an unknown column is named by its position: its name may be a value (no header row)
        unknown = _positions(df.columns)
        for c in unknown:
            ok &= df[c].isna().to_numpy(dtype=bool)

        rejects: list[Reject] = []
        bad = np.flatnonzero(~ok)
        if bad.size:
            # Pydantic is the authority: re-validate every row the bulk check refused.
            sub = df.iloc[bad]
            values = {c: sub[c].tolist() for c in sub.columns}
            fixed_idx: list[int] = []
            fixed: list[Event] = []
            for j, i in enumerate(bad):
                raw = {c: v[j] for c, v in values.items() if not is_null(v[j])}
                checked = self._validate(raw, int(lines[i]), columns=unknown)
                if isinstance(checked, Reject):
                    rejects.append(checked)
                else:
                    fixed_idx.append(int(i))
                    fixed.append(checked)
            if fixed:
                ok[fixed_idx] = True
                f = _events_to_clean(fixed)
                user, item, etype, query, session, given = (
                    put_rows(s, fixed_idx, f[c].to_pylist())
                    for s, c in (
                        (user, "user"),
                        (item, "item"),
                        (etype, "type"),
                        (query, "query"),
                        (session, "session"),
                        (given, "event_id"),
                    )
                )
                ts[fixed_idx] = f["ts"].to_numpy()
                rating[fixed_idx] = f["rating"].to_numpy()
            if rejects:
                logger.debug("gate rejected=%d of=%d", len(rejects), n)

        clean = pa.table(
            {
                "user": pa.array(user, type=pa.string()),
                "item": pa.array(item, type=pa.string()),
                "type": pa.array(etype, type=pa.string()),
                "ts": pa.array(ts, type=pa.float64()),
                "rating": pa.array(rating, type=pa.float64()),
                "query": pa.array(query, type=pa.string()),
                "session": pa.array(session, type=pa.string()),
                "event_id": pa.array(given, type=pa.string()),
            }
        )
        keep = ok
        if not keep.all():
            clean = clean.filter(pa.array(keep))
        return self._finalise(clean, lines[keep], rejects, n)

    # ---- helpers ---------------------------------------------------------------------------
    def _validate(
        self, raw: dict[str, Any], line: int, *, columns: Mapping[str, str] | None = None
    ) -> Event | Reject:
        """Validate one record with pydantic; a Reject names the fields and never the values.

        `columns` names unknown fields of tabular input by position (see `describe_error`).
        """
        try:
            return Event.model_validate(raw, context=self._context)
        except PydValidationError as err:
            return self._reject(line, raw, err, columns)
        except (
            TypeError,
            ValueError,
            OverflowError,
        ) as err:  # e.g. a timestamp too large for a datetime
            return Reject(line, f"record: could not be validated ({type(err).__name__})", None)

    def _reject(
        self,
        line: int,
        raw: Mapping[str, Any],
        err: PydValidationError,
        columns: Mapping[str, str] | None = None,
    ) -> Reject:
        reason = describe_error(err, columns=columns)
        pseudonym = None
        raw_user = raw.get("user")
        if raw_user is not None and not any(e["loc"][:1] == ("user",) for e in err.errors()):
            try:
                user = Event.model_validate({**_FILLER, "user": raw_user}).user
            except PydValidationError:
                user = None
            if user is not None:
                pseudonym = self.pseudonymiser.pseudonymise(user)
                if len(user) >= 4 and user in reason:  # belt and braces: never echo the raw id
                    reason = reason.replace(user, "[redacted]")
        return Reject(line, reason, pseudonym)

    def _finalise(
        self, clean: pa.Table, lines: np.ndarray, rejects: list[Reject], read: int
    ) -> GateResult:
        """Pseudonymise, derive ids, minimise and de-duplicate validated rows.

        `clean` holds the validated raw values (Arrow columns like `_events_to_clean`). Distinct
        users and sessions are keyed once each; the only per-row Python objects made are the
        event-id messages.
        """
        n = clean.num_rows
        if n == 0:
            return GateResult(empty_events(), rejects, read, 0)
        col = {name: clean[name].combine_chunks() for name in clean.column_names}
        p = self.pseudonymiser
        user = col["user"]
        enc = pc.dictionary_encode(user)
        pseudonyms = pc.take(
            pa.array(p.pseudonymise_many(enc.dictionary.to_pylist()), type=pa.string()), enc.indices
        )

        # An empty session id carries nothing; store it as absent.
        session = pc.if_else(
            pc.equal(col["session"], ""), pa.scalar(None, pa.string()), col["session"]
        )
        if session.null_count < n:
            senc = pc.dictionary_encode(session)
            msgs = pc.binary_join_element_wise(pa.scalar(_SESSION_PREFIX), senc.dictionary, "")
            derived = pa.array(
                p.derive_many(pc.cast(msgs, pa.binary()).to_pylist()), type=pa.string()
            )
            sessions = pc.take(derived, senc.indices).to_numpy(zero_copy_only=False)
        else:
            sessions = np.full(n, None, dtype=object)

        ids = p.derive_many(self._id_messages(col))
        # id -> first row with it; a plain dict is cheaper here than Arrow's or pandas' hashing.
        first = dict(zip(reversed(ids), range(n - 1, -1, -1), strict=True))

        queries = (
            col["query"].to_numpy(zero_copy_only=False)
            if self.keep_query_text
            else np.full(n, None, dtype=object)
        )

        accepted = pd.DataFrame(
            {
                "event_id": pd.array(pa.array(ids, type=pa.string()), dtype="str"),
                "user": pd.array(pseudonyms, dtype="str"),
                "item": pd.array(col["item"], dtype="str"),
                "type": pd.array(col["type"], dtype="str"),
                "ts": col["ts"].to_numpy(),
                "rating": col["rating"].to_numpy(zero_copy_only=False),
                "query": pd.Series(queries, dtype=object),
                "session": pd.Series(sessions, dtype=object),
            }
        )
        duplicates = n - len(first)
        if duplicates:
            keep = np.zeros(n, dtype=bool)
            keep[np.fromiter(first.values(), dtype=np.int64, count=len(first))] = True
            accepted = accepted[keep].reset_index(drop=True)
            lines = lines[keep]
        lines = np.asarray(lines)
        if self.max_events_per_minute is not None and len(accepted):
            accepted, lines, rejects = self._flood_filter(accepted, lines, rejects)
        if self.arrivals is not None and len(accepted):
            accepted, rejects = self._arrival_filter(accepted, lines, rejects)
        return GateResult(accepted, rejects, read, duplicates)

    def _arrival_filter(
        self, accepted: pd.DataFrame, lines: np.ndarray, rejects: list[Reject]
    ) -> tuple[pd.DataFrame, list[Reject]]:
        """Reject the rows beyond `arrivals`' limit of their pseudonym (every other row is kept)."""
        assert self.arrivals is not None
        users = accepted["user"].to_numpy(dtype=object)
        ok = self.arrivals.admit(users)
        if ok.all():
            return accepted, rejects
        limit = self.arrivals.limit
        reason = (
            f"user: more than {limit} events arrived within 60 seconds from this user "
            "(setting max_events_per_user_per_minute); this row was not stored"
        )
        over = ~ok
        logger.info("gate arrival_rate_rejected=%d limit_per_minute=%d", int(over.sum()), limit)
        flood = [
            Reject(int(line), reason, str(u))
            for line, u in zip(lines[over].tolist(), users[over].tolist(), strict=True)
        ]
        return accepted[ok].reset_index(drop=True), sorted(rejects + flood, key=lambda r: r.line)

    def _flood_filter(
        self, accepted: pd.DataFrame, lines: np.ndarray, rejects: list[Reject]
    ) -> tuple[pd.DataFrame, np.ndarray, list[Reject]]:
        """Reject each row beyond `max_events_per_minute` rows of its user in a 60 s window.

        Only the flooding pseudonym's excess rows go; every other row of the batch is kept.
        """
        limit = int(self.max_events_per_minute or 0)
        users = accepted["user"].to_numpy(dtype=object)
        excess, heavy = flood_excess(users, accepted["ts"].to_numpy(np.float64), limit)
        if not heavy:
            return accepted, lines, rejects
        n = int(excess.sum())
        logger.info("gate flood_rejected=%d users=%d limit_per_minute=%d", n, heavy, limit)
        reason = (
            f"user: more than {limit} events within 60 seconds from this user "
            "(setting max_events_per_user_per_minute); this row was not stored"
        )
        flood = [
            Reject(int(line), reason, str(u))
            for line, u in zip(lines[excess].tolist(), users[excess].tolist(), strict=True)
        ]
        merged = sorted(rejects + flood, key=lambda r: r.line)
        return accepted[~excess].reset_index(drop=True), lines[~excess], merged

    @staticmethod
    def _id_messages(col: Mapping[str, pa.Array]) -> list[bytes]:
        """The messages whose keyed chain-HMAC is each event's stored event_id.

        Given ids: "\x1fevent\x1f" + raw user + "\x1f" + given id (so a raw id embedded in a
        shop's event id never reaches storage). Otherwise the event's content: raw user, item,
        type, timestamp (integer microseconds), session and query, under another prefix.
        """
        sep = "\x1f"
        user, given = col["user"], col["event_id"]
        micros = np.round(col["ts"].to_numpy() * 1e6).astype(np.int64)
        parts = [
            pa.scalar(_CONTENT_PREFIX),
            user,
            col["item"],
            col["type"],
            pc.cast(pa.array(micros), pa.string()),
            pc.fill_null(col["session"], ""),
            pc.fill_null(col["query"], ""),
        ]
        msgs = pc.binary_join_element_wise(*parts, sep)
        if given.null_count < len(given):
            by_given = pc.binary_join_element_wise(pa.scalar(_EVENT_PREFIX), user, given, sep)
            msgs = pc.if_else(pc.is_valid(given), by_given, msgs)
        return pc.cast(msgs, pa.binary()).to_pylist()


def _positions(names: Iterable[str]) -> dict[str, str]:
    """Unknown field names -> "field N" (1-based position), the only way a reason names them.

    A record's keys and a frame's columns give the same positions, so both paths word a reject
    alike; the name itself is never echoed, as it may be a value (a CSV file without a header).
    """
    return {n: f"field {i + 1}" for i, n in enumerate(names) if n not in _KNOWN}


def _events_to_clean(events: list[Event]) -> pa.Table:
    """Validated `Event`s as a clean table (raw user ids; the input of `Gate._finalise`)."""
    return pa.table(
        {
            "user": pa.array([e.user for e in events], type=pa.string()),
            "item": pa.array([e.item for e in events], type=pa.string()),
            "type": pa.array([e.type.value for e in events], type=pa.string()),
            "ts": pa.array([e.timestamp for e in events], type=pa.float64()),
            "rating": pa.array(
                [np.nan if e.rating is None else e.rating for e in events], type=pa.float64()
            ),
            "query": pa.array([e.query for e in events], type=pa.string()),
            "session": pa.array([e.session for e in events], type=pa.string()),
            "event_id": pa.array([e.event_id for e in events], type=pa.string()),
        }
    )
