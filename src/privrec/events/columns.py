"""Column-wise checks of raw event fields: the gate's fast bulk path (numpy / pandas / pyarrow).

Each check returns the values it could read plus masks of the rows that are certainly valid as
given and of the rows that hold a value at all. It is conservative: anything unusual (whitespace
to strip, a numeric id given as a float, a timestamp that is neither a plain number nor text) is
left for pydantic, which `privrec.events.gate.Gate` asks about every row refused here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from privrec.events.schema import MIN_TIMESTAMP, coerce_timestamp, max_timestamp

__all__ = [
    "empty_events",
    "is_null",
    "put_rows",
    "rating_column",
    "text_column",
    "timestamp_column",
]

# numpy's object dtype: a column of arbitrary Python values (compared as a dtype, not a type).
_OBJECT = np.dtype(object)
# None as a 0-d object array, the "no value" of np.where over object arrays.
_NONE = np.array(None, dtype=object)

# Plain decimal numbers: the only text the bulk path converts to float itself. Python's float()
# and pydantic accept more spellings (whitespace, "inf", "1_0"); those go to pydantic.
_DECIMAL = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
# Larger integers may round differently on the way to float; let pydantic decide.
_EXACT_INT = 2**53


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


def is_null(v: Any) -> bool:
    """Whether `v` means "absent" (None, NA, NaT or NaN)."""
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


def text_column(
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


def timestamp_column(col: pd.Series | None, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def rating_column(col: pd.Series | None, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


def put_rows(s: pd.Series, idx: list[int], values: list[str | None]) -> pd.Series:
    """`s` with the rows at `idx` replaced (for the rows pydantic accepted)."""
    out = s.astype(object).copy()
    out.iloc[idx] = values
    return out.astype("str")
