"""A throwaway local PostgreSQL cluster for tests and benchmarks, from the server binaries.

The cluster lives in a fresh directory under the system temp folder, listens on a unix socket
in that directory only (no TCP port to collide on), runs with fsync off (throwaway data) and
trusts the local user `privrec`. initdb refuses to run as root: as root the directory belongs
to the `postgres` system user (the Debian package creates it) and the binaries run through
`runuser -u postgres --`. Not for production data.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from privrec.core.errors import ConfigError, StoreError

__all__ = ["LocalPostgres", "pg_bindir"]

PG_USER = "privrec"
_counter = itertools.count()


def pg_bindir() -> Path | None:
    """The newest PostgreSQL server binaries: $PRIVREC_PG_BINDIR, Debian's, or on PATH."""
    env = os.environ.get("PRIVREC_PG_BINDIR")
    cands = [env] if env else []
    cands += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True)
    found = shutil.which("initdb")
    if found:
        cands.append(str(Path(found).parent))
    for c in cands:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


def _major(path: str) -> int:
    try:
        return int(Path(path).parent.name)
    except ValueError:
        return 0


class LocalPostgres:
    """A running throwaway cluster; `url(db)` connects over its unix socket.

    Use as a context manager, or call `start` and `stop`.

    Args:
        bindir: the server binaries (default: `pg_bindir()`).
        fsync: keep PostgreSQL's fsync on (benchmarks: durable commits as in production);
            off by default for tests.
        settings: further server settings (name -> value), e.g. {"shared_buffers": "512MB"}.

    Raises:
        ConfigError: no server binaries, or running as root without a `postgres` user.
    """

    def __init__(
        self,
        bindir: Path | None = None,
        *,
        fsync: bool = False,
        settings: Mapping[str, str] | None = None,
    ) -> None:
        found = bindir or pg_bindir()
        if found is None:
            raise ConfigError(
                "PostgreSQL: no server binaries (initdb, pg_ctl) in /usr/lib/postgresql/*/bin "
                "or on PATH; install the Debian package postgresql or set PRIVREC_PG_BINDIR"
            )
        self.bindir = found
        self.fsync = fsync
        self.settings = dict(settings or {})
        self.as_root = os.geteuid() == 0
        # The system temp folder: the postgres user must reach it, and a socket path must stay
        # under ~100 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="privrec-pg-"))
        self.data = self.root / "data"
        if self.as_root:
            try:
                shutil.chown(self.root, "postgres", "postgres")
            except (LookupError, PermissionError) as err:
                shutil.rmtree(self.root, ignore_errors=True)
                raise ConfigError(
                    f"PostgreSQL: running as root needs a 'postgres' system user ({err})"
                ) from None

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    def start(self) -> None:
        """initdb and start the server; waits until it accepts connections.

        Raises:
            StoreError: initdb or pg_ctl failed (their message is in the error).
        """
        r = self._run(
            "initdb", "-D", str(self.data), "-U", PG_USER, "-A", "trust", "-E", "UTF8",
            "--no-sync", "--no-locale",
        )  # fmt: skip
        if r.returncode:
            raise StoreError(f"PostgreSQL: initdb failed: {r.stderr.strip()[-2000:]}")
        opts = f"-k {self.root} -c listen_addresses='' -c max_connections=40"
        if not self.fsync:
            opts += " -F"
        for name, value in self.settings.items():
            opts += f" -c {name}={value}"
        log = self.root / "log"
        r = self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(log), "-w", "start")
        if r.returncode:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise StoreError(f"PostgreSQL: pg_ctl start failed: {r.stderr.strip()} {tail}")

    def stop(self) -> None:
        """Stop the server and delete its directory."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def postmaster_pid(self) -> int:
        """The server's main process id (from postmaster.pid)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, db: str = "postgres") -> str:
        """A libpq URL of database `db` on this cluster."""
        return f"postgresql://{PG_USER}@/{db}?host={self.root}"

    def create_db(self) -> str:
        """Create a fresh, empty database; returns its name."""
        import psycopg

        name = f"t{os.getpid()}_{next(_counter)}"
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        return name

    def drop_db(self, name: str) -> None:
        """Drop a database (its connections are closed first)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
