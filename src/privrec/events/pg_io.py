"""PostgreSQL plumbing of the event store: versioned migrations and COPY in and out.

Migrations are the files `pg_migrations/NNNN_name.sql`, applied in order, each in the same
transaction as its row in `schema_version`, under an advisory lock so that several workers
starting at once apply each file once. Bulk reads go through COPY in CSV form, converted to
Arrow tables by pyarrow (far faster than row-by-row fetches). Events are written with COPY in
PostgreSQL's binary format (`binary_rows`): every row is encoded by Arrow kernels and numpy, with
no Python object per row, and the server neither parses text nor converts numbers.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from privrec.core.errors import StoreError

try:
    import psycopg
except ImportError:  # pragma: no cover - the embedded store needs no psycopg
    psycopg = None  # type: ignore[assignment]

__all__ = [
    "binary_rows",
    "copy_binary",
    "copy_in",
    "copy_out",
    "copy_out_uuids",
    "csv_bytes",
    "first_of_each_id",
    "fresh_rows",
    "ledger_rows",
    "migrate",
    "migrations",
    "need_psycopg",
    "problem",
    "uuid_bytes",
]

logger = logging.getLogger(__name__)

_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_MIGRATE = 0x70726976_0001  # advisory lock key ("priv" + 1): schema changes
_COPY_CHUNK = 8 << 20
# PostgreSQL's binary COPY format: signature, flags (0), header extension length (0); a row is
# its field count (int16) and per field a length (int32, -1 for NULL) and the bytes, all
# big-endian; the file ends with a field count of -1.
_PGCOPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_PGCOPY_TRAILER = b"\xff\xff"
_ROWS_PER_CHUNK = 65_536  # keeps each chunk's Arrow offsets (int32) far from overflow


def problem(err: BaseException) -> str:
    """The first line of a database error (never the connection URL: it may hold a password)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def need_psycopg() -> Any:
    if psycopg is None:
        raise StoreError(
            "store_url: a PostgreSQL store needs psycopg; install privrec[postgres] "
            "(pip install 'psycopg[binary]')"
        )
    return psycopg


def migrations() -> list[tuple[int, str, str]]:
    """The shipped migrations as (version, file name, SQL), in order."""
    folder = resources.files("privrec.events") / "pg_migrations"
    out = []
    for f in folder.iterdir():
        m = _MIGRATION.match(f.name)
        if m:
            out.append((int(m.group(1)), f.name, f.read_text(encoding="utf-8")))
    return sorted(out)


def migrate(con: Any) -> list[int]:
    """Apply the migrations not yet applied, in order, in one transaction; returns them.

    Raises:
        StoreError: the database's schema is newer than this privrec, or a migration failed
            (then nothing of this call was applied).
    """
    wanted = migrations()
    applied: list[int] = []
    with con.transaction():
        con.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_MIGRATE])
        con.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY, "
            "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {int(r[0]) for r in con.execute("SELECT version FROM schema_version").fetchall()}
        newest = max((v for v, _, _ in wanted), default=0)
        if done and max(done) > newest:
            raise StoreError(
                f"event store: the database's schema version {max(done)} is newer than this "
                f"privrec understands ({newest}); upgrade privrec"
            )
        for version, name, sql in wanted:
            if version in done:
                continue
            con.execute(sql)
            con.execute(
                "INSERT INTO schema_version (version, name) VALUES (%s, %s)", [version, name]
            )
            applied.append(version)
    if applied:
        logger.info("event store migrations applied=%s", applied)
    return applied


def csv_bytes(table: pa.Table) -> bytes:
    """Rows as CSV for COPY: strings always quoted, NULL as an unquoted empty field."""
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False))
    return sink.getvalue()


def copy_in(cur: Any, target: str, data: bytes) -> None:
    view = memoryview(data)
    with cur.copy(f"COPY {target} FROM STDIN (FORMAT csv)") as cp:
        for i in range(0, len(view), _COPY_CHUNK):
            cp.write(view[i : i + _COPY_CHUNK])


def copy_out(cur: Any, sql: str, schema: pa.Schema, params: Sequence[Any] | None) -> pa.Table:
    with cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)", params) as cp:
        data = b"".join(bytes(chunk) for chunk in cp)
    if not data:
        return schema.empty_table()
    return pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=schema.names),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=schema,
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
            true_values=["t"],
            false_values=["f"],
        ),
    )


