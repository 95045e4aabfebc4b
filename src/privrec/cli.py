"""The `privrec` command line (Typer, with rich progress bars and tables)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from privrec.core.errors import PrivrecError
from privrec.core.files import write_private
from privrec.core.settings import Settings

if TYPE_CHECKING:
    from privrec.service import RecSys

app = typer.Typer(
    name="privrec",
    help="Privacy-preserving recommendations for e-commerce, with utility and privacy measured.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err = Console(stderr=True)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Data directory (default ./privrec-data or $PRIVREC_DATA_DIR)."
    ),
]


def _settings(data_dir: Path | None) -> Settings:
    return Settings(data_dir=data_dir) if data_dir else Settings()


def _recsys(data_dir: Path | None) -> RecSys:
    # imported here: `privrec --help` should not pay for loading the models' libraries
    from privrec.service import RecSys

    return RecSys(_settings(data_dir))


@contextmanager
def _errors() -> Iterator[None]:
    """Show privrec's own errors as one clear line and exit 2, instead of a traceback."""
    try:
        yield
    except PrivrecError as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    """privrec: behaviour in, privacy first; recommendations out, measured."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s %(message)s",
    )


@app.command()
def ingest(
    path: Annotated[
        Path,
        typer.Argument(help="A JSONL, CSV or Parquet file of events.", exists=True, dir_okay=False),
    ],
    data_dir: DataDir = None,
) -> None:
    """Validate, pseudonymise and store events from a file; bad rows go to a rejects file."""
    with _errors(), _recsys(data_dir) as rs, _progress() as prog:
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
    data_dir: DataDir = None,
) -> None:
    """Train a model on everything in the store and make it the active version."""
    params = _parse_params(param or [])
    with _errors(), _recsys(data_dir) as rs, _progress() as prog:
        task = prog.add_task(f"training {model}", total=None)
        res = rs.train(model, params=params)
        prog.update(task, total=1, completed=1)
    console.print(
        f"trained [bold]{res.model}[/] in {res.train_seconds:.1f}s -> version {res.version}"
        + (" (active)" if res.active else ""),
        markup=True,
        emoji=False,
    )


def _parse_params(items: list[str], *, option: str = "--param") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise typer.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint=option)
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


@app.command()
def evaluate(
    dataset: Annotated[
        Path | None, typer.Option("--dataset", help="A dataset folder (default: the store).")
    ] = None,
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated model names (default: all).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Report folder (default: DATA_DIR/reports).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Compare models under the dataset's standard protocol; print a table, write HTML + JSON."""
    from privrec.data.loaders import detect_format, load_dataset
    from privrec.evaluation.compare import compare_models
    from privrec.evaluation.report import render_table, write_report
    from privrec.pipeline import ROSTERS, split_for

    wanted = [m.strip() for m in models.split(",")] if models else None
    with _errors(), _recsys(data_dir) as rs:
        if dataset is not None:
            fmt = detect_format(dataset)
            ds = load_dataset(dataset, gate=rs.ctx.gate())
        else:
            fmt, ds = "shop", rs.dataset()
        train_ds, test_ds, protocol, description = split_for(ds, fmt)
        key = fmt if fmt in ROSTERS else ("loo" if protocol == "loo" else "shop")
        roster = [s for s in ROSTERS[key] if wanted is None or s.name in wanted]
        with _progress() as prog:
            task = prog.add_task("models", total=2 * len(roster))
            results, _ = compare_models(
                roster,
                train_ds,
                test_ds,
                protocol=protocol,
                on_step=lambda m, step: prog.update(task, advance=1, description=f"{step} {m}"),
            )
            prog.update(task, completed=2 * len(roster), description="done")
        html, js = write_report(
            results,
            out or rs.reports_dir,
            title=f"privrec: {ds.name}",
            dataset_info={
                "name": ds.name,
                "users": ds.n_users,
                "items": ds.n_items,
                "events": ds.n_events,
                "protocol": description,
            },
        )
    console.print(render_table(results))
    console.print(f"report: {html}\njson:   {js}")


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

    rules = _parse_params(rule or [], option="--rule")
    with _errors(), _recsys(data_dir) as rs:
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
    with _errors(), _recsys(data_dir) as rs:
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
    with _errors(), _recsys(data_dir) as rs:
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

    with _errors():
        settings = _settings(data_dir)
        server = ServerSettings()
        secret = shopper_token_secret(Path(settings.data_dir), server.shopper_token_secret)
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
    with _errors(), _recsys(data_dir) as rs:
        done = rs.retention(days)
    console.print_json(json.dumps(done))


