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
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
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
from privrec.events.schema import (
    EVENT_COLUMNS,
    MAX_ID_LEN,
    MAX_QUERY_LEN,
    MIN_TIMESTAMP,
    Event,
    coerce_timestamp,
    describe_error,
    max_timestamp,
)
from privrec.privacy.pseudonym import Pseudonymiser

__all__ = ["EVENT_COLUMNS", "INPUT_FIELDS", "Gate", "GateResult", "Reject", "empty_events"]

logger = logging.getLogger(__name__)

# The fields an input record may carry (the Event model's fields).
INPUT_FIELDS: tuple[str, ...] = tuple(Event.model_fields)

# numpy's object dtype: a column of arbitrary Python values (compared as a dtype, not a type).
_OBJECT = np.dtype(object)
# None as a 0-d object array, the "no value" of np.where over object arrays.
_NONE = np.array(None, dtype=object)

# Domain-separation prefixes of the keyed derivations (never change: stored ids depend on them).
_EVENT_PREFIX = "\x1fevent"
_CONTENT_PREFIX = "\x1fevent-content"
_SESSION_PREFIX = "\x1fsession\x1f"

# Plain decimal numbers: the only text the bulk path converts to float itself. Python's float()
# and pydantic accept more spellings (whitespace, "inf", "1_0"); those go to pydantic.
_DECIMAL = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
# Larger integers may round differently on the way to float; let pydantic decide.
_EXACT_INT = 2**53
# Any valid row with these values, used to validate one field on its own with `Event`.
_FILLER = {"user": "u", "item": "i", "type": "view", "timestamp": MIN_TIMESTAMP + 1.0}


@dataclass(frozen=True)
class Reject:
    """A row the gate refused.

    Attributes:
        line: 1-based line (or record / row) number in the source.
        reason: the fields and their problems; never a raw id or any raw input value.
        user: the pseudonym of the row's user when the user field itself was valid, else None.
    """

    line: int
    reason: str
    user: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (one line of a rejects file)."""
        return {"line": int(self.line), "reason": self.reason, "user": self.user}


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


def empty_events() -> pd.DataFrame:
    """An empty gated-event frame with the right columns and dtypes."""
    return pd.DataFrame(
        {
            "event_id": pd.Series([], dtype="str"),
            "user": pd.Series([], dtype="str"),
            "item": pd.Series([], dtype="str"),
            "type": pd.Series([], dtype="str"),
            "ts": pd.Series([], dtype=np.float64),
            "rating": pd.Series([], dtype=np.float64),
            "query": pd.Series([], dtype=object),
            "session": pd.Series([], dtype=object),
        }
    )


def _is_null(v: Any) -> bool:
    return v is None or v is pd.NA or v is pd.NaT or (isinstance(v, float) and v != v)


def _is_text_dtype(dt: Any) -> bool:
    if isinstance(dt, pd.StringDtype):
        return True
    return isinstance(dt, pd.ArrowDtype) and (
        pa.types.is_string(dt.pyarrow_dtype) or pa.types.is_large_string(dt.pyarrow_dtype)
    )


def _null_text(n: int) -> pd.Series:
    """n missing values as a str Series (built by Arrow: far cheaper than from Python Nones)."""
    return pd.Series(pa.nulls(n, pa.string()).to_pandas(), dtype="str")


def _types(arr: np.ndarray) -> np.ndarray:
    """The exact type of each element of an object array (a C-level loop, no Python frames)."""
    return np.fromiter(map(type, arr), dtype=object, count=len(arr))


def _is(types: np.ndarray, t: type) -> np.ndarray:
    """Boolean mask of the elements of `types` (from `_types`) that are exactly `t`."""
    return np.equal(types, np.array(t, dtype=object))


def _as_str_series(values: np.ndarray) -> tuple[pd.Series, np.ndarray]:
    """Object array of str/None -> str Series; strings that are not valid Unicode become bad."""
    try:
        return pd.Series(values, dtype="str"), np.ones(len(values), dtype=bool)
    except (UnicodeEncodeError, pa.ArrowException, TypeError, ValueError):
        # Lone surrogates (e.g. from a JSON "\ud800" escape) cannot be stored; pydantic decides.
        good = np.ones(len(values), dtype=bool)
        for i, v in enumerate(values):
            if v is not None:
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    good[i] = False
        values = np.where(good, values, _NONE)
        return pd.Series(values, dtype="str"), good


def _text(
    col: pd.Series | None, n: int, *, allow_int: bool, min_len: int, max_len: int
) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Check a text field column-wise.

    Returns:
        (values, ok, present): values as a str Series (NA where absent or unusable); ok where
        the value is present and certainly valid as given; present where it is not null.
    """
    if col is None:
        return _null_text(n), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    dt = col.dtype
    if isinstance(dt, pd.CategoricalDtype):
        col = col.astype(object)
        dt = col.dtype
    present = col.notna().to_numpy(dtype=bool)
    typed = present.copy()
    if _is_text_dtype(dt):
        s = col.astype("str")
    elif pd.api.types.is_bool_dtype(dt) or pd.api.types.is_float_dtype(dt):
        s = _null_text(n)  # floats and booleans are never ids (pydantic agrees)
        typed[:] = False
    elif pd.api.types.is_integer_dtype(dt):
        s = col.astype("str") if allow_int else _null_text(n)
        typed &= allow_int
    elif dt == _OBJECT:
        arr = col.to_numpy(dtype=object)
        types = _types(arr)
        is_str = _is(types, str)  # exactly str; subclasses go to pydantic
        vals = np.where(is_str, arr, _NONE)
        typed &= is_str
        if allow_int:
            # Python ints only: pydantic's id validator turns int into text, not numpy ints.
            is_int = _is(types, int)
            for i in np.flatnonzero(is_int):
                vals[i] = str(arr[i])
            typed |= is_int
        s, good = _as_str_series(vals)
        typed &= good
    else:
        s = _null_text(n)
        typed[:] = False
    s = s.reset_index(drop=True)
    arr = pa.array(s, type=pa.string())
    # Only values that need no stripping take the fast path; whitespace rules are pydantic's.
    unchanged = pc.fill_null(pc.equal(pc.utf8_trim_whitespace(arr), arr), False).to_numpy(
        zero_copy_only=False
    )
    length = (
        pc.utf8_length(arr).to_numpy(zero_copy_only=False).astype(np.float64)
    )  # code points, as pydantic counts
    with np.errstate(invalid="ignore"):
        ok = typed & unchanged & (length >= min_len) & (length <= max_len)
    return s, ok, present


