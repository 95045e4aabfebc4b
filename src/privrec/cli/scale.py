"""Jobs beyond one process: `privrec precompute`, `privrec train-sequential`, and the `--ray`
options of `privrec train`.

All go through the service (`RecSys.train(sharded=...)`, `RecSys.precompute`); the shards run as
Ray tasks, and SASRec / BERT4Rec train with DDP on Ray Train workers (`models.ray_train`), on a
local cluster started for the job or on a running one (`--ray-address`, see the README's
"Several machines with Ray").
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from privrec.cli.common import DataDir, app, console, errors, open_recsys, parse_params, progress
from privrec.models.sharded import ShardedFit, ShardRunner

RayFlag = Annotated[
    bool, typer.Option("--ray", help="Run the user shards as Ray tasks (needs the scale extra).")
]
Shards = Annotated[
    int | None,
    typer.Option("--shards", min=1, help="User shards (default: 2 with --ray, else 1)."),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray-address", help="A running Ray cluster (`ray start --head`); default: a local one."
    ),
]


def sharded_plan(use_ray: bool, shards: int | None, address: str | None) -> ShardedFit | None:
    """The sharded fit the options ask for; None: the ordinary single-process fit."""
    if not use_ray and shards is None and address is None:
        return None
    use_ray = use_ray or address is not None
    n = shards if shards is not None else (2 if use_ray else 1)
    if use_ray:
        # with Ray, sasrec / bert4rec train on n Ray Train workers; the others as before
        from privrec.models.ray_train import RayTrainFit

        return RayTrainFit(n, ShardRunner(use_ray=True, address=address))
    return ShardedFit(n, ShardRunner(use_ray=use_ray, address=address))


@app.command()
def precompute(
    k: Annotated[int, typer.Option("--k", "-k", min=1, help="List length.")] = 50,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model name (default: the default model).")
    ] = None,
    use_ray: RayFlag = False,
    shards: Shards = None,
    ray_address: RayAddress = None,
    data_dir: DataDir = None,
) -> None:
    """Write every shopper's top-k list of a model's active version (seen items excluded)."""
    plan = sharded_plan(use_ray, shards, ray_address) or ShardedFit(1)
    with errors(), open_recsys(data_dir) as rs, progress() as prog:
        task = prog.add_task(f"scoring every shopper ({plan.n_shards} shards)", total=None)
        try:
            res = rs.precompute(k, model=model, sharded=plan)
        finally:
            plan.runner.close()
        prog.update(task, total=1, completed=1)
    console.print_json(json.dumps(res.to_dict()))


@app.command("train-sequential")
def train_sequential(
    model: Annotated[
        str, typer.Option("--model", "-m", help="sasrec or bert4rec (or a sharded model).")
    ] = "sasrec",
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Hyper-parameter NAME=VALUE (JSON value)."),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", "-w", min=1, help="Ray Train workers (DDP ranks).")
    ] = 2,
    seed: Annotated[int | None, typer.Option("--seed", help="Training seed.")] = None,
    ray_address: RayAddress = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="Ray Train's run storage: on several machines a folder every node reaches "
            "(NFS) or s3://...; default: a temporary folder.",
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Train SASRec / BERT4Rec with DDP on Ray Train workers and make it the active version."""
    from privrec.models.ray_train import RayTrainFit

    params = parse_params(param or [])
    plan = RayTrainFit(workers, ShardRunner(use_ray=True, address=ray_address), storage)
    with errors(), open_recsys(data_dir) as rs, progress() as prog:
        task = prog.add_task(f"training {model} on {workers} Ray Train workers", total=None)
        try:
            if seed is None:
                res = rs.train(model, params=params, sharded=plan)
            else:
                res = rs.train(model, params=params, sharded=plan, seed=seed)
        finally:
            plan.runner.close()
        prog.update(task, total=1, completed=1)
    last = plan.last
    summary = {
        "model": res.model,
        "version": res.version,
        "active": res.active,
        "workers": workers,
        "seconds": round(last.seconds, 2) if last else None,
        "train_seconds": round(res.train_seconds, 2),
        "loss_per_epoch": [round(float(e["loss"]), 6) for e in last.train_log] if last else [],
    }
    console.print_json(json.dumps(summary))
