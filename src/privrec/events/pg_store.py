"""The event store on PostgreSQL: the same gated events, catalogue and metadata as `EventStore`.

Chosen by `PRIVREC_STORE_URL=postgresql://...`. It keeps the embedded store's rules and gives
the same frames with the same dtypes:

- Pseudonyms only: `append` refuses any frame that is not the privacy gate's output (the same
  checks as `EventStore.append`); raw ids never reach the database.
- Idempotent event ids: `event_ids` is a ledger of every stored id (uuid primary key). A batch
  is one transaction: its ids are COPY'd into the ledger (sorted: the B-tree is then filled
  page by page) and its rows COPY'd into `events`, both in PostgreSQL's binary format. When an
  id is already stored the ledger's COPY fails on the key; the batch then rolls back to a
  savepoint and takes the de-duplicating path (ids into a temporary table, `INSERT ... ON
  CONFLICT DO NOTHING RETURNING` into the ledger, and only the ids it returns COPY'd into
  `events`), which it keeps while batches bring duplicates. A worker killed mid-batch leaves
  nothing of that batch; re-sending it stores every event once, and concurrent writers of the
  same ids store each id once (ON CONFLICT waits for the other writer's transaction).
- Events are partitioned by month on `ts` (declarative range partitioning); the month
  partitions a batch needs are created in the batch's transaction.
- Erasure, retention, consent downgrades and key rotation each run in one transaction
  (`stage_rekey` leaves it open for `privrec.events.rotation` to commit with the other stores).
- Schema migrations are versioned SQL files (`pg_migrations/NNNN_name.sql`) applied in order,
  each recorded in `schema_version`, under an advisory lock (several workers may start at once).

At rest, the database is not encrypted by privrec: put it on an encrypted volume or tablespace
and connect with TLS (`sslmode=verify-full`); see the README. DELETE leaves dead row versions in
the table files until VACUUM reuses them; `compact` runs VACUUM so their space is reused, but
only a rewrite (VACUUM FULL) or the volume encryption keeps their bytes out of reach.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from privrec.core.errors import StoreError
from privrec.core.types import EVENT_TYPES
from privrec.events import store as duck  # the shared frame checks and conversions
from privrec.events.maintenance import StagedRekey, _rekey_column, retention_rule
from privrec.events.pg_io import (
    binary_rows,
    copy_binary,
    copy_in,
    copy_out,
    csv_bytes,
    first_of_each_id,
    fresh_rows,
    ledger_rows,
    migrate,
    need_psycopg,
    problem,
)
from privrec.events.store import EVENT_SCHEMA, ITEM_SCHEMA, STORE_FORMAT_VERSION
from privrec.privacy.pseudonym import PSEUDONYM_HEX_LEN, Pseudonymiser

try:
    import psycopg
except ImportError:  # pragma: no cover - the embedded store needs no psycopg
    psycopg = None  # type: ignore[assignment]

__all__ = ["PgEventStore"]

logger = logging.getLogger(__name__)

_HEX32 = re.compile(rf"[0-9a-f]{{{PSEUDONYM_HEX_LEN}}}")
_LOCK_PARTITIONS = 0x70726976_0002  # advisory lock keys ("priv" + n): month partitions
_LOCK_GENERATION = 0x70726976_0003  # binding the pseudonym key generation
_EPOCH_END = datetime(2200, 1, 1, tzinfo=UTC).timestamp()  # beyond: the DEFAULT partition
_EVENT_COLS = 'event_id, "user", item, type, ts, rating, query, session'
_SELECT_EVENTS = f"SELECT {_EVENT_COLS} FROM events"


class PgEventStore:
    """Gated events, the item catalogue and store metadata in a PostgreSQL database.

    Use `PgEventStore.open(url, data_dir=...)`; the object is a context manager and is safe to
    share between threads (calls are serialised on one connection). Several processes may open
    the same database: writes of the same event ids store each once.
    """

    def __init__(self, con: Any, data_dir: Path, url: str = "") -> None:
        self._con: Any = con
        self._url = url  # to reconnect after the server dropped the connection
        self.data_dir = data_dir
        self._lock = threading.RLock()
        self._months: set[str] = set()
        # Set when a batch held stored ids: the next batch de-duplicates first (a re-sent file
        # brings duplicates in runs); cleared by a batch that turns out all new.
        self._dups_likely = False

    # ---- opening and closing ---------------------------------------------------------------
    @classmethod
    def open(cls, url: str, *, data_dir: str | Path = "privrec-data") -> Self:
        """Connect, apply pending migrations and return the store.

        Args:
            url: a libpq connection URL (postgresql://user@host/db?sslmode=verify-full).
            data_dir: the privrec data directory (rejects files and keys stay there).

        Raises:
            StoreError: psycopg is missing, the database cannot be reached, or its schema is
                newer than this privrec.
        """
        pg = need_psycopg()
        data_dir = Path(data_dir)
        if not data_dir.exists():
            data_dir.mkdir(parents=True, mode=0o700)
        store = cls(_connect(url), data_dir, url)
        try:
            migrate(store._con)
            with store._tx() as cur:
                cur.execute(
                    "INSERT INTO meta VALUES ('format_version', %s), ('created_at', %s) "
                    "ON CONFLICT (key) DO NOTHING",
                    [str(STORE_FORMAT_VERSION), str(int(time.time()))],
                )
        except BaseException as err:
            store.close()
            if isinstance(err, pg.Error):
                raise StoreError(
                    f"event store: cannot prepare the database ({problem(err)})"
                ) from None
            raise
        return store

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._con is None:
                return
            with contextlib.suppress(Exception):
                self._con.close()
            self._con = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether `close` has been called."""
        return self._con is None

    # ---- plumbing ------------------------------------------------------------------------------
    def _conn(self) -> Any:
        if self._con is None:
            raise StoreError("the event store is closed; open it again")
        if self._con.broken and self._url:
            # The server dropped the connection (a restart, a failover): the failed call has
            # raised already; the next one gets a fresh session.
            logger.warning("event store: connection lost, reconnecting")
            with contextlib.suppress(Exception):
                self._con.close()
            self._con = _connect(self._url)
        return self._con

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        """One transaction: committed on success, rolled back on any error (nothing half-done)."""
        with self._lock:
            con = self._conn()
            cur = con.cursor()
            try:
                cur.execute("BEGIN")
                yield cur
            except BaseException as err:
                with contextlib.suppress(Exception):
                    cur.execute("ROLLBACK")
                if isinstance(err, psycopg.Error):
                    raise StoreError(
                        f"event store: the operation failed and was rolled back ({problem(err)})"
                    ) from None
                raise
            try:
                cur.execute("COMMIT")
            except psycopg.Error as err:
                raise StoreError(
                    f"event store: commit failed, nothing was changed ({problem(err)})"
                ) from None

    def _rows(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return list(self._conn().execute(sql, params).fetchall())
            except psycopg.Error as err:
                raise StoreError(f"event store: query failed ({problem(err)})") from None

    def _arrow(self, sql: str, schema: pa.Schema, params: Sequence[Any] | None = None) -> pa.Table:
        """A query's rows as an Arrow table, read with COPY (far faster than row fetches)."""
        with self._lock:
            try:
                return copy_out(self._conn().cursor(), sql, schema, params)
            except psycopg.Error as err:
                raise StoreError(f"event store: query failed ({problem(err)})") from None

    @staticmethod
    def _meta_set(cur: Any, key: str, value: str) -> None:
        cur.execute(
            "INSERT INTO meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = "
            "EXCLUDED.value",
            [key, value],
        )

    # ---- metadata and key generation ------------------------------------------------------
    def meta(self) -> dict[str, str]:
        """The store's metadata (format_version, created_at, pseudonym_generation, ...)."""
        return {str(k): str(v) for k, v in self._rows("SELECT key, value FROM meta ORDER BY key")}

    def set_meta(self, key: str, value: str) -> None:
        """Record one metadata value."""
        with self._tx() as cur:
            self._meta_set(cur, key, value)

    @property
    def pseudonym_generation(self) -> int | None:
        """The key generation of the stored pseudonyms (None before the first ingest)."""
        value = self.meta().get("pseudonym_generation")
        return None if value is None else int(value)

    def bind_generation(self, generation: int) -> None:
        """Check (or record, for an empty store) that pseudonyms of `generation` belong here.

        Raises:
            StoreError: the store holds pseudonyms of another key generation.
        """
        with self._tx() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_GENERATION])
            row = cur.execute(
                "SELECT value FROM meta WHERE key = 'pseudonym_generation'"
            ).fetchone()
            stored = None if row is None else row[0]
            if stored is not None and int(stored) == generation:
                return
            has_events = cur.execute("SELECT EXISTS (SELECT 1 FROM events)").fetchone()[0]
            if stored is not None and has_events:
                raise StoreError(
                    f"pseudonym key generation: the store holds generation {stored} but the key "
                    f"chain is at generation {generation}; re-key the store (privrec rotate-key) "
                    "or use the matching key file"
                )
            self._meta_set(cur, "pseudonym_generation", str(int(generation)))

    # ---- writing -----------------------------------------------------------------------------
    def append(self, frame: pd.DataFrame) -> tuple[int, int]:
        """Insert gated events, skipping event_ids already stored (idempotent; binary COPY).

        Returns:
            (inserted, duplicates): duplicates were already stored or repeated in `frame`.

        Raises:
            StoreError: the frame is not a gated frame, or the write failed (nothing was stored).
        """
        n = len(frame)
        if n == 0:
            return 0, 0
        table = duck._events_table(frame)  # the embedded store's checks: pseudonyms only
        for c in ("item", "query"):  # the other text columns are checked hex or event types
            if pc.any(pc.match_substring(table[c], "\x00")).as_py():
                raise StoreError(
                    f"append: {c} holds a NUL character, which PostgreSQL text cannot store; "
                    "remove it from the source data (nothing of this batch was stored)"
                )
        table, ids, sorted_ids = first_of_each_id(table)
        # Encoded before the transaction (keeps it short), unless duplicates are expected.
        rows = None if self._dups_likely else list(binary_rows(_event_columns(table)))
        with self._tx() as cur:
            months = self._ensure_partitions(cur, table["ts"].to_numpy())
            keep: np.ndarray | None
            if rows is None:
                keep = fresh_rows(cur, sorted_ids, ids)
            else:
                keep = ledger_rows(cur, sorted_ids, ids)
            if keep is not None:
                self._dups_likely = not keep.all()
                if not keep.all():
                    table, rows = table.filter(pa.array(keep)), None
            if table.num_rows:
                chunks = rows if rows is not None else binary_rows(_event_columns(table))
                copy_binary(cur, f"events ({_EVENT_COLS})", chunks)
            inserted = int(table.num_rows)
        # Cached only once committed: a rolled-back batch takes its new partitions with it.
        self._months.update(months)
        return inserted, n - inserted

    def extra_writers(self, n: int) -> list[PgEventStore]:
        """`n` more handles on this database for concurrent appends (the caller closes them).

        `privrec.events.ingest` appends alternate batches through them: each batch stays one
        transaction and the ledger stores every id once, whichever commits first.
        """
        if not self._url:
            return []
        return [PgEventStore.open(self._url, data_dir=self.data_dir) for _ in range(n)]

    def _ensure_partitions(self, cur: Any, ts: np.ndarray) -> list[str]:
        """Create the month partitions these times need (events beyond 2200 go to DEFAULT)."""
        ok = ts[(ts >= 0) & (ts < _EPOCH_END)]
        months = np.unique(ok.astype(np.int64).astype("datetime64[s]").astype("datetime64[M]"))
        todo = [str(m) for m in months if str(m) not in self._months]
        if not todo:
            return []
        cur.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_PARTITIONS])
        for m in todo:
            start = np.datetime64(m, "M")
            lo = int(start.astype("datetime64[s]").astype(np.int64))
            hi = int((start + 1).astype("datetime64[s]").astype(np.int64))
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS events_p{m.replace('-', '')} PARTITION OF events "
                f"FOR VALUES FROM ({lo}) TO ({hi})"
            )
        return todo

    def upsert_items(self, frame: pd.DataFrame) -> int:
        """Insert or replace catalogue rows by `item` (see `EventStore.upsert_items`).

        Returns:
            The number of distinct items written.
        """
        table = duck.items_table(frame)
        cols = ", ".join(ITEM_SCHEMA.names)
        sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in ITEM_SCHEMA.names if c != "item")
        with self._tx() as cur:
            cur.execute(
                "CREATE TEMP TABLE _items_in (LIKE items INCLUDING DEFAULTS) ON COMMIT DROP"
            )
            copy_in(cur, f"_items_in ({cols})", csv_bytes(table))
            cur.execute(
                f"INSERT INTO items ({cols}) SELECT {cols} FROM _items_in "
                f"ON CONFLICT (item) DO UPDATE SET {sets}"
            )
        return int(table.num_rows)

    # ---- reading -------------------------------------------------------------------------------
    def count(self) -> int:
        """Number of stored events."""
        return int(self._rows("SELECT count(*) FROM events")[0][0])

    def events(self, user: str | None = None) -> pd.DataFrame:
        """All events, or one pseudonym's, ordered by time (ties in arrival order)."""
        if user is None:
            table = self._arrow(f"{_SELECT_EVENTS} ORDER BY ts, seq", EVENT_SCHEMA)
        else:
            table = self._arrow(
                f'{_SELECT_EVENTS} WHERE "user" = %s ORDER BY ts, seq', EVENT_SCHEMA, [str(user)]
            )
        return duck._events_frame(table)

    def expired(
        self, days: int | Mapping[str, int | None], now: float | None = None
    ) -> pd.DataFrame:
        """The events `retention(days, now)` would delete (read first, to unlearn them)."""
        rule = retention_rule(days, now)
        if not rule:
            return duck._events_frame(EVENT_SCHEMA.empty_table())
        where, params = _where(rule)
        return duck._events_frame(
            self._arrow(f"{_SELECT_EVENTS} WHERE {where} ORDER BY ts, seq", EVENT_SCHEMA, params)
        )

    def daily_counts(self, days: int = 30) -> pd.DataFrame:
        """Stored events per UTC day and type over the `days` days ending at the last event's.

        The same aggregate as `EventStore.daily_counts` (columns date, type, count).
        """
        sql = duck.DAILY_COUNTS_SQL.replace("?", "%s")
        return duck.daily_frame(self._rows(sql, [duck._days_back(days)]))

    def users(self) -> list[str]:
        """The distinct pseudonyms with stored events, sorted."""
        return [str(r[0]) for r in self._rows('SELECT DISTINCT "user" FROM events ORDER BY 1')]

    def items(self) -> pd.DataFrame:
        """The item catalogue (columns ITEM_COLUMNS), ordered by item."""
        cols = ", ".join(ITEM_SCHEMA.names)
        return duck.items_frame(self._arrow(f"SELECT {cols} FROM items ORDER BY item", ITEM_SCHEMA))

    def export_parquet(self, path: str | Path) -> int:
        """Write all events to a Parquet file (pseudonymous; not encrypted).

        Returns:
            The number of events written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = self._arrow(f"{_SELECT_EVENTS} ORDER BY ts, seq", EVENT_SCHEMA)
        pq.write_table(table, path)
        return int(table.num_rows)

    # ---- deleting and re-keying -------------------------------------------------------------
    def _delete(self, where: str, params: Sequence[Any]) -> int:
        """Delete matching events and their ids in one transaction; returns the events deleted."""
        with self._tx() as cur:
            cur.execute(
                f"WITH d AS (DELETE FROM events WHERE {where} RETURNING event_id) "
                "DELETE FROM event_ids WHERE event_id IN (SELECT event_id::uuid FROM d)",
                list(params),
            )
            return int(cur.rowcount)

    def retention(
        self,
        days: int | Mapping[str, int | None],
        now: float | None = None,
        *,
        compact: bool = True,
    ) -> int:
        """Delete events older than `days` (one limit, or per event type; None = keep forever)."""
        rule = retention_rule(days, now)
        deleted = self._delete(*_where(rule)) if rule else 0
        logger.info("retention deleted=%d", deleted)
        if deleted and compact:
            self.compact()
        return deleted

    def erase_user(self, pseudonym: str, *, compact: bool = True) -> int:
        """Delete every event of one pseudonymous user (and its event ids); returns the count."""
        _check_pseudonym(pseudonym, "erase_user")
        deleted = self._delete('"user" = %s', [pseudonym])
        if deleted and compact:
            self.compact()
        return deleted

    def delete_events(self, pseudonym: str, types: Sequence[str], *, compact: bool = True) -> int:
        """Delete one pseudonymous user's events of the given types (a consent downgrade)."""
        _check_pseudonym(pseudonym, "delete_events")
        unknown = sorted(set(types) - set(EVENT_TYPES))
        if unknown:
            raise StoreError(f"delete_events: {unknown[0]!r} is not an event type")
        if not types:
            return 0
        deleted = self._delete('"user" = %s AND type = ANY(%s)', [pseudonym, list(types)])
        if deleted and compact:
            self.compact()
        return deleted

    def compact(self) -> None:
        """VACUUM the event tables so the space of deleted rows is reused (see the docstring)."""
        with self._lock:
            try:
                self._conn().execute("VACUUM events, event_ids")
            except psycopg.Error as err:
                raise StoreError(f"compact failed ({problem(err)})") from None

    def stage_rekey(self, pseudonymiser: Pseudonymiser) -> StagedRekey:
        """Re-key stored user, session and event ids in a transaction left open.

        Same contract as `EventStore.stage_rekey`: commit or roll back on this thread.

        Raises:
            StoreError: the store is not one generation behind `pseudonymiser` (nor at it), or
                the update failed (then nothing was changed).
        """
        gen = self.pseudonym_generation
        target = pseudonymiser.generation
        if gen == target:
            return StagedRekey(None, 0, target)
        if gen is not None and gen + 1 != target:
            raise StoreError(
                f"rekey: the store holds key generation {gen} but the pseudonymiser is at "
                f"generation {target}; re-key one rotation at a time"
            )
        self._lock.acquire()
        try:
            cur = self._conn().cursor()
            cur.execute("BEGIN")
        except BaseException:
            self._lock.release()
            raise
        staged = StagedRekey(self, 0, target, errors=(Exception,), describe=problem)
        try:
            # No writer may add old-key rows while the re-keyed ones wait for the commit.
            cur.execute("LOCK TABLE events, event_ids IN EXCLUSIVE MODE")
            staged.count = _rekey_rows(cur, pseudonymiser)
            self._meta_set(cur, "pseudonym_generation", str(target))
        except BaseException as err:
            staged.rollback()
            if isinstance(err, psycopg.Error):
                raise StoreError(
                    f"rekey: the update failed and was rolled back ({problem(err)})"
                ) from None
            raise
        return staged

    def rekey(self, pseudonymiser: Pseudonymiser, *, compact: bool = True) -> int:
        """Re-key stored ids after `Pseudonymiser.rotate`, atomically; returns the events."""
        gen = self.pseudonym_generation
        if gen is not None and gen + 1 != pseudonymiser.generation:
            raise StoreError(
                f"rekey: the store holds key generation {gen} but the pseudonymiser is at "
                f"generation {pseudonymiser.generation}; re-key one rotation at a time"
            )
        staged = self.stage_rekey(pseudonymiser)
        staged.commit()
        if staged.count and compact:
            self.compact()
        return staged.count

    def partitions(self) -> list[str]:
        """The names of the event table's partitions, sorted."""
        return [
            str(r[0])
            for r in self._rows(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'events'::regclass ORDER BY 1"
            )
        ]


