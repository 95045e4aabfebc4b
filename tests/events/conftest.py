"""A throwaway PostgreSQL server for the store tests, from the Debian binaries.

The server runs from a temporary directory with a unix socket only (no TCP port to collide on),
fsync off (a test cluster), for the whole session; each test gets a fresh database. initdb
refuses to run as root: as root, the cluster belongs to the `postgres` system user (created by
the Debian package) and the binaries run through `runuser -u postgres --`. Tests that need it
skip with a clear message when no PostgreSQL binaries are found.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from privrec.events.store_api import EventStoreAPI

PG_USER = "privrec"
_counter = itertools.count()


def pg_bindir() -> Path | None:
    """The newest PostgreSQL server binaries: $PRIVREC_PG_BINDIR, Debian's, or on PATH."""
    env = os.environ.get("PRIVREC_PG_BINDIR")
    cands = [env] if env else []
    cands += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    found = shutil.which("initdb")
    if found:
        cands.append(str(Path(found).parent))
    for c in cands:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


def _version(path: str) -> int:
    try:
        return int(Path(path).parent.name)
    except ValueError:
        return 0


class PgServer:
    """A running test cluster: `url(db)` connects over its unix socket."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        # /tmp, not pytest's tmp_path: the postgres user must reach it, and a socket path must
        # stay under ~100 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="privrec-pg-"))
        self.data = self.root / "data"
        self.socket = self.root
        if self.as_root:
            try:
                shutil.chown(self.root, "postgres", "postgres")
            except (LookupError, PermissionError) as err:
                shutil.rmtree(self.root, ignore_errors=True)
                pytest.skip(f"PostgreSQL tests: running as root but no 'postgres' user ({err})")

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> None:
        r = self._run(
            "initdb", "-D", str(self.data), "-U", PG_USER, "-A", "trust", "-E", "UTF8",
            "--no-sync", "--no-locale",
        )  # fmt: skip
        if r.returncode:
            raise RuntimeError(f"initdb failed: {r.stderr.strip()[-2000:]}")
        opts = f"-k {self.socket} -c listen_addresses='' -F -c max_connections=40"
        r = self._run(
            "pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "start"
        )
        if r.returncode:
            log = (self.root / "log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl start failed: {r.stderr.strip()} {log}")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@/{db}?host={self.socket}"

    def create_db(self) -> str:
        import psycopg

        name = f"t{os.getpid()}_{next(_counter)}"
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        return name

    def drop_db(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL cluster for the session (skips when PostgreSQL or psycopg is missing)."""
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg (pip install psycopg)")
    bindir = pg_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL tests: no server binaries (initdb, pg_ctl) found in /usr/lib/postgresql/"
            "*/bin or on PATH; install the Debian package postgresql (or set PRIVREC_PG_BINDIR)"
        )
    server = PgServer(bindir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def pg_url(pg_server: PgServer) -> Iterator[str]:
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