def _float_text(s: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Plain decimal text -> float64; returns (values, parsed mask). Other text stays NaN."""
    arr = pa.array(s.astype("str"), type=pa.string())
    plain = pc.fill_null(pc.match_substring_regex(arr, "^" + _DECIMAL + "$"), False).to_numpy(
        zero_copy_only=False
    )
    out = np.full(len(arr), np.nan)
    if plain.any():
        sub = arr.filter(pa.array(plain))
        try:
            vals = pc.cast(sub, pa.float64()).to_numpy(zero_copy_only=False)
        except (
            pa.ArrowInvalid
        ):  # a spelling Arrow's parser refuses: let pandas (or pydantic) decide
            vals = pd.to_numeric(
                pd.Series(sub.to_pylist(), dtype=object), errors="coerce"
            ).to_numpy(dtype=np.float64)
        out[plain] = vals
    return out, plain & ~np.isnan(out)


def _py_number(v: Any) -> float | None:
    """A Python int/float as pydantic would take it, or None when pydantic must decide."""
    t = type(v)
    if t is float:
        return v
    if t is int and -_EXACT_INT <= v <= _EXACT_INT:
        return float(v)
    return None


def _object_numbers(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An object array's Python ints and floats as float64 (NaN elsewhere): (values, mask)."""
    types = _types(arr)
    num = _is(types, int) | _is(types, float)
    out = np.full(len(arr), np.nan)
    if num.any():
        try:
            out[num] = arr[num].astype(np.float64)  # the same rounding as float(v)
        except OverflowError:  # an int beyond float range somewhere: one by one
            for i in np.flatnonzero(num):
                try:
                    out[i] = float(arr[i])
                except OverflowError:
                    num[i] = False
    return out, num


def _py_timestamp(v: Any) -> float | None:
    try:
        r = coerce_timestamp(v)
    except (ValueError, OverflowError):
        return None
    return _py_number(r)


def _timestamps(col: pd.Series | None, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check the timestamp column; returns (seconds, ok, present)."""
    if col is None:
        return np.full(n, np.nan), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    dt = col.dtype
    present = col.notna().to_numpy(dtype=bool)
    ts = np.full(n, np.nan)
    if pd.api.types.is_bool_dtype(dt):
        pass
    elif pd.api.types.is_integer_dtype(dt) or pd.api.types.is_float_dtype(dt):
        # Huge values lose precision here but are far out of range, so pydantic gets them anyway.
        ts = col.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        if _is_text_dtype(dt):
            ts, parsed = _float_text(col)
        elif dt == _OBJECT:
            arr = col.to_numpy(dtype=object)
            ts, parsed = _object_numbers(arr)
            is_str = _is(_types(arr), str)
            if is_str.any():
                texts, _ = _as_str_series(arr[is_str])
                ts[is_str], parsed[is_str] = _float_text(texts)
        else:
            parsed = np.zeros(n, dtype=bool)
        rest = present & ~parsed
        if rest.any():
            # Everything else (ISO text, datetimes, mixed objects) is parsed by the schema's own
            # function, once per distinct value.
            idx = np.flatnonzero(rest)
            vals = col.iloc[idx].tolist()
            cache: dict[Any, float | None] = {}
            for i, v in zip(idx, vals, strict=True):
                key = (type(v), v)  # the type too: True == 1 but pydantic refuses booleans
                try:
                    r = cache[key] if key in cache else cache.setdefault(key, _py_timestamp(v))
                except TypeError:  # unhashable (a list or dict): not a timestamp
                    r = None
                if r is not None:
                    ts[i] = r
    with np.errstate(invalid="ignore"):
        ok = present & (ts >= MIN_TIMESTAMP) & (ts <= max_timestamp())
    return ts, ok, present


def _ratings(col: pd.Series | None, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check the rating column's type; returns (values, ok-as-number, present)."""
    if col is None:
        return np.full(n, np.nan), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    dt = col.dtype
    present = col.notna().to_numpy(dtype=bool)
    r = np.full(n, np.nan)
    if pd.api.types.is_bool_dtype(dt):
        pass  # pydantic takes True as 1.0; let it decide
    elif pd.api.types.is_integer_dtype(dt) or pd.api.types.is_float_dtype(dt):
        r = col.to_numpy(dtype=np.float64, na_value=np.nan)
    elif _is_text_dtype(dt):
        r, _ = _float_text(col)
    elif dt == _OBJECT:
        arr = col.to_numpy(dtype=object)
        r, _ = _object_numbers(arr)
        is_str = _is(_types(arr), str)
        if is_str.any():
            texts, _ = _as_str_series(arr[is_str])
            r[is_str], _ = _float_text(texts)
    ok = present & ~np.isnan(r)
    return r, ok, present


class ArrivalRateLimiter:
    """At most `limit` accepted rows per pseudonym in any `window` seconds of arrival time.

    The gate's own flood limit looks at one batch and at the events' timestamps (a file may
    rightly hold a year of one shopper's history in one batch). A live service also needs the
    rate at which rows arrive, whatever timestamps they claim, across requests: a bot sending one
    event per request gets cut off too. Memory holds only pseudonyms seen within the window.
    Thread-safe.
    """

    def __init__(
        self, limit: int, *, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1:
            raise ConfigError(
                "max_events_per_user_per_minute: must be at least 1 (or None for no limit)"
            )
        self.limit = int(limit)
        self.window = float(window)
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def admit(self, users: Sequence[str] | np.ndarray) -> np.ndarray:
        """Which of these rows (in order, all arriving now) stay within their user's limit."""
        codes, uniq = pd.factorize(np.asarray(users, dtype=object))
        rank = (
            pd.Series(codes).groupby(codes).cumcount().to_numpy()
        )  # i-th row of its user in this batch
        counts = np.bincount(codes, minlength=len(uniq))
        room = np.empty(len(uniq), dtype=np.int64)
        with self._lock:
            now = self._clock()
            horizon = now - self.window
            if now >= self._next_sweep:  # forget users idle for a whole window
                self._seen = {u: q for u, q in self._seen.items() if q and q[-1] > horizon}
                self._next_sweep = now + self.window
            for c, u in enumerate(uniq):  # per user, not per row: a batch holds few users' floods
                q = self._seen.setdefault(str(u), deque())
                while q and q[0] <= horizon:
                    q.popleft()
                room[c] = max(self.limit - len(q), 0)
                q.extend([now] * int(min(room[c], counts[c])))
        return rank < room[codes]


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
            if isinstance(rec, Event):
                raw: dict[str, Any] = rec.model_dump(mode="json", exclude_none=True)
            elif isinstance(rec, Mapping):
                raw = {str(key): v for key, v in rec.items() if not _is_null(v)}
            else:
                rejects.append(Reject(line, "record: is not a mapping of field names to values"))
                continue
            checked = self._validate(raw, line)
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

        user, ok_user, _ = _text(get("user"), n, allow_int=True, min_len=1, max_len=MAX_ID_LEN)
        item, ok_item, _ = _text(get("item"), n, allow_int=True, min_len=1, max_len=MAX_ID_LEN)
        etype, ok_type, _ = _text(get("type"), n, allow_int=False, min_len=1, max_len=MAX_ID_LEN)
        ok_type &= etype.isin(EVENT_TYPES).to_numpy(dtype=bool)
        ts, ok_ts, _ = _timestamps(get("timestamp"), n)
        rating, ok_rating, has_rating = _ratings(get("rating"), n)
        query, ok_query, has_query = _text(
            get("query"), n, allow_int=False, min_len=0, max_len=MAX_QUERY_LEN
        )
        session, ok_session, has_session = _text(
            get("session"), n, allow_int=True, min_len=0, max_len=MAX_ID_LEN
        )
        given, ok_given, has_given = _text(
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
        for c in df.columns:
            if c not in INPUT_FIELDS:
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
                raw = {c: v[j] for c, v in values.items() if not _is_null(v[j])}
                checked = self._validate(raw, int(lines[i]))
                if isinstance(checked, Reject):
                    rejects.append(checked)
                else:
                    fixed_idx.append(int(i))
                    fixed.append(checked)
            if fixed:
                ok[fixed_idx] = True
                f = _events_to_clean(fixed)
                user, item, etype, query, session, given = (
                    _put(s, fixed_idx, f[c].to_pylist())
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
    def _validate(self, raw: dict[str, Any], line: int) -> Event | Reject:
        """Validate one record with pydantic; a Reject names the fields and never the values."""
        try:
            return Event.model_validate(raw, context=self._context)
        except PydValidationError as err:
            return self._reject(line, raw, err)
        except (
            TypeError,
            ValueError,
            OverflowError,
        ) as err:  # e.g. a timestamp too large for a datetime
            return Reject(line, f"record: could not be validated ({type(err).__name__})", None)

    def _reject(self, line: int, raw: Mapping[str, Any], err: PydValidationError) -> Reject:
        reason = describe_error(err)
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
        codes, uniq = pd.factorize(users)
        counts = np.bincount(codes, minlength=len(uniq))
        heavy = np.flatnonzero(counts > limit)
        if heavy.size == 0:  # the usual case: nobody has enough rows to flood
            return accepted, lines, rejects
        ts = accepted["ts"].to_numpy(np.float64)
        excess = np.zeros(len(accepted), dtype=bool)
        for c in heavy:
            rows = np.flatnonzero(codes == c)
            rows = rows[np.argsort(ts[rows], kind="stable")]  # by time, ties in input order
            t = ts[rows]
            # rows of this user in (t - 60, t] that come before this one
            before = np.arange(len(rows)) - np.searchsorted(t, t - 60.0, side="right")
            excess[rows[before >= limit]] = True
        n = int(excess.sum())
        logger.info(
            "gate flood_rejected=%d users=%d limit_per_minute=%d", n, int(heavy.size), limit
        )
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


def _put(s: pd.Series, idx: list[int], values: list[str | None]) -> pd.Series:
    """`s` with the rows at `idx` replaced (for the rows pydantic accepted)."""
    out = s.astype(object).copy()
    out.iloc[idx] = values
    return out.astype("str")


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
