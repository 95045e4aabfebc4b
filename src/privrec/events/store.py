"""The embedded event store: DuckDB, encrypted at rest with AES-GCM.

One file, `<data_dir>/events.duckdb`, holds the gated events (pseudonymous users only), the item
catalogue and a `meta` table (store format version, pseudonym key generation). DuckDB encrypts
every block of the file, its write-ahead log and (with `temp_file_encryption`) its spill files;
its encrypted write path needs the signed `httpfs` extension, which the PyPI package
`duckdb-ext-httpfs` ships for offline use. DuckDB checks the extension's signature on LOAD.

The key is `PRIVREC_STORE_KEY` (hex) or a random key created once in `<data_dir>/keys/store.key`
with mode 0600.

What erasure means here: DuckDB's DELETE only marks rows as deleted; CHECKPOINT writes new
blocks without them and puts the old blocks on a free list, but their bytes stay in the file
(as AES-GCM ciphertext under the store key) until DuckDB reuses the space. VACUUM does not scrub
them. So `erase_user`, `retention` and `rekey` finish with `compact()`, which copies the live
database into a fresh encrypted file and atomically replaces the old one: afterwards the store
file holds no block of the deleted rows. What remains outside DuckDB's control: copies of the old
file in backups or snapshots, and blocks the filesystem or SSD has not overwritten yet.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from privrec.core.errors import ConfigError, StoreError
from privrec.core.types import EVENT_TYPES
from privrec.events.schema import EVENT_COLUMNS, ITEM_COLUMNS
from privrec.privacy.keys import load_or_create_keys, parse_hex_key
from privrec.privacy.pseudonym import PSEUDONYM_HEX_LEN, Pseudonymiser

__all__ = ["STORE_FILE", "STORE_FORMAT_VERSION", "EventStore", "httpfs_extension_path"]

logger = logging.getLogger(__name__)

STORE_FILE = "events.duckdb"
STORE_KEY_FILE = "store.key"
STORE_FORMAT_VERSION = 1
DUCKDB_VERSION = "v1.4.4"
_ALIAS = "store"

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
    ]
)
# No PRIMARY KEY: DuckDB's ART indexes make UPDATE/DELETE of indexed columns fragile and the
# anti-join on event_id is as fast for batch inserts (append de-duplicates explicitly).
_DDL = (
    """CREATE TABLE IF NOT EXISTS events (
        event_id VARCHAR NOT NULL, "user" VARCHAR NOT NULL, item VARCHAR NOT NULL,
        type VARCHAR NOT NULL, ts DOUBLE NOT NULL, rating DOUBLE, query VARCHAR,
        session VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS items (
        item VARCHAR NOT NULL, title VARCHAR, category VARCHAR, brand VARCHAR,
        price DOUBLE, in_stock BOOLEAN, text VARCHAR)""",
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR NOT NULL, value VARCHAR)",
)
_SELECT_EVENTS = 'SELECT event_id, "user", item, type, ts, rating, query, session FROM events'
_HEX32 = re.compile(rf"[0-9a-f]{{{PSEUDONYM_HEX_LEN}}}")


def httpfs_extension_path() -> Path:
    """The signed httpfs extension shipped by the PyPI package `duckdb-ext-httpfs`.

    Raises:
        StoreError: the package is not installed or ships no build for this platform.
    """
    import platform

    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), ""
    )
    plat = f"{'osx' if os.uname().sysname == 'Darwin' else 'linux'}_{arch}"
    spec = importlib.util.find_spec("duckdb_ext")
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        path = Path(root) / "extensions" / DUCKDB_VERSION / plat / "httpfs.duckdb_extension"
        if path.is_file():
            return path
    raise StoreError(
        "the event store needs DuckDB's httpfs extension for encryption; install the PyPI package "
        f"duckdb-ext-httpfs matching duckdb {DUCKDB_VERSION.lstrip('v')} (pip install "
        "'duckdb-ext-httpfs==1.4.4.*')" + (f"; it has no build for {plat}" if roots else "")
    )


def _sql_text(value: str) -> str:
    """A SQL string literal (for the few statements that take no parameters: ATTACH, COPY)."""
    return "'" + value.replace("'", "''") + "'"


def _resolve_key(data_dir: Path, key: str | bytes | None) -> str:
    """The store key as hex: given, from PRIVREC_STORE_KEY, or from (or into) keys/store.key."""
    try:
        if isinstance(key, bytes):
            raw = key
            if len(raw) < 16:
                raise ConfigError(f"store key: has {len(raw)} bytes; give at least 16")
        elif key:
            raw = parse_hex_key(key, "store key")
        elif os.environ.get("PRIVREC_STORE_KEY"):
            raw = parse_hex_key(os.environ["PRIVREC_STORE_KEY"], "PRIVREC_STORE_KEY")
        else:
            raw = load_or_create_keys(data_dir / "keys" / STORE_KEY_FILE)[0]
    except ConfigError as err:
        raise StoreError(f"cannot open the event store: {err}") from None
    return raw.hex()


class EventStore:
    """Gated events, the item catalogue and store metadata in one encrypted DuckDB file.

    Use `EventStore.open(data_dir)`; the object is a context manager and is safe to share
    between threads (calls are serialised).
    """

    def __init__(
        self,
        con: duckdb.DuckDBPyConnection,
        data_dir: Path,
        key_hex: str,
        *,
        insert_threads: int | None = 1,
    ) -> None:
        self._con: duckdb.DuckDBPyConnection | None = con
        self._threads = int(_scalar(con, "SELECT current_setting('threads')"))
        self._insert_threads = (
            insert_threads if insert_threads and insert_threads != self._threads else None
        )
        self.data_dir = data_dir
        self.path = data_dir / STORE_FILE
        self._key_hex = key_hex
        self._lock = threading.RLock()

    # ---- opening and closing ---------------------------------------------------------------
    @classmethod
    def open(
        cls,
        data_dir: str | Path,
        key: str | bytes | None = None,
        *,
        threads: int | None = None,
        insert_threads: int | None = 1,
    ) -> EventStore:
        """Open (or create) the store in `data_dir`.

        Args:
            data_dir: the privrec data directory (created with mode 0700 if absent).
            key: the store key (hex text or bytes); default PRIVREC_STORE_KEY, else the key file
                `keys/store.key` (created on first use).
            threads: DuckDB worker threads (default: DuckDB's choice, all cores).
            insert_threads: DuckDB threads while appending (default 1, the cheapest per event;
                None uses `threads`).

        Raises:
            StoreError: wrong key, a file in use by another process, a newer store format, or
                the encryption extension is missing.
        """
        data_dir = Path(data_dir)
        if not data_dir.exists():
            data_dir.mkdir(parents=True, mode=0o700)
        key_hex = _resolve_key(data_dir, key)
        ext = httpfs_extension_path()
        tmp = data_dir / "tmp"
        tmp.mkdir(mode=0o700, exist_ok=True)
        config: dict[str, Any] = {
            # Offline and only the signed extension we name: never fetch or autoload code.
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            "allow_unsigned_extensions": False,
        }
        if threads:
            config["threads"] = int(threads)
        con = duckdb.connect(":memory:", config=config)
        try:
            con.execute(f"LOAD {_sql_text(str(ext))}")
            # Spill files stay in the data directory and are encrypted like the store.
            con.execute(f"SET temp_directory = {_sql_text(str(tmp))}")
            con.execute("SET temp_file_encryption = true")
            cls._attach(con, data_dir / STORE_FILE, key_hex)
        except duckdb.Error as err:
            con.close()
            raise StoreError(_open_problem(err, data_dir / STORE_FILE)) from None
        store = cls(con, data_dir, key_hex, insert_threads=insert_threads)
        try:
            store._init_schema()
        except BaseException:
            store.close()
            raise
        return store

    @staticmethod
    def _attach(con: duckdb.DuckDBPyConnection, path: Path, key_hex: str) -> None:
        con.execute(
            f"ATTACH {_sql_text(str(path))} AS {_ALIAS} (ENCRYPTION_KEY "
            f"{_sql_text(key_hex)}, ENCRYPTION_CIPHER 'GCM')"
        )
        con.execute(f"USE {_ALIAS}")

    def _init_schema(self) -> None:
        with self._tx() as con:
            for ddl in _DDL:
                con.execute(ddl)
            version = self._meta_get(con, "format_version")
            if version is None:
                self._meta_set(con, "format_version", str(STORE_FORMAT_VERSION))
                self._meta_set(con, "created_at", str(int(time.time())))
            elif int(version) > STORE_FORMAT_VERSION:
                raise StoreError(
                    f"{STORE_FILE}: store format {version} is newer than this privrec understands "
                    f"({STORE_FORMAT_VERSION}); upgrade privrec"
                )

    def close(self) -> None:
        """Checkpoint (so the write-ahead log is folded into the encrypted file) and close."""
        with self._lock:
            if self._con is None:
                return
            try:
                self._con.execute("CHECKPOINT")
            except duckdb.Error as err:
                logger.warning("store checkpoint failed on close: %s", type(err).__name__)
            finally:
                self._con.close()
                self._con = None

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether `close` has been called."""
        return self._con is None

    # ---- plumbing ------------------------------------------------------------------------------
    def _conn(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise StoreError(
                "the event store is closed; open it again with EventStore.open(data_dir)"
            )
        return self._con

    @contextmanager
    def _tx(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction: committed on success, rolled back on any error (nothing half-done)."""
        with self._lock:
            con = self._conn()
            con.execute("BEGIN TRANSACTION")
            try:
                yield con
            except BaseException as err:
                with contextlib.suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                if isinstance(err, duckdb.Error):
                    raise StoreError(
                        "event store: the operation failed and was rolled back "
                        f"({_first_line(err)})"
                    ) from None
                raise
            try:
                con.execute("COMMIT")
            except duckdb.Error as err:
                raise StoreError(
                    f"event store: commit failed, nothing was changed ({_first_line(err)})"
                ) from None

    def _rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Fetch all rows of a query under the lock (a result is valid until the next query)."""
        with self._lock:
            try:
                return self._conn().execute(sql, params or []).fetchall()
            except duckdb.Error as err:
                raise StoreError(f"event store: query failed ({_first_line(err)})") from None

    def _arrow(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        """Run a query and fetch the result as an Arrow table under the lock."""
        with self._lock:
            try:
                return self._conn().execute(sql, params or []).arrow().read_all()
            except duckdb.Error as err:
                raise StoreError(f"event store: query failed ({_first_line(err)})") from None

    @staticmethod
    def _meta_get(con: duckdb.DuckDBPyConnection, key: str) -> str | None:
        row = con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return None if row is None else row[0]

    @staticmethod
    def _meta_set(con: duckdb.DuckDBPyConnection, key: str, value: str) -> None:
        con.execute("DELETE FROM meta WHERE key = ?", [key])
        con.execute("INSERT INTO meta VALUES (?, ?)", [key, value])

    def meta(self) -> dict[str, str]:
        """The store's metadata (format_version, created_at, pseudonym_generation, ...)."""
        return dict(self._rows("SELECT key, value FROM meta ORDER BY key"))

    # ---- pseudonym key generation ------------------------------------------------------------
    @property
    def pseudonym_generation(self) -> int | None:
        """The key generation of the stored pseudonyms (None before the first ingest)."""
        value = self.meta().get("pseudonym_generation")
        return None if value is None else int(value)

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
            n = _scalar(con, "SELECT count(*) FROM events")
            if stored is not None and n:
                raise StoreError(
                    f"pseudonym key generation: the store holds generation {stored} but the key "
                    f"chain is at generation {generation}; re-key the store (privrec rotate-key) "
                    "or use the matching key file"
                )
            self._meta_set(con, "pseudonym_generation", str(int(generation)))

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
            if _scalar(con, "SELECT count(*) > count(DISTINCT event_id) FROM _batch"):
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
                inserted = _scalar(
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
                raise StoreError(
                    f"upsert_items: column {c} holds values of the wrong type"
                ) from None
        table = pa.table(cols, schema=ITEM_SCHEMA)
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

    def users(self) -> list[str]:
        """The distinct pseudonyms with stored events, sorted."""
        return [r[0] for r in self._rows('SELECT DISTINCT "user" FROM events ORDER BY 1')]

    def items(self) -> pd.DataFrame:
        """The item catalogue (columns ITEM_COLUMNS), ordered by item."""
        out = self._arrow("SELECT * FROM items ORDER BY item").to_pandas()
        for c in ("title", "category", "brand", "text"):
            out[c] = out[c].astype(object).where(out[c].notna(), None)
        out["item"] = out["item"].astype("str")
        out["in_stock"] = out["in_stock"].astype("boolean")
        return out

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
                f"COPY ({_SELECT_EVENTS} ORDER BY ts, rowid) TO {_sql_text(str(path))} "
                "(FORMAT parquet)"
            )
        return n

    # ---- deleting and re-keying -------------------------------------------------------------
    def retention(
        self,
        days: int | Mapping[str, int | None],
        now: float | None = None,
        *,
        compact: bool = True,
    ) -> int:
        """Delete events older than `days` (one limit, or per event type; None = keep forever).

        Args:
            days: a number of days for every type, or {type: days}; types not named are kept.
            now: the reference time (Unix seconds; default the current time).
            compact: rewrite the file afterwards so deleted rows leave no block behind.

        Returns:
            The number of events deleted.
        """
        now = time.time() if now is None else float(now)
        limits: list[tuple[str | None, float]] = []
        if isinstance(days, Mapping):
            for t, d in days.items():
                if t not in EVENT_TYPES:
                    raise StoreError(
                        f"retention: {t!r} is not an event type; use one of "
                        f"{', '.join(EVENT_TYPES)}"
                    )
                if d is not None:
                    limits.append((t, _check_days(d)))
        else:
            limits.append((None, _check_days(days)))
        deleted = 0
        with self._tx() as con:
            for etype, limit in limits:
                cutoff = now - limit * 86_400.0
                if etype is None:
                    deleted += _scalar(con, "DELETE FROM events WHERE ts < ?", [cutoff])
                else:
                    deleted += _scalar(
                        con, "DELETE FROM events WHERE type = ? AND ts < ?", [etype, cutoff]
                    )
        logger.info("retention deleted=%d", deleted)
        if deleted and compact:
            self.compact()
        return int(deleted)

    def erase_user(self, pseudonym: str, *, compact: bool = True) -> int:
        """Delete every event of one pseudonymous user.

        Args:
            pseudonym: the user's pseudonym (the gate's output, not a raw id).
            compact: rewrite the file afterwards so the deleted rows leave no block behind
                (see the module docstring for what DuckDB does and does not guarantee).

        Returns:
            The number of events deleted.
        """
        if not isinstance(pseudonym, str) or not _HEX32.fullmatch(pseudonym):
            raise StoreError(
                "erase_user: pseudonym must be 32 hex characters (pseudonymise the raw id first)"
            )
        with self._tx() as con:
            deleted = _scalar(con, 'DELETE FROM events WHERE "user" = ?', [pseudonym])
        if deleted and compact:
            self.compact()
        return int(deleted)

    def delete_events(self, pseudonym: str, types: Sequence[str], *, compact: bool = True) -> int:
        """Delete one pseudonymous user's events of the given types (a consent downgrade).

        Returns:
            The number of events deleted.
        """
        if not isinstance(pseudonym, str) or not _HEX32.fullmatch(pseudonym):
            raise StoreError(
                "delete_events: pseudonym must be 32 hex characters (pseudonymise the raw id first)"
            )
        unknown = sorted(set(types) - set(EVENT_TYPES))
        if unknown:
            raise StoreError(f"delete_events: {unknown[0]!r} is not an event type")
        if not types:
            return 0
        marks = ", ".join("?" for _ in types)
        with self._tx() as con:
            deleted = _scalar(
                con,
                f'DELETE FROM events WHERE "user" = ? AND type IN ({marks})',
                [pseudonym, *types],
            )
        if deleted and compact:
            self.compact()
        return int(deleted)

    def rekey(self, pseudonymiser: Pseudonymiser, *, compact: bool = True) -> int:
        """Re-key stored user, session and event ids after `Pseudonymiser.rotate`, atomically.

        Every stored value v becomes `pseudonymiser.rekey(v)` in one transaction, so the same raw
        user ingested afterwards maps onto the re-keyed pseudonym, and an old file re-ingested
        gives only duplicates.

        Args:
            pseudonymiser: the rotated pseudonymiser (one generation above the store).
            compact: rewrite the file so the old pseudonyms leave no block behind.

        Returns:
            The number of events re-keyed.

        Raises:
            StoreError: the store is not exactly one generation behind `pseudonymiser`.
        """
        gen = self.pseudonym_generation
        target = pseudonymiser.generation
        if gen is not None and gen + 1 != target:
            raise StoreError(
                f"rekey: the store holds key generation {gen} but the pseudonymiser is at "
                f"generation {target}; re-key one rotation at a time"
            )
        with self._tx() as con:
            old = (
                con.execute('SELECT rowid AS rid, event_id, "user", session FROM events')
                .arrow()
                .read_all()
            )
            n = old.num_rows
            if n:
                new = pa.table(
                    {
                        "rid": old["rid"],
                        "event_id": pa.array(
                            pseudonymiser.rekey_many(old["event_id"].to_pylist()), type=pa.string()
                        ),
                        "user": _rekey_column(old["user"], pseudonymiser),
                        "session": _rekey_column(old["session"], pseudonymiser),
                    }
                )
                con.register("_rekeyed", new)
                try:
                    con.execute(
                        'UPDATE events SET event_id = r.event_id, "user" = r.user, '
                        "session = r.session "
                        "FROM _rekeyed AS r WHERE events.rowid = r.rid"
                    )
                finally:
                    con.unregister("_rekeyed")
            self._meta_set(con, "pseudonym_generation", str(target))
        logger.info("rekey events=%d generation=%d", n, target)
        if n and compact:
            self.compact()
        return int(n)

    def compact(self) -> None:
        """Copy the live data into a fresh encrypted file and atomically replace the old one.

        Afterwards the store file holds no block of deleted or overwritten rows.
        """
        with self._lock:
            con = self._conn()
            fresh = self.data_dir / (STORE_FILE + ".compact")
            for p in (fresh, Path(str(fresh) + ".wal")):
                p.unlink(missing_ok=True)
            try:
                con.execute("CHECKPOINT")
                con.execute(
                    f"ATTACH {_sql_text(str(fresh))} AS fresh (ENCRYPTION_KEY "
                    f"{_sql_text(self._key_hex)}, ENCRYPTION_CIPHER 'GCM')"
                )
                try:
                    con.execute(f"COPY FROM DATABASE {_ALIAS} TO fresh")
                    con.execute("CHECKPOINT fresh")
                finally:
                    con.execute("DETACH fresh")
                con.execute("USE memory")
                con.execute(f"DETACH {_ALIAS}")
            except duckdb.Error as err:
                fresh.unlink(missing_ok=True)
                self._reattach()
                raise StoreError(
                    f"compact failed, the store is unchanged ({_first_line(err)})"
                ) from None
            os.replace(fresh, self.path)
            _fsync_dir(self.data_dir)
            self._reattach()

    def _reattach(self) -> None:
        con = self._conn()
        try:
            if not con.execute(
                f"SELECT 1 FROM duckdb_databases() WHERE database_name = '{_ALIAS}'"
            ).fetchall():
                self._attach(con, self.path, self._key_hex)
            else:
                con.execute(f"USE {_ALIAS}")
        except duckdb.Error as err:
            raise StoreError(_open_problem(err, self.path)) from None


# ---- module helpers ----------------------------------------------------------------------------
def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _open_problem(err: duckdb.Error, path: Path) -> str:
    text = str(err)
    if "Wrong encryption key" in text:
        return (
            f"{path.name}: wrong store key; give the key the store was created with "
            f"(PRIVREC_STORE_KEY or keys/{STORE_KEY_FILE})"
        )
    if "lock" in text.lower() or "conflict" in text.lower():
        return f"{path.name}: the event store is open in another process or object; close it first"
    return f"{path.name}: cannot open the event store ({_first_line(err)})"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _null(v: Any) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and v != v)


def _scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    """The single value a statement returns (a count, a setting, the rows an INSERT touched)."""
    row = con.execute(sql, params or []).fetchone()
    if row is None:  # never for these statements; a clear error rather than a TypeError
        raise StoreError(f"event store: {sql.split()[0]} returned no row")
    return row[0]


def _check_days(d: Any) -> float:
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not d >= 0:
        raise StoreError("retention: days must be a number >= 0")
    return float(d)


def _rekey_column(col: pa.ChunkedArray, p: Pseudonymiser) -> pa.Array:
    """Re-key the distinct non-null values of a pseudonym column (nulls stay null)."""
    enc = pc.dictionary_encode(col).combine_chunks()
    values = enc.dictionary.to_pylist()
    mapped = pa.array(p.rekey_many(values), type=pa.string())
    return pc.take(mapped, enc.indices)


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
