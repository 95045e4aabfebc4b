"""Report commands and the main job: robustness, privacy frontier, demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from privrec.cli.common import (
    DataDir,
    app,
    console,
    errors,
    open_recsys,
    progress,
)


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
    with errors(), open_recsys(data_dir) as rs:
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
        str | None,
        typer.Option(
            "--models",
            help="Comma-separated DP models (default: all, one DP EASE: with the item-text "
            "prior where items have text).",
        ),
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
    with errors(), open_recsys(data_dir) as rs:
        ds = rs.reports.public_dataset(dataset) if dataset else None
        n_eps = len(eps) if eps else 6
        n_models = len(names) if names else 4
        with progress() as prog:
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
    """The main job: demo catalogue and shop -> gate -> store -> hybrid, DP and CF models ->
    evaluation, audit, search, explanations -> one report; the hybrid is served afterwards."""
    from privrec.evaluation.report import render_table
    from privrec.pipeline import run_demo

    with errors(), open_recsys(data_dir) as rs, progress() as prog:
        current: list[Any] = []
        models_task = prog.add_task("models", total=None, visible=False)

        def on_stage(text: str) -> None:
            # one line per stage: a finished stage keeps its own elapsed time
            if current:
                prog.update(current[-1], total=1, completed=1)
            current.append(prog.add_task(text, total=1))

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
        if current:
            prog.update(current[-1], total=1, completed=1)
    console.print(render_table(result.results))
    if result.ingest:
        console.print(f"gate: {json.dumps(result.ingest)}")
    if result.catalogue:
        console.print(
            f"catalogue: {result.catalogue['accepted']} products imported from "
            f"{result.catalogue['file']}"
        )
    console.print(f"protocol: {result.protocol}")
    _print_showcase(result.showcase)
    console.print(
        f"best model by NDCG@10: [bold]{result.best_model}[/]; "
        f"serving: [bold]{result.default_model}[/] (the default for `privrec serve`)"
    )
    if result.sample:
        console.print(f"sample recommendations for {result.sample['user']}:")
        for r in result.sample["items"]:
            why = r.get("explanation", {}).get("text", "")
            console.print(f"  - {r['title'] or r['item']}  ({why})", markup=False, emoji=False)
    _print_stages(result.stages)
    md = f"\nmarkdown: {result.report_md}" if result.report_md else ""
    console.print(
        f"report: {result.report_html}\njson:   {result.report_json}{md}\n"
        f"took {result.seconds:.1f}s"
    )


def _print_showcase(show: dict[str, Any]) -> None:
    """The search, privacy and audit figures of the main job, a line each."""
    if not show:
        return
    search = show["search"]
    q = search.get("quality")
    if q:
        console.print(
            f"search ({search['mode_summary']}): {q['queries']} category queries, "
            f"nDCG@10 {q['ndcg@10']:.3f}, Recall@10 {q['recall@10']:.3f}",
            markup=False,
        )
    for ex in search["examples"]:
        titles = "; ".join(i["title"] for i in ex["items"][:3]) or "nothing found"
        console.print(f"  {ex['query']!r} [{ex['mode']}]: {titles}", markup=False, emoji=False)
    p = show["privacy"]
    console.print(
        f"privacy: {p['model']} at epsilon={p['epsilon']} reaches NDCG@10 {p['ndcg']:.4f}, "
        f"{100 * p['ratio']:.0f}% of {p['baseline']} ({p['baseline_ndcg']:.4f}); "
        f"{p['ledger_text']}",
        markup=False,
    )
    for a in (p.get("audit") or {}).get("models", []):
        console.print(
            f"  audit {a['model']}: LiRA AUC {a['lira_auc']:.3f}, canary epsilon lower bound "
            f"{a['epsilon_lb']:.2f} (claimed {a['claimed_epsilon']})",
            markup=False,
        )


def _print_stages(stages: list[dict[str, Any]]) -> None:
    """Seconds per stage of the main job, as a table."""
    from rich.table import Table

    if not stages:
        return
    table = Table(title="stages")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for s in stages:
        table.add_row(s["stage"], f"{s['seconds']:.1f}")
    table.add_row("total", f"{sum(s['seconds'] for s in stages):.1f}", style="bold")
    console.print(table)
