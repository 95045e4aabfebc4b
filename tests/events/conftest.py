"""A throwaway PostgreSQL server for the store tests, from the Debian binaries.

One cluster for the session (`privrec.events.pg_local.LocalPostgres`: a temporary directory, a
unix socket only, fsync off; as root it runs as the `postgres` user through runuser); each test
gets a fresh database. Tests that need it skip with a clear message when no PostgreSQL binaries
(or no psycopg) are found.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from privrec.core.errors import ConfigError
from privrec.events.pg_local import LocalPostgres
from privrec.events.store_api import EventStoreAPI


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    """A PostgreSQL cluster for the session (skips when PostgreSQL or psycopg is missing)."""
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg (pip install psycopg)")
    try:
        server = LocalPostgres()
    except ConfigError as err:
        pytest.skip(f"PostgreSQL tests skipped: {err}")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def pg_url(pg_server: LocalPostgres) -> Iterator[str]:
    """A fresh, empty database on the session's server."""
    name = pg_server.create_db()
    try:
        yield pg_server.url(name)
    finally:
        pg_server.drop_db(name)


@pytest.fixture(params=["duckdb", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str | None:
    """Each store implementation in turn: None (embedded DuckDB) or a fresh PostgreSQL URL."""
    if request.param == "duckdb":
        return None
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture()
def open_event_store(store_url: str | None, data_dir: Path) -> Callable[[], EventStoreAPI]:
    """Opens the parametrised store over `data_dir` (call it as you would EventStore.open)."""
    from privrec.events.store_api import open_store

    return lambda: open_store(data_dir, store_url=store_url)
