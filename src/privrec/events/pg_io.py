"""PostgreSQL plumbing of the event store: versioned migrations and COPY in and out.

Migrations are the files `pg_migrations/NNNN_name.sql`, applied in order, each in the same
transaction as its row in `schema_version`, under an advisory lock so that several workers
starting at once apply each file once. Bulk reads and writes go through COPY in CSV form,
converted to and from Arrow tables by pyarrow (far faster than row-by-row fetches).
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Sequence
from importlib import resources
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv

from privrec.core.errors import StoreError

try:
    import psycopg
except ImportError:  # pragma: no cover - the embedded store needs no psycopg
    psycopg = None  # type: ignore[assignment]

__all__ = ["copy_in", "copy_out", "csv_bytes", "migrate", "migrations", "need_psycopg", "problem"]

logger = logging.getLogger(__name__)

_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_MIGRATE = 0x70726976_0001  # advisory lock key ("priv" + 1): schema changes
_COPY_CHUNK = 8 << 20


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
