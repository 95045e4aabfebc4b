"""Shared fixtures: the read-only real datasets, isolated data directories, PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from privrec.core.errors import ConfigError
from privrec.events.pg_local import LocalPostgres

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """Where the real datasets live: $PRIVREC_SHARED_DATA or ../shared/data beside the repo."""
    return Path(os.environ.get("PRIVREC_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real datasets folder; tests that need it skip with a clear message when it is absent."""
    d = shared_data_dir()
    if not d.is_dir():
        pytest.skip(
            f"real datasets not found at {d} (set PRIVREC_SHARED_DATA to the shared/data folder)"
        )
    return d


def need(path: Path) -> Path:
    """Skip the calling test when one dataset file or folder is missing."""
    if not path.exists():
        pytest.skip(f"dataset not available: {path}")
    return path


def assert_no_raw_ids(folder: Path, raw_ids: list[str]) -> None:
    """Fail if any file below `folder` holds one of the raw user ids (store, keys, models...)."""
    raw = [u.encode() for u in raw_ids]
    for f in folder.rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            leaked = [u for u in raw if u in blob]
            assert not leaked, f"{f.relative_to(folder)} holds raw user ids {leaked[:3]}"


@pytest.fixture()
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh privrec data directory, with no key from the environment."""
    monkeypatch.delenv("PRIVREC_PSEUDONYM_KEY", raising=False)
    monkeypatch.delenv("PRIVREC_STORE_KEY", raising=False)
    monkeypatch.delenv("PRIVREC_STORE_URL", raising=False)
    monkeypatch.setenv("PRIVREC_DATA_DIR", str(tmp_path / "privrec-data"))
    return tmp_path / "privrec-data"


# ---- PostgreSQL: a throwaway cluster for the store tests ---------------------------------------
@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    """A PostgreSQL cluster from the Debian binaries for the session (`LocalPostgres`: a temp
    directory, a unix socket only, fsync off; as root it runs as `postgres` through runuser).

    Skips with a clear message when psycopg or the server binaries are missing.
    """
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
    """Each event store in turn: None (embedded DuckDB) or a fresh PostgreSQL database's URL."""
    if request.param == "duckdb":
        return None
    return str(request.getfixturevalue("pg_url"))
