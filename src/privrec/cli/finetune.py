"""`privrec finetune`: fine-tune the content encoder on the store, evaluate, deploy if better."""

from __future__ import annotations

import json
from typing import Annotated

import pydantic
import typer
from rich.progress import Progress, TaskID
from rich.table import Table

from privrec.cli.common import DataDir, app, console, err, errors, open_recsys, progress

_STAGES = {
    "prepare": "preparing co-interaction pairs",
    "train": "training the LoRA adapter",
    "evaluate": "evaluating frozen vs adapted",
    "deploy": "re-encoding the content model",
}


@app.command()
def finetune(
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training pairs.")] = 1,
    rank: Annotated[int, typer.Option("--rank", help="LoRA rank.")] = 8,
    max_pairs: Annotated[
        int, typer.Option("--max-pairs", help="At most this many training pairs (seeded sample).")
    ] = 2000,
    holdout: Annotated[
        float, typer.Option("--holdout", help="Share of items held out for the evaluation.")
    ] = 0.1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every random step.")] = 42,
    name: Annotated[
        str | None, typer.Option("--name", help="Adapter name (default content-<UTC time>).")
    ] = None,
    min_gain: Annotated[
        float,
        typer.Option("--min-gain", help="Held-out recall@10 gain the adapter needs to deploy."),
    ] = 0.01,
    force: Annotated[
        bool, typer.Option("--force", help="Deploy even if the adapter is not better.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Fine-tune the content encoder (LoRA) on shoppers' co-interactions; deploy only if better.

    Items are held out (none of their pairs is trained on); on their pairs the adapter is
    compared with the frozen encoder (recall@10, MRR, nDCG@10). Adapters, caches and temporary
    files stay in the data directory.
    """
    from privrec.service.finetune import FinetuneOptions

    try:
        opts = FinetuneOptions(
            epochs=epochs,
            rank=rank,
            max_pairs=max_pairs,
            holdout=holdout,
            seed=seed,
            name=name,
            force=force,
            min_gain=min_gain,
        )
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]).replace("_", "-") if first["loc"] else "option"
        err.print(f"[bold red]error:[/] --{field}: {first['msg']}")
        raise typer.Exit(2) from None
    # with --json the bar goes to stderr so that stdout is the JSON alone
    prog = progress()
    if as_json:
        prog = Progress(*prog.columns, console=err, transient=True)
    with errors(), open_recsys(data_dir) as rs, prog:
        tasks: dict[str, TaskID] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(_STAGES.get(stage, stage), total=total)
            prog.update(tasks[stage], completed=done, total=total)

        res = rs.finetune(opts, progress=report)
    if as_json:
        print(json.dumps(res.to_dict(), indent=2))
        return
    table = Table(title=f"held-out items: {res.data['eval_queries']} pairs")
    table.add_column("encoder")
    for k in ("recall@10", "mrr", "ndcg@10"):
        table.add_column(k, justify="right")
    table.add_row("frozen", *(f"{res.frozen[k]:.4f}" for k in ("recall@10", "mrr", "ndcg@10")))
    table.add_row(
        f"adapter {res.adapter}",
        *(f"{res.adapted[k]:.4f}" for k in ("recall@10", "mrr", "ndcg@10")),
    )
    console.print(table)
    console.print(
        f"trained on {res.data['train_pairs']} pairs in {res.training['seconds']:.1f}s "
        f"({res.training['steps']} steps); adapter in {res.path}",
        markup=False,
    )
    console.print(res.reason, markup=False)
    if res.content is not None:
        console.print(f"content model: version {res.content['version']} (active)", markup=False)
