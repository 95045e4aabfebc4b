"""The CLI beside a running server: commands go through its HTTP API.

The embedded store admits one writer process, so while `privrec serve` runs no other process can
open it. The server writes ``DATA_DIR/server.json`` (mode 0600, removed when it stops): its URL,
its pid and a *reference* to an admin key (the keys file's path or the environment variable's
name, plus the key's id): never the key itself. A CLI command on that data directory finds the
file, checks that the pid lives and the server answers (a stale file is removed), and then:

- read and write commands that have an HTTP route run through it, printing what they print
  locally (`recommend`, `train`, `forget`, `export-user`, `models`, `activate`, `rollback`,
  `jobs`, `schedule`, `privacy-budget`, `consent`);
- the others stop with "stop the server or use the HTTP API: <route>" (or "stop the server
  first" where no route exists), instead of failing on the store's lock.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from privrec.cli.common import console, err, parse_params, settings_of
from privrec.cli.runtime import Server, live_server
from privrec.core.errors import BudgetExceededError, PrivrecError
from privrec.core.files import write_private

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
    "precompute": None,
}
"""Commands with no remote form: the HTTP route to use instead (None: none exists). `serve`
checks for itself: over PostgreSQL several servers may share a data directory."""


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
def _train(srv: Server, *, model: str, param: list[str] | None, **kw: Any) -> None:
    if kw.get("use_ray") or kw.get("shards") or kw.get("ray_address"):
        raise PrivrecError("--ray/--shards: a sharded fit runs without a server; stop it first")
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
    # one call per shopper: the HTTP route erases one at a time (models update in the background)
    receipts = [srv.call("POST", "/v1/admin/users/erase", {"user": u}) for u in user]
    console.print_json(json.dumps(receipts[0] if len(receipts) == 1 else receipts))


@remote("export-user")
def _export_user(srv: Server, *, user: str, out: Path | None, **_: Any) -> None:
    text = json.dumps(srv.call("POST", "/v1/admin/users/export", {"user": user}), indent=2)
    if out:
        write_private(out, text)
        console.print(f"wrote {out}")
    else:
        console.print_json(text)
