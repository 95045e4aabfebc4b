"""The event store's file: DuckDB, encrypted at rest with AES-GCM; opening and compaction.

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
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import duckdb
import pyarrow as pa

from privrec.core.errors import ConfigError, StoreError
from privrec.privacy.keys import load_or_create_keys, parse_hex_key

__all__ = [
    "STORE_FILE",
    "STORE_FORMAT_VERSION",
    "StoreFile",
    "first_line",
    "httpfs_extension_path",
    "scalar",
    "sql_text",
]

logger = logging.getLogger(__name__)

STORE_FILE = "events.duckdb"
STORE_KEY_FILE = "store.key"
STORE_FORMAT_VERSION = 1
DUCKDB_VERSION = "v1.4.4"
_ALIAS = "store"

# No PRIMARY KEY: DuckDB's ART indexes make UPDATE/DELETE of indexed columns fragile and the
# anti-join on event_id is as fast for batch inserts (append de-duplicates explicitly).
_DDL = (
    """CREATE TABLE IF NOT EXISTS events (
        event_id VARCHAR NOT NULL, "user" VARCHAR NOT NULL, item VARCHAR NOT NULL,
        type VARCHAR NOT NULL, ts DOUBLE NOT NULL, rating DOUBLE, query VARCHAR,
        session VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS items (
        item VARCHAR NOT NULL, title VARCHAR, category VARCHAR, brand VARCHAR,
        price DOUBLE, in_stock BOOLEAN, text VARCHAR, image_url VARCHAR)""",
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR NOT NULL, value VARCHAR)",
)


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


def sql_text(value: str) -> str:
    """A SQL string literal (for the few statements that take no parameters: ATTACH, COPY)."""
    return "'" + value.replace("'", "''") + "'"


def _resolve_key(data_dir: Path, key: str | bytes | None, key_dir: Path | None = None) -> str:
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
            keys = Path(key_dir) if key_dir else data_dir / "keys"
            raw = load_or_create_keys(keys / STORE_KEY_FILE)[0]
    except ConfigError as err:
        raise StoreError(f"cannot open the event store: {err}") from None
    return raw.hex()


class StoreFile:
    """The encrypted DuckDB file: opening, transactions, metadata and compaction.

    `privrec.events.store.EventStore` builds the event queries and the maintenance on top.
    Calls are serialised by one re-entrant lock, so an object may be shared between threads.
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
        self._threads = int(scalar(con, "SELECT current_setting('threads')"))
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
        key_dir: str | Path | None = None,
    ) -> Self:
        """Open (or create) the store in `data_dir`.

        Args:
            data_dir: the privrec data directory (created with mode 0700 if absent).
            key: the store key (hex text or bytes); default PRIVREC_STORE_KEY, else the key file
                `keys/store.key` (created on first use).
            threads: DuckDB worker threads (default: DuckDB's choice, all cores).
            insert_threads: DuckDB threads while appending (default 1, the cheapest per event;
                None uses `threads`).
            key_dir: where the key file lives (default `data_dir/keys`).

        Raises:
            StoreError: wrong key, a file in use by another process, a newer store format, or
                the encryption extension is missing.
        """
        data_dir = Path(data_dir)
        if not data_dir.exists():
            data_dir.mkdir(parents=True, mode=0o700)
        key_hex = _resolve_key(data_dir, key, Path(key_dir) if key_dir else None)
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
            con.execute(f"LOAD {sql_text(str(ext))}")
            # Spill files stay in the data directory and are encrypted like the store.
            con.execute(f"SET temp_directory = {sql_text(str(tmp))}")
            con.execute("SET temp_file_encryption = true")
            cls._attach(con, data_dir / STORE_FILE, key_hex)
        except duckdb.Error as err:
            con.close()
            raise StoreError(open_problem(err, data_dir / STORE_FILE)) from None
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
            f"ATTACH {sql_text(str(path))} AS {_ALIAS} (ENCRYPTION_KEY "
            f"{sql_text(key_hex)}, ENCRYPTION_CIPHER 'GCM')"
        )
        con.execute(f"USE {_ALIAS}")

    def _init_schema(self) -> None:
        with self._tx() as con:
            for ddl in _DDL:
                con.execute(ddl)
            # stores made before the catalogue had images: the column is added, last
            con.execute("ALTER TABLE items ADD COLUMN IF NOT EXISTS image_url VARCHAR")
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

    def __enter__(self) -> Self:
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
                        f"event store: the operation failed and was rolled back ({first_line(err)})"
                    ) from None
                raise
            try:
                con.execute("COMMIT")
            except duckdb.Error as err:
                raise StoreError(
                    f"event store: commit failed, nothing was changed ({first_line(err)})"
                ) from None

    def _rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Fetch all rows of a query under the lock (a result is valid until the next query)."""
        with self._lock:
            try:
                return self._conn().execute(sql, params or []).fetchall()
            except duckdb.Error as err:
                raise StoreError(f"event store: query failed ({first_line(err)})") from None

    def _arrow(self, sql: str, params: list[Any] | None = None) -> pa.Table:
        """Run a query and fetch the result as an Arrow table under the lock."""
        with self._lock:
            try:
                return self._conn().execute(sql, params or []).arrow().read_all()
            except duckdb.Error as err:
                raise StoreError(f"event store: query failed ({first_line(err)})") from None

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
                    f"ATTACH {sql_text(str(fresh))} AS fresh (ENCRYPTION_KEY "
                    f"{sql_text(self._key_hex)}, ENCRYPTION_CIPHER 'GCM')"
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
                    f"compact failed, the store is unchanged ({first_line(err)})"
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
            raise StoreError(open_problem(err, self.path)) from None


# ---- module helpers ----------------------------------------------------------------------------
def first_line(err: BaseException) -> str:
    """The first line of an error's message (DuckDB's carry long context after it)."""
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def open_problem(err: duckdb.Error, path: Path) -> str:
    """What went wrong opening the store file, in words that name the fix."""
    text = str(err)
    if "Wrong encryption key" in text:
        return (
            f"{path.name}: wrong store key; give the key the store was created with "
            f"(PRIVREC_STORE_KEY or keys/{STORE_KEY_FILE})"
        )
    if "lock" in text.lower() or "conflict" in text.lower():
        return f"{path.name}: the event store is open in another process or object; close it first"
    return f"{path.name}: cannot open the event store ({first_line(err)})"


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


def scalar(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> Any:
    """The single value a statement returns (a count, a setting, the rows an INSERT touched)."""
    row = con.execute(sql, params or []).fetchone()
    if row is None:  # never for these statements; a clear error rather than a TypeError
        raise StoreError(f"event store: {sql.split()[0]} returned no row")
    return row[0]
