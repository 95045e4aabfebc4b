"""The embedded event store: gated events, the item catalogue and store metadata.

One encrypted DuckDB file, `<data_dir>/events.duckdb` (see `privrec.events.store_file` for the
encryption, the key and what compaction guarantees), holds the gated events (pseudonymous users
only), the item catalogue and a `meta` table (store format version, pseudonym key generation).
This module writes and reads events and items; `privrec.events.maintenance` deletes and re-keys
them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from privrec.core.errors import StoreError, ValidationError
from privrec.core.types import EVENT_TYPES
from privrec.events.maintenance import StagedRekey, StoreMaintenance, retention_rule
from privrec.events.schema import EVENT_COLUMNS, ITEM_COLUMNS
from privrec.events.store_file import (
    STORE_FILE,
    STORE_FORMAT_VERSION,
    httpfs_extension_path,
    scalar,
    sql_text,
)
from privrec.privacy.pseudonym import PSEUDONYM_HEX_LEN

__all__ = [
    "STORE_FILE",
    "STORE_FORMAT_VERSION",
    "EventStore",
    "StagedRekey",
    "httpfs_extension_path",
]

EVENT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("user", pa.string()),
        ("item", pa.string()),
        ("type", pa.string()),
        ("ts", pa.float64()),
        ("rating", pa.float64()),
        ("query", pa.string()),
        ("session", pa.string()),
    ]
)
ITEM_SCHEMA = pa.schema(
    [
        ("item", pa.string()),
        ("title", pa.string()),
        ("category", pa.string()),
        ("brand", pa.string()),
        ("price", pa.float64()),
        ("in_stock", pa.bool_()),
        ("text", pa.string()),
        ("image_url", pa.string()),
    ]
)

_SELECT_EVENTS = 'SELECT event_id, "user", item, type, ts, rating, query, session FROM events'


class EventStore(StoreMaintenance):
    """Gated events, the item catalogue and store metadata in one encrypted DuckDB file.

    Use `EventStore.open(data_dir)`; the object is a context manager and is safe to share
    between threads (calls are serialised).
    """

    def bind_generation(self, generation: int) -> None:
        """Check (or record, for an empty store) that pseudonyms of `generation` belong here.

        Raises:
            StoreError: the store holds pseudonyms of another key generation; mixing them would
                split users in two. Re-key the store (`rekey`) or use the matching key chain.
        """
        with self._tx() as con:
            stored = self._meta_get(con, "pseudonym_generation")
            if stored is not None and int(stored) == generation:
                return
            n = scalar(con, "SELECT count(*) FROM events")
            if stored is not None and n:
                raise StoreError(
                    f"pseudonym key generation: the store holds generation {stored} but the key "
                    f"chain is at generation {generation}; re-key the store (privrec rotate-key) "
                    "or use the matching key file"
                )
            self._meta_set(con, "pseudonym_generation", str(int(generation)))

    def set_meta(self, key: str, value: str) -> None:
        """Record one metadata value inside the encrypted file (e.g. the audit log's anchor)."""
        with self._tx() as con:
            self._meta_set(con, key, value)

    # ---- writing -----------------------------------------------------------------------------
    def append(self, frame: pd.DataFrame) -> tuple[int, int]:
        """Insert gated events, skipping event_ids already stored (idempotent).

        Args:
            frame: the gate's output (columns EVENT_COLUMNS).

        Returns:
            (inserted, duplicates): duplicates were already stored or repeated in `frame`.

        Raises:
            StoreError: the frame is not a gated frame (missing columns, a user that is not a
                pseudonym, an unknown type), or the write failed; then nothing was stored.
        """
        n = len(frame)
        if n == 0:
            return 0, 0
        table = _events_table(frame)
        with self._tx() as con:
            con.register("_batch", table)
            if scalar(con, "SELECT count(*) > count(DISTINCT event_id) FROM _batch"):
                # Repeated ids inside the frame (the gate's output never has them): keep the first.
                con.unregister("_batch")
                keep = ~frame["event_id"].duplicated().to_numpy(dtype=bool)
                table = table.filter(pa.array(keep))
                con.register("_batch", table)
            # One DuckDB thread for bulk inserts: on few cores the parallel insert costs about
            # twice the CPU, and ingestion already runs the gate on another core.
            if self._insert_threads:
                con.execute(f"SET threads = {self._insert_threads}")
            try:
                # Anti-join on event_id: DuckDB builds the hash table on the batch (RIGHT_ANTI)
                # and streams the stored ids past it. Costs a scan of the stored ids per batch.
                inserted = scalar(
                    con,
                    "INSERT INTO events SELECT b.event_id, b.user, b.item, b.type, b.ts, "
                    "b.rating, b.query, b.session FROM _batch AS b WHERE NOT EXISTS (SELECT 1 "
                    "FROM events AS e WHERE e.event_id = b.event_id)",
                )
            finally:
                con.unregister("_batch")
                if self._insert_threads:
                    con.execute(f"SET threads = {self._threads}")
        return int(inserted), n - int(inserted)

    def upsert_items(self, frame: pd.DataFrame) -> int:
        """Insert or replace catalogue rows by `item` (columns ITEM_COLUMNS; all but item optional).

        Returns:
            The number of distinct items written.
        """
        table = items_table(frame)
        with self._tx() as con:
            con.register("_items", table)
            try:
                con.execute("DELETE FROM items WHERE item IN (SELECT item FROM _items)")
                con.execute("INSERT INTO items SELECT * FROM _items")
            finally:
                con.unregister("_items")
        return table.num_rows

    # ---- reading -------------------------------------------------------------------------------
    def count(self) -> int:
        """Number of stored events."""
        return int(self._rows("SELECT count(*) FROM events")[0][0])

    def events(self, user: str | None = None) -> pd.DataFrame:
        """All events, or one pseudonym's, ordered by time (ties in arrival order)."""
        if user is None:
            table = self._arrow(f"{_SELECT_EVENTS} ORDER BY ts, rowid")
        else:
            table = self._arrow(
                f'{_SELECT_EVENTS} WHERE "user" = ? ORDER BY ts, rowid', [str(user)]
            )
        return _events_frame(table)

    def daily_counts(self, days: int = 30) -> pd.DataFrame:
        """Stored events per UTC day and type over the `days` days ending at the last event's.

        One aggregate in the database (no event row leaves it), for the console's chart.

        Returns:
            Columns date ("YYYY-MM-DD"), type, count; ordered by date then type; only days
            and types with events.

        Raises:
            ValidationError: `days` is below 1.
        """
        return daily_frame(self._rows(DAILY_COUNTS_SQL, [_days_back(days)]))

    def expired(
        self, days: int | Mapping[str, int | None], now: float | None = None
    ) -> pd.DataFrame:
        """The events `retention(days, now)` would delete (read first, to unlearn them)."""
        rule = retention_rule(days, now)
        if not rule:
            return _events_frame(self._arrow(f"{_SELECT_EVENTS} WHERE false"))
        where = " OR ".join(f"({w})" for w, _ in rule)
        params = [p for _, ps in rule for p in ps]
        return _events_frame(
            self._arrow(f"{_SELECT_EVENTS} WHERE {where} ORDER BY ts, rowid", params)
        )

    def users(self) -> list[str]:
        """The distinct pseudonyms with stored events, sorted."""
        return [r[0] for r in self._rows('SELECT DISTINCT "user" FROM events ORDER BY 1')]

    def items(self) -> pd.DataFrame:
        """The item catalogue (columns ITEM_COLUMNS), ordered by item."""
        return items_frame(self._arrow("SELECT * FROM items ORDER BY item"))

    def export_parquet(self, path: str | Path) -> int:
        """Write all events to a Parquet file (pseudonymous; not encrypted) for Spark / DuckDB.

        Returns:
            The number of events written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            n = self.count()
            self._rows(
                f"COPY ({_SELECT_EVENTS} ORDER BY ts, rowid) TO {sql_text(str(path))} "
                "(FORMAT parquet)"
            )
        return n


# Events per UTC day and type from the first second of the day `?` days before the last event's
# day; a range on ts (not a function of it) in WHERE, so PostgreSQL prunes month partitions.
DAILY_COUNTS_SQL = (
    "SELECT CAST(floor(ts / 86400) AS BIGINT) AS day, type, count(*) AS n FROM events "
    "WHERE ts >= (SELECT (floor(max(ts) / 86400) - ?) * 86400 FROM events) "
    "GROUP BY 1, 2 ORDER BY 1, 2"
)


def _days_back(days: int) -> int:
    """Days before the last event's day that `daily_counts(days)` reaches (checked)."""
    if isinstance(days, bool) or not isinstance(days, int | np.integer) or days < 1:
        raise ValidationError("days", f"must be a whole number of at least 1, got {days!r}")
    return int(days) - 1


def daily_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """(day number since the epoch, type, count) rows as columns date, type, count."""
    day = np.asarray([int(r[0]) for r in rows], dtype="int64")
    dates = pd.to_datetime(day, unit="D", utc=True).strftime("%Y-%m-%d")
    return pd.DataFrame(
        {
            "date": pd.Series(list(dates), dtype=object),
            "type": pd.Series([str(r[1]) for r in rows], dtype=object),
            "count": np.asarray([int(r[2]) for r in rows], dtype="int64"),
        }
    )


def items_table(frame: pd.DataFrame) -> pa.Table:
    """A catalogue frame as an Arrow table (ITEM_SCHEMA), one row per item (the last wins).

    Raises:
        StoreError: no item column, an unknown column, a missing item or a wrongly typed value.
    """
    if "item" not in frame.columns:
        raise StoreError("upsert_items: the catalogue needs an 'item' column")
    extra = [str(c) for c in frame.columns if c not in ITEM_COLUMNS]
    if extra:
        raise StoreError(
            f"upsert_items: unknown column(s) {', '.join(extra)}; the columns are "
            f"{', '.join(ITEM_COLUMNS)}"
        )
    if frame["item"].isna().any():
        raise StoreError(
            "upsert_items: item is missing in some rows; every catalogue row needs its item id"
        )
    f = frame.drop_duplicates("item", keep="last")
    cols: dict[str, Any] = {}
    for c in ITEM_COLUMNS:
        s = f[c] if c in f.columns else pd.Series([None] * len(f), index=f.index)
        try:
            if c == "price":
                cols[c] = pa.array(
                    pd.to_numeric(s, errors="raise").astype(np.float64).to_numpy(),
                    type=pa.float64(),
                    from_pandas=True,
                )
            elif c == "in_stock":
                cols[c] = pa.array(s.astype("boolean"), type=pa.bool_())
            else:
                obj = s.astype(object)
                cols[c] = pa.array(
                    [None if _null(v) else str(v) for v in obj.tolist()], type=pa.string()
                )
        except (ValueError, TypeError, pa.ArrowException):
            raise StoreError(f"upsert_items: column {c} holds values of the wrong type") from None
    return pa.table(cols, schema=ITEM_SCHEMA)


def items_frame(table: pa.Table) -> pd.DataFrame:
    """Stored catalogue rows (ITEM_SCHEMA) as the frame `items()` gives."""
    out = table.to_pandas()
    for c in ("title", "category", "brand", "text", "image_url"):
        out[c] = out[c].astype(object).where(out[c].notna(), None)
    out["item"] = out["item"].astype("str")
    out["in_stock"] = out["in_stock"].astype("boolean")
    return out


def _null(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and v != v)


def _events_table(frame: pd.DataFrame) -> pa.Table:
    """A gated frame as an Arrow table, refusing anything that is not the gate's output."""
    missing = [c for c in EVENT_COLUMNS if c not in frame.columns]
    if missing:
        raise StoreError(
            f"append: the frame lacks column(s) {', '.join(missing)}; pass the gate's "
            "output (GateResult.accepted)"
        )
    try:
        table = pa.Table.from_pandas(
            frame[list(EVENT_COLUMNS)], schema=EVENT_SCHEMA, preserve_index=False
        )
    except (pa.ArrowException, TypeError, ValueError):
        raise StoreError(
            "append: a column has the wrong type; pass the gate's output (GateResult.accepted)"
        ) from None
    for c in ("event_id", "user", "item", "type", "ts"):
        if table[c].null_count:
            raise StoreError(f"append: {c} is missing in some rows; pass the gate's output")
    pattern = f"^[0-9a-f]{{{PSEUDONYM_HEX_LEN}}}$"
    for c in ("event_id", "user", "session"):
        if pc.all(pc.match_substring_regex(table[c], pattern)).as_py() not in (True, None):
            # Defence in depth: a raw id must never reach the store, even by a programming error.
            raise StoreError(
                f"append: {c} holds values that are not pseudonyms; send events through "
                "the privacy gate"
            )
    if not pc.all(pc.is_in(table["type"], value_set=pa.array(EVENT_TYPES))).as_py():
        raise StoreError(
            f"append: type holds an unknown event type; use one of {', '.join(EVENT_TYPES)}"
        )
    if not pc.all(pc.is_finite(table["ts"])).as_py():
        raise StoreError("append: ts holds a value that is not a finite number")
    return table


def _events_frame(table: pa.Table) -> pd.DataFrame:
    """Stored rows as a gated-event frame with the gate's dtypes."""

    def obj(name: str) -> pd.Series:
        return pd.Series(table[name].to_pylist(), dtype=object)

    return pd.DataFrame(
        {
            "event_id": table["event_id"].to_pandas().astype("str"),
            "user": table["user"].to_pandas().astype("str"),
            "item": table["item"].to_pandas().astype("str"),
            "type": table["type"].to_pandas().astype("str"),
            "ts": table["ts"].to_numpy(),
            "rating": table["rating"].to_pandas().to_numpy(dtype=np.float64, na_value=np.nan),
            "query": obj("query"),
            "session": obj("session"),
        }
    )