# ---- module helpers ----------------------------------------------------------------------------
def _connect(url: str) -> Any:
    """A connection in autocommit mode with this session's staging table for COPY.

    Raises:
        StoreError: the database cannot be reached (the message never holds the URL).
    """
    pg = need_psycopg()
    try:
        con = pg.connect(url, autocommit=True)
    except pg.Error as err:
        raise StoreError(f"event store: cannot connect to PostgreSQL ({problem(err)})") from None
    try:
        # Per session, emptied at every commit: a batch killed half-way leaves nothing in it.
        con.execute("CREATE TEMP TABLE IF NOT EXISTS _ids (event_id uuid) ON COMMIT DELETE ROWS")
    except pg.Error as err:
        con.close()
        raise StoreError(f"event store: cannot prepare the session ({problem(err)})") from None
    return con


def _event_columns(table: pa.Table) -> list[pa.Array]:
    """The columns of `_EVENT_COLS`, in its order, for `binary_rows`."""
    return [table[c.strip('"')] for c in _EVENT_COLS.split(", ")]


def _check_pseudonym(pseudonym: Any, what: str) -> None:
    if not isinstance(pseudonym, str) or not _HEX32.fullmatch(pseudonym):
        raise StoreError(
            f"{what}: pseudonym must be 32 hex characters (pseudonymise the raw id first)"
        )


