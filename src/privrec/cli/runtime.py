"""The data directory's running server: the runtime file `privrec serve` writes, and a client.

``DATA_DIR/server.json`` (mode 0600, written once the server has started, removed when it
stops) holds the server's URL, its pid and a *reference* to an admin key (the keys file's path or
the environment variable's name, plus the key's id): never the key itself. `live_server` finds a
running server (a file whose pid is dead is stale and removed); `Server.call` talks to it. See
`privrec.cli.remote` for the commands that go through it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privrec.core.errors import (
    BudgetExceededError,
    ConfigError,
    ConflictError,
    NotFoundError,
    PrivrecError,
)
from privrec.core.files import write_private

RUNTIME_FILE = "server.json"


def runtime_path(data_dir: Path) -> Path:
    """Where a data directory's running server announces itself."""
    return Path(data_dir) / RUNTIME_FILE


def write_runtime(data_dir: Path, *, url: str, key_ref: dict[str, str]) -> Path:
    """Announce this process as the data directory's server (mode 0600)."""
    path = runtime_path(data_dir)
    doc = {"url": url, "pid": os.getpid(), "started_at": time.time(), "admin_key": key_ref}
    write_private(path, json.dumps(doc, indent=2))
    return path


def remove_runtime(data_dir: Path) -> None:
    """Remove the announcement if it is this process's own."""
    path = runtime_path(data_dir)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()


def client_url(host: str, port: int) -> str:
    """The URL a local client reaches a server listening on `host` at."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@dataclass(frozen=True)
class Server:
    """A live server of the data directory: its URL, pid and how to find an admin key."""

    url: str
    pid: int
    key_ref: dict[str, str]

    def admin_key(self) -> str:
        """The admin key the runtime file refers to (ConfigError naming the fix if unreadable)."""
        from privrec.server.security import key_id, parse_keys

        ref = self.key_ref
        if ref.get("source") == "env":
            var = ref.get("var", "PRIVREC_API_KEYS")
            spec = os.environ.get(var)
            if not spec:
                raise ConfigError(
                    f"the server on {self.url} takes its API keys from ${var}; set it here too "
                    "(or use the HTTP API with the admin key)"
                )
            keys = parse_keys(spec)
        else:
            path = Path(ref.get("path", ""))
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                raise ConfigError(
                    f"cannot read the server's API keys file {path} (run as its owner)"
                ) from None
            keys = [(str(e.get("role")), str(e.get("key"))) for e in doc.get("keys", [])]
        for role, key in keys:
            if role == "admin" and key_id(key) == ref.get("key_id"):
                return key
        raise ConfigError(f"no admin key matching the running server's ({ref.get('key_id')})")

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 120.0,
    ) -> Any:
        """One API call with the admin key; a problem answer is raised as the matching error."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.admin_key()}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            try:
                detail = json.loads(exc.read()).get("detail") or exc.reason
            except ValueError:
                detail = str(exc.reason)
            cls: type[PrivrecError] = {
                404: NotFoundError,
                409: BudgetExceededError if "budget" in str(detail) else ConflictError,
            }.get(exc.code, PrivrecError)
            raise cls(str(detail)) from None
        except OSError as exc:
            raise PrivrecError(f"the server on {self.url} did not answer ({exc})") from None

    def wait_job(self, job_id: str, timeout: float = 3600.0) -> dict[str, Any]:
        """Poll a job until it finishes."""
        t0 = time.time()
        while time.time() - t0 < timeout:
            job: dict[str, Any] = self.call("GET", f"/v1/jobs/{job_id}")
            if job["status"] not in ("queued", "running"):
                return job
            time.sleep(0.2)
        raise PrivrecError(f"job {job_id} did not finish within {timeout:.0f} s")


def live_server(data_dir: Path) -> Server | None:
    """The data directory's running server, or None (a file left by a dead one is removed)."""
    path = runtime_path(data_dir)
    try:
        doc = json.loads(path.read_text())
        pid, url = int(doc["pid"]), str(doc["url"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable or half-written: not a server we can use
    if pid == os.getpid():
        return None  # this process is the server
    if not _pid_alive(pid):
        with contextlib.suppress(OSError):
            path.unlink()  # stale: its server died without cleaning up
        return None
    try:
        with urllib.request.urlopen(url + "/health/live", timeout=3) as resp:
            if resp.status != 200:
                return None
    except OSError:
        return None  # still starting, or another program reuses the pid: try the store
    return Server(url, pid, dict(doc.get("admin_key") or {}))


def refuse_if_served(data_dir: Path, command: str = "this command") -> None:
    """Stop with a clear message when a server holds the data directory's store."""
    srv = live_server(data_dir)
    if srv is not None:
        raise ConflictError(
            f"a privrec server (pid {srv.pid}, {srv.url}) holds the store of {data_dir}: "
            f"stop the server first to run {command} (it has no HTTP route)"
        )
