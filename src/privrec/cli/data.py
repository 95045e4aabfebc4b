"""Commands on the shop's data: ingest, train, recommend, and shoppers' rights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from privrec.cli.common import (
    DataDir,
    app,
    console,
    err,
    errors,
    open_recsys,
    parse_params,
    progress,
    settings_of,
)
from privrec.cli.scale import RayAddress, RayFlag, Shards, sharded_plan
from privrec.core.files import write_private
from privrec.privacy.keys import key_dir


@app.command()
def ingest(
    path: Annotated[
        Path,
        typer.Argument(help="A JSONL, CSV or Parquet file of events.", exists=True, dir_okay=False),
    ],
    data_dir: DataDir = None,
) -> None:
    """Validate, pseudonymise and store events from a file; bad rows go to a rejects file."""
    with errors(), open_recsys(data_dir) as rs, progress() as prog:
        task = prog.add_task(f"ingesting {path.name}", total=None)
        report = rs.ingest_file(path, progress=lambda n: prog.update(task, completed=n))
        prog.update(task, total=report.read, completed=report.read)
    console.print_json(json.dumps(report.to_dict()))
    if report.read == 0:
        err.print(f"[bold red]error:[/] {path.name} holds no events (it is empty or only a header)")
        raise typer.Exit(2)


@app.command()
def train(
    model: Annotated[
        str, typer.Option("--model", "-m", help="Model name (popularity, itemknn, ease, als, bpr).")
    ] = "ease",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Hyper-parameter NAME=VALUE (JSON value)."),
    ] = None,
    use_ray: RayFlag = False,
    shards: Shards = None,
    ray_address: RayAddress = None,
    data_dir: DataDir = None,
) -> None:
    """Train a model on everything in the store and make it the active version."""
    params = parse_params(param or [])
    # --ray / --shards: statistics summed over user shards (ease, dp_ease, dp_itemknn)
    plan = sharded_plan(use_ray, shards, ray_address)
    with errors(), open_recsys(data_dir) as rs, progress() as prog:
        task = prog.add_task(f"training {model}", total=None)
        try:
            res = rs.train(model, params=params, sharded=plan)
        finally:
            if plan is not None:
                plan.runner.close()
        prog.update(task, total=1, completed=1)
    console.print(
        f"trained [bold]{res.model}[/] in {res.train_seconds:.1f}s -> version {res.version}"
        + (" (active)" if res.active else ""),
        markup=True,
        emoji=False,
    )


@app.command()
def recommend(
    user: Annotated[
        str, typer.Argument(help="The shop's user id (pseudonymised before any lookup).")
    ],
    k: Annotated[int, typer.Option("-k", help="How many items.")] = 10,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model name (default: the demo's best).")
    ] = None,
    rule: Annotated[
        list[str] | None,
        typer.Option(
            "--rule", "-r", help="Business rule NAME=VALUE (JSON value), e.g. in_stock=true."
        ),
    ] = None,
    context_item: Annotated[
        str | None, typer.Option("--context-item", help="The item the shopper is looking at.")
    ] = None,
    experiment: Annotated[
        str | None, typer.Option("--experiment", help="A running experiment's name.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the list as the HTTP API returns it.")
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Recommend items to a user, each with the reason (the same path as the HTTP API)."""
    from rich.table import Table

    rules = parse_params(rule or [], option="--rule")
    with errors(), open_recsys(data_dir) as rs:
        out = rs.recommend(
            user, k, model=model, rules=rules, context_item=context_item, experiment=experiment
        )
    if as_json:
        print(json.dumps(out.to_dict(), ensure_ascii=False))
        return
    how = "personalised" if out.personalized else "not personalised"
    title = f"top {k} from {out.model} ({how}; consent: {out.consent})"
    table = Table(title=title)
    for col in ("#", "item", "title", "score", "why"):
        table.add_column(col)
    for n, r in enumerate(out.items, 1):
        why = r.get("explanation", {}).get("text", "")
        table.add_row(str(n), r["item"], r.get("title") or "", f"{r.get('score', 0):.4f}", why)
    console.print(table, markup=False, emoji=False)
    if out.note:
        console.print(out.note, markup=False, emoji=False)


@app.command()
def forget(
    user: Annotated[
        list[str], typer.Argument(help="The shop's user id (several: erased as one batch).")
    ],
    data_dir: DataDir = None,
) -> None:
    """Erase everything stored about a user, remove them from the models and print the receipt."""
    with errors(), open_recsys(data_dir) as rs:
        receipts = rs.forget_many(user)
    console.print_json(json.dumps(receipts[0] if len(receipts) == 1 else receipts))


@app.command("export-user")
def export_user(
    user: Annotated[str, typer.Argument(help="The shop's user id.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the JSON here instead of printing it.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Right of access: everything stored about a user, as JSON."""
    with errors(), open_recsys(data_dir) as rs:
        doc = rs.export_user(user)
    text = json.dumps(doc, indent=2)
    if out:
        write_private(out, text)
        console.print(f"wrote {out}")
    else:
        console.print_json(text)


@app.command("shopper-token")
def shopper_token(
    user: Annotated[str, typer.Argument(help="The shop's id of the signed-in shopper.")],
    ttl: Annotated[
        int | None,
        typer.Option(
            "--ttl",
            help="Lifetime in seconds (default 900, or PRIVREC_SHOPPER_TOKEN_TTL; at most 86400).",
            min=1,
            max=86400,
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Print a short-lived shopper token, sent as X-Shopper-Token to /v1/me/* for that shopper."""
    from privrec.server.settings import ServerSettings
    from privrec.server.tokens import issue_shopper_token, shopper_token_secret

    with errors():
        settings = settings_of(data_dir)
        server = ServerSettings()
        secret = shopper_token_secret(key_dir(settings), server.shopper_token_secret)
        token = issue_shopper_token(secret, user, ttl or server.shopper_token_ttl)
    # plain stdout, never wrapped, so that scripts can capture it
    typer.echo(token)


@app.command()
def retention(
    days: Annotated[
        int | None, typer.Option("--days", help="Delete events older than this many days.", min=0)
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Apply the retention rule (--days N, or retention_days per event type from privrec.toml)."""
    with errors(), open_recsys(data_dir) as rs:
        done = rs.retention(days)
    console.print_json(json.dumps(done))


@app.command("rotate-key")
def rotate_key(data_dir: DataDir = None) -> None:
    """Rotate the pseudonym key and re-key every stored pseudonym."""
    with errors(), open_recsys(data_dir) as rs:
        n = rs.rotate_key()
    console.print(f"re-keyed {n} stored events")