def _where(rule: list[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    """A retention rule's conditions (DuckDB's ? placeholders) as one psycopg condition."""
    where = " OR ".join(f"({w.replace('?', '%s')})" for w, _ in rule)
    return where, [p for _, ps in rule for p in ps]


def _rekey_rows(cur: Any, pseudonymiser: Pseudonymiser) -> int:
    """Re-key every stored event's ids inside the caller's transaction; returns the rows."""
    schema = pa.schema([("event_id", pa.string()), ("user", pa.string()), ("session", pa.string())])
    old = copy_out(cur, 'SELECT event_id, "user", session FROM events', schema, None)
    n = int(old.num_rows)
    if not n:
        return 0
    new = pa.table(
        {
            "old_id": old["event_id"],
            "event_id": pa.array(
                pseudonymiser.rekey_many(old["event_id"].to_pylist()), type=pa.string()
            ),
            "user": _rekey_column(old["user"], pseudonymiser),
            "session": _rekey_column(old["session"], pseudonymiser),
        }
    )
    cur.execute(
        'CREATE TEMP TABLE _rekeyed (old_id text, event_id text, "user" text, session text) '
        "ON COMMIT DROP"
    )
    copy_in(cur, '_rekeyed (old_id, event_id, "user", session)', csv_bytes(new))
    cur.execute(
        'UPDATE events SET event_id = r.event_id, "user" = r."user", session = r.session '
        "FROM _rekeyed AS r WHERE events.event_id = r.old_id"
    )
    cur.execute("TRUNCATE event_ids")
    cur.execute("INSERT INTO event_ids (event_id) SELECT event_id::uuid FROM _rekeyed")
    return n
