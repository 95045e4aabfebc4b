"""Jobs beyond one process: `privrec precompute`, and the `--ray` options of `privrec train`.

Both go through the service (`RecSys.train(sharded=...)`, `RecSys.precompute`); the shards run as
Ray tasks on a local cluster started for the job, or on a running one (`--ray-address`, see the
README's "Several machines with Ray").
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from privrec.cli.common import DataDir, app, console, errors, open_recsys, progress
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
