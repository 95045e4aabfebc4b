"""`privrec audit`: the membership audits with power (LiRA and canaries) on a public dataset."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from privrec.cli.common import DataDir, app, console, errors, open_recsys, parse_params


@app.command()
def audit(
    model: Annotated[str, typer.Option("--model", "-m", help="A registered model name.")],
    dataset: Annotated[
        str, typer.Option("--dataset", help="ml100k, beauty or a public dataset folder.")
    ],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="Hyper-parameter NAME=VALUE (JSON value)."),
    ] = None,
    shadows: Annotated[int, typer.Option("--shadows", help="LiRA models.", min=2)] = 8,
    runs: Annotated[int, typer.Option("--runs", help="Canary training runs.", min=2)] = 8,
    canaries: Annotated[int, typer.Option("--canaries", help="Canary shoppers.", min=2)] = 32,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the splits and canaries.")] = 0,
    data_dir: DataDir = None,
) -> None:
    """How much an attacker learns about membership: LiRA (AUC, TPR at 0.1% / 1% FPR with
    intervals) and the canary audit's empirical lower bound on epsilon, as JSON.

    Public datasets only: the audit trains many models and publishes what they reveal, which
    on a shop's own data would be further releases of it.
    """
    from privrec.evaluation.audit_suite import run_audit
    from privrec.models.zoo import available_models

    params = parse_params(param or [])
    if model not in available_models():
        raise typer.BadParameter(
            f"{model!r} is not a model; choose from {', '.join(available_models())}",
            param_hint="--model",
        )
    with errors(), open_recsys(data_dir) as rs:
        ds = rs.reports.public_dataset(dataset)
        result = run_audit(
            model, params, ds, shadows=shadows, runs=runs, canaries=canaries, seed=seed
        )
    lira, canary = result.lira, result.canary
    print(json.dumps(result.to_dict(), default=str))
    console.print(
        f"LiRA AUC {lira.auc:.3f}; canary epsilon lower bound {canary.epsilon_lb:.3f} "
        f"(claimed {canary.to_dict()['claimed_epsilon']})",
        markup=False,
    )
