"""The CLI beside a running server: commands go through its HTTP API.

The embedded store admits one writer process, so while `privrec serve` runs no other process can
open it. The server writes ``DATA_DIR/server.json`` (mode 0600, removed when it stops): its URL,
its pid and a *reference* to an admin key (the keys file's path or the environment variable's
name, plus the key's id): never the key itself. A CLI command on that data directory finds the
file, checks that the pid lives and the server answers (a stale file is removed), and then:

- read and write commands that have an HTTP route run through it, printing what they print
  locally (`recommend`, `train`, `forget`, `export-user`, `models`, `activate`, `rollback`,
  `jobs`, `schedule`, `privacy-budget`);
- the others stop with "stop the server or use the HTTP API: <route>" (or "stop the server
  first" where no route exists), instead of failing on the store's lock.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from privrec.core.errors import (
    BudgetExceededError,
    ConfigError,
    ConflictError,
    NotFoundError,
    PrivrecError,
)
from privrec.core.files import write_private

RUNTIME_FILE = "server.json"


# ---- the runtime file (written by `privrec serve`) ---
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

    def call(self, method: str, path: str, body: Any = None, *, timeout: float = 120.0) -> Any:
        """One API call with the admin key; a problem answer is raised as the matching error."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.admin_key()}")
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


# ---- dispatch ---
Handler = Callable[..., None]
HANDLERS: dict[str, Handler] = {}
"""Command name -> what it does through a live server (registered by the command modules)."""

ROUTES: dict[str, str | None] = {
    "ingest": "POST /v1/events/batch",
    "items import": "PUT /v1/items",
    "retention": None,
    "rotate-key": None,
    "demo": None,
    "evaluate": None,
    "privacy-report": None,
    "robustness-report": None,
    "audit": None,
    "finetune": "POST /v1/models/content/finetune",
    "worker": None,
    "serve": None,
}
"""Commands with no remote form: the HTTP route to use instead (None: none exists)."""


def remote(name: str) -> Callable[[Handler], Handler]:
    """Register `fn(server, **the command's arguments)` as command `name`'s remote form."""

    def deco(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn

    return deco


def _refusal(name: str, srv: Server) -> str:
    route = ROUTES.get(name)
    where = f"a privrec server (pid {srv.pid}, {srv.url}) holds this data directory's store"
    if name == "serve":
        return f"{where}: it is already being served"
    if name == "worker":
        return f"{where}: the server runs the retrain scheduler itself"
    if route is None:
        return f"{where}: stop the server first (`privrec {name}` has no HTTP route)"
    return f"{where}: stop the server or use the HTTP API: {route}"


def _wrap(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from privrec.cli.common import err, settings_of

        if name in HANDLERS or name in ROUTES:
            data_dir = settings_of(kwargs.get("data_dir")).data_dir
            srv = live_server(Path(data_dir))
            if srv is not None:
                if name in HANDLERS:
                    try:
                        return HANDLERS[name](srv, **kwargs)
                    except PrivrecError as exc:
                        err.print(f"[bold red]error:[/] {exc}")
                        raise typer.Exit(2) from None
                err.print(f"[bold red]error:[/] {_refusal(name, srv)}")
                raise typer.Exit(2)
        return fn(*args, **kwargs)

    return wrapper


def install(app: typer.Typer) -> None:
    """Wrap every registered command (and group command) that has a remote form or a route."""
    for cmd in app.registered_commands:
        name = cmd.name or (cmd.callback.__name__.replace("_", "-") if cmd.callback else "")
        if cmd.callback is not None and (name in HANDLERS or name in ROUTES):
            cmd.callback = _wrap(name, cmd.callback)
    for group in app.registered_groups:
        sub = group.typer_instance
        if sub is None:
            continue
        for cmd in sub.registered_commands:
            name = f"{group.name} {cmd.name}"
            if cmd.callback is not None and (name in HANDLERS or name in ROUTES):
                cmd.callback = _wrap(name, cmd.callback)


# ---- remote forms of the data commands (`privrec.cli.data`) ---
@remote("recommend")
def _recommend(
    srv: Server,
    *,
    user: str,
    k: int,
    model: str | None,
    rule: list[str] | None,
    context_item: str | None,
    experiment: str | None,
    as_json: bool,
    **_: Any,
) -> None:
    from rich.table import Table

    from privrec.cli.common import console, parse_params

    body: dict[str, Any] = {"user": user, "k": k}
    rules = parse_params(rule or [], option="--rule")
    for key, value in (("model", model), ("rules", rules or None), ("context_item", context_item)):
        if value is not None:
            body[key] = value
    if experiment is not None:
        body["experiment"] = experiment
    out = srv.call("POST", "/v1/recommendations", body)
    if as_json:
        print(json.dumps(out, ensure_ascii=False))
        return
    # the same table as the local command prints
    how = "personalised" if out.get("personalized") else "not personalised"
    table = Table(title=f"top {k} from {out['model']} ({how}; consent: {out.get('consent')})")
    for col in ("#", "item", "title", "score", "why"):
        table.add_column(col)
    for n, r in enumerate(out.get("items", []), 1):
        why = (r.get("explanation") or {}).get("text", "")
        table.add_row(str(n), r["item"], r.get("title") or "", f"{r.get('score', 0):.4f}", why)
    console.print(table, markup=False, emoji=False)
    if out.get("note"):
        console.print(out["note"], markup=False, emoji=False)


@remote("train")
def _train(srv: Server, *, model: str, param: list[str] | None, **_: Any) -> None:
    from privrec.cli.common import console, parse_params

    params = parse_params(param or [])
    job = srv.call("POST", f"/v1/models/{model}/train", {"params": params})
    done = srv.wait_job(job["id"])
    if done["status"] != "succeeded":
        cls = BudgetExceededError if done["status"] == "refused" else PrivrecError
        raise cls(str(done.get("error") or done.get("reason") or done["status"]))
    res = done["result"]
    console.print(
        f"trained [bold]{res['model']}[/] in {res['train_seconds']:.1f}s -> version "
        f"{res['version']}" + (" (active)" if res["active"] else ""),
        markup=True,
        emoji=False,
    )


@remote("forget")
def _forget(srv: Server, *, user: list[str], **_: Any) -> None:
    from privrec.cli.common import console

    # one call per shopper: the HTTP route erases one at a time (models update in the background)
    receipts = [srv.call("POST", "/v1/admin/users/erase", {"user": u}) for u in user]
    console.print_json(json.dumps(receipts[0] if len(receipts) == 1 else receipts))


@remote("export-user")
def _export_user(srv: Server, *, user: str, out: Path | None, **_: Any) -> None:
    from privrec.cli.common import console

    text = json.dumps(srv.call("POST", "/v1/admin/users/export", {"user": user}), indent=2)
    if out:
        write_private(out, text)
        console.print(f"wrote {out}")
    else:
        console.print_json(text)