def uuid_bytes(hex_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """32-hex-digit ids (validated by the caller) as an (n, 16) uint8 array of their bytes."""
    fixed = pc.cast(hex_ids, pa.binary(32))
    if isinstance(fixed, pa.ChunkedArray):
        fixed = fixed.combine_chunks()
    n = len(fixed)
    digits = memoryview(fixed.buffers()[1])[32 * fixed.offset : 32 * (fixed.offset + n)]
    return np.frombuffer(bytes.fromhex(digits.tobytes().decode("ascii")), np.uint8).reshape(n, 16)


def _fixed_field(values: np.ndarray, valid: np.ndarray | None) -> pa.Array:
    """Fixed-width values (n, w) uint8 as binary COPY fields (length + bytes, or -1 for NULL)."""
    n, w = values.shape
    full = np.empty((n, 4 + w), np.uint8)
    full[:, :4] = np.frombuffer(w.to_bytes(4, "big"), np.uint8)
    full[:, 4:] = values
    if valid is None or valid.all():
        lengths = np.full(n, 4 + w, np.int32)
        data = full.reshape(-1)
    else:
        full[~valid, :4] = 0xFF
        keep = np.ones((n, 4 + w), bool)
        keep[~valid, 4:] = False
        data = full.reshape(-1)[keep.reshape(-1)]
        lengths = np.where(valid, 4 + w, 4).astype(np.int32)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _number_field(col: pa.Array) -> pa.Array:
    """float64 -> float8, int64 -> int8 fields (NULL where the value is null)."""
    dtype = ">f8" if pa.types.is_floating(col.type) else ">i8"
    vals = col.fill_null(0).to_numpy(zero_copy_only=False).astype(dtype)
    return _fixed_field(vals.view(np.uint8).reshape(-1, 8), _valid(col))


def _valid(col: pa.Array) -> np.ndarray | None:
    """Where `col` holds a value (None when it has no null)."""
    return None if col.null_count == 0 else col.is_valid().to_numpy(zero_copy_only=False)


def _text_fields(col: pa.Array) -> list[pa.Array]:
    """A string column as two binary columns to concatenate: the lengths and the UTF-8 bytes."""
    col = pc.cast(col, pa.binary())
    lengths = pc.binary_length(col).fill_null(-1).to_numpy(zero_copy_only=False)
    prefix = np.ascontiguousarray(lengths.astype(">i4")).view(np.uint8).reshape(-1, 4)
    n = len(col)
    offsets = np.arange(0, 4 * n + 1, 4, dtype=np.int32)
    head = pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(prefix.reshape(-1).copy())]
    )
    return [head, col.fill_null(b"") if col.null_count else col]


def binary_rows(columns: Sequence[pa.Array]) -> Iterator[bytes]:
    """Rows of these columns in PostgreSQL's binary COPY format, as a few large chunks.

    Supported column types: string (text), float64 (double precision), int64 (bigint) and
    fixed_size_binary(16) (uuid); a null is NULL. The first chunk starts with the format's
    header and the last ends with its trailer.

    Raises:
        TypeError: a column of another type.
    """
    n = len(columns[0]) if columns else 0
    count = len(columns).to_bytes(2, "big")
    yield _PGCOPY_HEADER
    for start in range(0, n, _ROWS_PER_CHUNK):
        m = min(_ROWS_PER_CHUNK, n - start)
        parts = [
            pa.Array.from_buffers(
                pa.binary(),
                m,
                [
                    None,
                    pa.py_buffer(np.arange(0, 2 * m + 1, 2, dtype=np.int32)),
                    pa.py_buffer(count * m),
                ],
            )
        ]
        for col in columns:
            piece = col.slice(start, m)
            if isinstance(piece, pa.ChunkedArray):
                piece = piece.combine_chunks()
            t = piece.type
            if pa.types.is_string(t) or pa.types.is_large_string(t):
                parts += _text_fields(piece)
            elif pa.types.is_float64(t) or pa.types.is_int64(t):
                parts.append(_number_field(piece))
            elif pa.types.is_fixed_size_binary(t) and t.byte_width == 16:
                raw = np.frombuffer(piece.buffers()[1], np.uint8, 16 * m, 16 * piece.offset)
                parts.append(_fixed_field(raw.reshape(m, 16), _valid(piece)))
            else:
                raise TypeError(f"binary COPY: no encoding for column type {t}")
        rows = pc.binary_join_element_wise(*parts, b"")
        offsets = np.frombuffer(rows.buffers()[1], np.int32, m + 1, 4 * rows.offset)
        yield memoryview(rows.buffers()[2])[int(offsets[0]) : int(offsets[-1])].tobytes()
    yield _PGCOPY_TRAILER


