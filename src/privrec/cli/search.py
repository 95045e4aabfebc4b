"""`privrec search`: product search through the same service path as `POST /v1/search`."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from privrec.cli.common import DataDir, app, console, err, errors, open_recsys, parse_params

MODES = ("hybrid", "lexical", "dense")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="What the shopper is looking for, in their words.")],
    user: Annotated[
        str | None,
        typer.Option(
            "--user", "-u", help="The shop's user id: re-ranks for them if they consented."
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", help="How many items (1 to 1000).")] = 10,
    mode: Annotated[
        str,
        typer.Option(
            "--mode", help="hybrid (words and meaning), lexical (words) or dense (meaning)."
        ),
    ] = "hybrid",
    rule: Annotated[
        list[str] | None,
        typer.Option(
            "--rule", "-r", help="Business rule NAME=VALUE (JSON value), e.g. price_max=30."
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as POST /v1/search returns it.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Search the catalogue by words and meaning, each result with the reason it matched."""
    if mode not in MODES:
        err.print(f"[bold red]error:[/] --mode: {mode!r} is not one of {', '.join(MODES)}")
        raise typer.Exit(2)
    rules = parse_params(rule or [], option="--rule")
    with errors(), open_recsys(data_dir) as rs:
        out = rs.search(query, k, user_id=user, rules=rules or None, mode=mode).to_dict()
    show(out, as_json=as_json)


def show(out: dict[str, Any], *, as_json: bool) -> None:
    """Print a search result: JSON, or a table with the correction line and the mode's note."""
    from rich.table import Table

    if as_json:
        print(json.dumps(out, ensure_ascii=False))
        return
    how = "ordered for you" if out.get("personalized") else "not personalised"
    table = Table(title=f"{out['mode']} search for '{out['query']}' ({how}; model {out['model']})")
    for col in ("#", "item", "title", "category", "price", "score", "why"):
        table.add_column(col)
    for n, r in enumerate(out["items"], 1):
        price = r.get("price")
        table.add_row(
            str(n),
            r["item"],
            r.get("title") or "",
            r.get("category") or "",
            f"{price:.2f}" if price is not None else "",
            f"{r.get('score', 0):.4f}",
            (r.get("explanation") or {}).get("text", ""),
        )
    if out.get("corrected_query"):
        console.print(f"Showing results for '{out['corrected_query']}'", markup=False, emoji=False)
    console.print(table, markup=False, emoji=False)
    if not out["items"]:
        console.print("No product matches. Try other words.", markup=False, emoji=False)
    if out.get("note"):
        console.print(out["note"], markup=False, emoji=False)


def _install_remote() -> None:
    """While `privrec serve` holds the store, search through its HTTP API (cli/remote.py)."""
    try:
        from privrec.cli.remote import remote
        from privrec.cli.runtime import Server
    except ImportError:  # no remote forms in this build: the local path only
        return

    @remote("search")
    def _search(
        srv: Server,
        *,
        query: str,
        user: str | None,
        k: int,
        mode: str,
        rule: list[str] | None,
        as_json: bool,
        **_: Any,
    ) -> None:
        body: dict[str, Any] = {"query": query, "k": k, "mode": mode}
        if user is not None:
            body["user"] = user
        rules = parse_params(rule or [], option="--rule")
        if rules:
            body["rules"] = rules
        show(srv.call("POST", "/v1/search", body), as_json=as_json)


_install_remote()