@app.command("rotate-key")
def rotate_key(data_dir: DataDir = None) -> None:
    """Rotate the pseudonym key and re-key every stored pseudonym."""
    with _errors(), _recsys(data_dir) as rs:
        n = rs.rotate_key()
    console.print(f"re-keyed {n} stored events")


@app.command("robustness-report")
def robustness_report(
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="ml100k, beauty or a dataset folder (default: the store)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Report folder (default: DATA_DIR/reports/robustness)."),
    ] = None,
    attacks: Annotated[
        str, typer.Option("--attacks", help="Comma-separated attacks.")
    ] = "random,average,bandwagon,segment",
    fractions: Annotated[
        str, typer.Option("--fractions", help="Comma-separated fake-shopper fractions.")
    ] = "0.01,0.03,0.05",
    defences: Annotated[
        str, typer.Option("--defences", help="Comma-separated: apr, detect, detect+apr, dp.")
    ] = "apr,detect,detect+apr,dp",
    epochs: Annotated[int, typer.Option("--epochs", help="BPR/APR training epochs.", min=1)] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the attacks and models.")] = 42,
    data_dir: DataDir = None,
) -> None:
    """Poisoning attacks (fake shoppers), detection and defences: report files and a table."""
    from privrec.data.loaders import detect_format
    from privrec.evaluation.robustness import RobustnessConfig, write_report
    from privrec.evaluation.robustness import robustness_report as run_report
    from privrec.pipeline import split_for

    try:
        fracs = [float(f) for f in fractions.split(",")]
    except ValueError:
        raise typer.BadParameter(
            f"{fractions!r}: expected numbers like 0.01,0.03", param_hint="--fractions"
        ) from None
    names = [a.strip() for a in attacks.split(",") if a.strip()]
    cfg = RobustnessConfig(
        base_params={"binary": True, "embedding_size": 64, "epochs": epochs, "reg": 1e-4},
        attacks=tuple(names),
        fractions=tuple(fracs),
        defences=tuple(d.strip() for d in defences.split(",") if d.strip()),
        defended=(("bandwagon" if "bandwagon" in names or not names else names[0], 0.03),),
        seed=seed,
    )
    try:
        cfg.check()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    with _errors(), _recsys(data_dir) as rs:
        if dataset is None:
            fmt, ds = "shop", rs.dataset()
        else:
            ds = rs.reports.public_dataset(dataset)
            fmt = (
                detect_format(dataset)
                if Path(dataset).is_dir()
                else {"ml100k": "movielens-100k", "beauty": "amazon-s3rec"}.get(
                    dataset.lower(), "shop"
                )
            )
        train_ds, test_ds, protocol, _ = split_for(ds, fmt)
        report = run_report(
            train_ds,
            test_ds,
            protocol=protocol,
            config=cfg,
            progress=lambda line: console.print(line),
        )
        paths = write_report(report, out or rs.reports_dir / "robustness")
    console.print(paths["markdown"].read_text())
    console.print("\n".join(f"{k}: {v}" for k, v in paths.items()))