def copy_binary(cur: Any, target: str, chunks: Iterator[bytes] | Sequence[bytes]) -> None:
    """COPY pre-encoded binary rows (`binary_rows`) into `target` ("table (col, ...)")."""
    with cur.copy(f"COPY {target} FROM STDIN (FORMAT BINARY)") as cp:
        for chunk in chunks:
            cp.write(chunk)


def copy_out_uuids(cur: Any, sql: str) -> np.ndarray:
    """One uuid column of a query (or INSERT ... RETURNING) as an (n, 16) uint8 array.

    Raises:
        StoreError: the server's answer is not one non-null uuid per row.
    """
    with cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT BINARY)") as cp:
        data = b"".join(bytes(chunk) for chunk in cp)
    body = data[len(_PGCOPY_HEADER) : len(data) - len(_PGCOPY_TRAILER)]
    width = 2 + 4 + 16
    if (
        not data.startswith(_PGCOPY_HEADER)
        or not data.endswith(_PGCOPY_TRAILER)
        or len(body) % width
    ):
        raise StoreError("event store: unexpected binary COPY answer from the server")
    rows = np.frombuffer(body, np.uint8).reshape(-1, width)
    if rows.size and (rows[:, :6] != np.frombuffer(b"\x00\x01\x00\x00\x00\x10", np.uint8)).any():
        raise StoreError("event store: unexpected binary COPY answer from the server")
    return rows[:, 6:].copy()


# ---- the event-id ledger: idempotent batches (used by PgEventStore.append) ---------------------
def first_of_each_id(table: pa.Table) -> tuple[pa.Table, np.ndarray, pa.Array]:
    """Drop rows whose event_id repeats an earlier row's; the ids as bytes, also sorted.

    Returns:
        (table, ids, sorted_ids): the kept rows, their ids as an (n, 16) uint8 array in row
        order, and the same ids sorted as a fixed_size_binary(16) array (ledger inserts in key
        order fill the B-tree page by page).
    """
    ids = uuid_bytes(table["event_id"])
    key = ids.view(">u8")  # big-endian halves: numeric order is the bytes' (and uuid's) order
    order = np.lexsort((key[:, 1], key[:, 0]))  # stable: a repeated id's first row comes first
    ranked = ids[order]
    repeat = (ranked[1:] == ranked[:-1]).all(axis=1)
    if repeat.any():
        first = np.ones(len(ids), dtype=bool)
        first[order[1:][repeat]] = False
        table, ids = table.filter(pa.array(first)), ids[first]
        ranked = ranked[np.concatenate([[True], ~repeat])]
    sorted_ids = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(16), len(ranked), [None, pa.py_buffer(ranked.tobytes())]
    )
    return table, ids, sorted_ids


def ledger_rows(cur: Any, sorted_ids: pa.Array, ids: np.ndarray) -> np.ndarray | None:
    """COPY the ids into the ledger; None when all were new, else `fresh_rows`' answer.

    A stored id fails the COPY on the ledger's key: the savepoint undoes the COPY (and only it)
    and the batch de-duplicates instead, in the same transaction.
    """
    cur.execute("SAVEPOINT ledger")
    try:
        copy_binary(cur, "event_ids (event_id)", binary_rows([sorted_ids]))
    except psycopg.errors.UniqueViolation:
        cur.execute("ROLLBACK TO SAVEPOINT ledger")
        return fresh_rows(cur, sorted_ids, ids)
    cur.execute("RELEASE SAVEPOINT ledger")
    return None


def fresh_rows(cur: Any, sorted_ids: pa.Array, ids: np.ndarray) -> np.ndarray:
    """Add the ids not yet stored to the ledger; a mask of the rows of `ids` they are.

    ON CONFLICT waits for a concurrent writer's transaction holding the same id, so each id is
    claimed by exactly one batch. Needs the session's temporary table `_ids`.
    """
    copy_binary(cur, "_ids (event_id)", binary_rows([sorted_ids]))
    fresh = copy_out_uuids(
        cur,
        "INSERT INTO event_ids (event_id) SELECT event_id FROM _ids ORDER BY event_id "
        "ON CONFLICT DO NOTHING RETURNING event_id",
    )
    as_key = np.dtype((np.void, 16))
    return np.isin(
        np.ascontiguousarray(ids).view(as_key).ravel(),
        np.ascontiguousarray(fresh).view(as_key).ravel(),
    )