@app.command("privacy-report")
def privacy_report(
    dataset: Annotated[
        str | None,
        typer.Option("--dataset", help="ml100k, beauty or a dataset folder (default: the store)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Report folder (default: DATA_DIR/reports/privacy)."),
    ] = None,
    epsilons: Annotated[
        str | None,
        typer.Option(
            "--epsilons", help="Comma-separated epsilons, e.g. 1,4,inf (default 0.5,1,2,4,8,inf)."
        ),
    ] = None,
    models: Annotated[
        str | None, typer.Option("--models", help="Comma-separated DP models (default: all).")
    ] = None,
    protocol: Annotated[str, typer.Option("--protocol", help="loo or ranking.")] = "loo",
    audit: Annotated[
        bool, typer.Option("--audit/--no-audit", help="Run the membership-inference audit.")
    ] = True,
    audit_users: Annotated[
        int | None, typer.Option("--audit-users", help="At most this many users per audit.", min=20)
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the split, models and audit.")] = 42,
    data_dir: DataDir = None,
) -> None:
    """Privacy-utility frontier of the DP models with the attack AUC and the ledger."""
    try:
        eps = [float(e) for e in epsilons.split(",")] if epsilons else None
    except ValueError:
        raise typer.BadParameter(
            f"{epsilons!r}: expected numbers like 1,4,inf", param_hint="--epsilons"
        ) from None
    names = models.split(",") if models else None
    with _errors(), _recsys(data_dir) as rs:
        ds = rs.reports.public_dataset(dataset) if dataset else None
        n_eps = len(eps) if eps else 6
        n_models = len(names) if names else 4
        with _progress() as prog:
            task = prog.add_task("privacy frontier", total=n_eps * n_models)

            def on_point(p: Any) -> None:
                prog.update(
                    task,
                    advance=1,
                    description=f"{p.model} eps={p.epsilon:g} ndcg@10={p.ndcg_at_10:.4f}",
                )

            paths = rs.privacy_report(
                out,
                dataset=ds,
                epsilons=eps,
                models=names,
                protocol=protocol,
                audit=audit,
                audit_users=audit_users,
                seed=seed,
                on_point=on_point,
            )
            prog.update(task, description="privacy frontier done")
    console.print("\n".join(f"{k}: {v}" for k, v in paths.items()))


@app.command()
def demo(
    dataset: Annotated[
        Path | None,
        typer.Option("--dataset", help="A real dataset folder instead of the demo shop."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Report folder (default: DATA_DIR/reports).")
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the demo shop and of training.")
    ] = 42,
    users: Annotated[
        int, typer.Option("--users", help="Shoppers in the demo shop.", min=50)
    ] = 3000,
    items: Annotated[
        int, typer.Option("--items", help="Products in the demo shop.", min=50)
    ] = 3000,
    data_dir: DataDir = None,
) -> None:
    """The main job: demo shop (or --dataset) -> gate -> store -> train -> evaluate -> report."""
    from privrec.evaluation.report import render_table
    from privrec.pipeline import run_demo

    with _errors(), _recsys(data_dir) as rs, _progress() as prog:
        stages = prog.add_task("main job", total=None)
        models_task = prog.add_task("models", total=None, visible=False)

        def on_stage(text: str) -> None:
            prog.update(stages, description=text)

        def on_models(n: int) -> None:
            prog.update(models_task, visible=True, total=2 * n, completed=0)

        def on_step(model: str, step: str) -> None:
            # Advance after the previous step finished; the final step is closed below.
            done = prog.tasks[models_task].completed
            prog.update(
                models_task,
                completed=done + (1 if prog.tasks[models_task].description != "models" else 0),
                description=f"{step} {model}",
            )

        result = run_demo(
            rs,
            dataset=dataset,
            out_dir=out,
            seed=seed,
            n_users=users,
            n_items=items,
            on_stage=on_stage,
            on_step=on_step,
            on_models=on_models,
        )
        prog.update(
            models_task, completed=prog.tasks[models_task].total or 0, description="models done"
        )
        prog.update(stages, total=1, completed=1, description="main job done")
    console.print(render_table(result.results))
    if result.ingest:
        console.print(f"gate: {json.dumps(result.ingest)}")
    console.print(f"protocol: {result.protocol}")
    console.print(f"best model: [bold]{result.best_model}[/] (now serving)")
    if result.sample:
        console.print(f"sample recommendations for {result.sample['user']}:")
        for r in result.sample["items"]:
            why = r.get("explanation", {}).get("text", "")
            console.print(f"  - {r['title'] or r['item']}  ({why})", markup=False, emoji=False)
    console.print(
        f"report: {result.report_html}\njson:   {result.report_json}\ntook {result.seconds:.1f}s"
    )


@app.command()
def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.", min=1, max=65535)] = 8000,
    data_dir: DataDir = None,
    access_log: Annotated[
        bool,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log one line per request (route templates and key ids only).",
        ),
    ] = False,
) -> None:
    """Serve the HTTP API (/v1, OpenAPI at /v1/openapi.json), the web pages and /metrics.

    API keys come from PRIVREC_API_KEYS ("client:KEY,admin:KEY") or from
    DATA_DIR/keys/api-keys.json, created (mode 0600) on the first start; they are never printed.
    """
    import uvicorn

    from privrec.server.app import create_app
    from privrec.server.security import load_or_create_keys
    from privrec.server.settings import ServerSettings

    with _errors():
        settings = _settings(data_dir)
        server = ServerSettings()
        if server.api_keys is None:
            _keys, created = load_or_create_keys(Path(settings.data_dir))
            where = Path(settings.data_dir) / "keys" / "api-keys.json"
            # never printed: a service's stdout ends up in logs that others read
            state = "created" if created else "in"
            console.print(f"API keys {state} {where} (mode 0600; read them from there)")
        application = create_app(settings, server=server)
    logging.getLogger("privrec.server.access").setLevel(
        logging.INFO if access_log else logging.WARNING
    )
    if access_log:
        log = logging.getLogger("privrec.server.access")
        log.addHandler(logging.StreamHandler())
        log.propagate = False  # the root handler would write every line a second time
    console.print(
        f"serving on http://{host}:{port}/  (API: /v1, schema: /v1/openapi.json, operator: /ops)"
    )
    uvicorn.run(
        application,
        host=host,
        port=port,
        access_log=False,
        log_level="warning",
        loop="auto",
        http="auto",
    )


if __name__ == "__main__":  # pragma: no cover
    app()
