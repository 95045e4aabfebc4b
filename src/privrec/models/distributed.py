"""Distributed training of the sequence models (SASRec, BERT4Rec) with torch.distributed DDP.

Launch on one or more machines with torchrun (gloo on CPU, NCCL on CUDA, chosen automatically):

    torchrun --nproc_per_node=2 -m privrec.models.distributed \\
        --model sasrec --dataset ../shared/data/amazon-beauty --out runs/sasrec \\
        --split loo --set embedding_size=64 --set loss=sampled_softmax

Every rank loads the dataset, builds the same global batches from the same seed and trains on its
strided share of each; DDP averages the gradients and the loss is scaled so that the update equals
single-process training on the whole global batch (`models.sequential_train`). Validation
(`--split loo`) is shared out across ranks and its sums all-reduced, so every rank takes the same
early-stopping decision. Rank 0 saves the model (safetensors + JSON) and prints a JSON summary as
its last line.

The process-group helpers themselves (`DistInfo`, `init_process_group`, `free_port`) live in
`models.nn.runtime`; this module is the launcher.

`fit_local(...)` runs the same thing in N local processes (torch.multiprocessing, gloo on
127.0.0.1 and a free port): the tests use it, and it is handy on a many-core box.
`models.ray_train.fit_ray(job)` runs the same `Job` on Ray Train workers (`TorchTrainer`), on a
local or a multi-machine Ray cluster (`privrec train-sequential`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privrec.data.dataset import InteractionDataset
from privrec.models.base import Recommender
from privrec.models.nn.runtime import DistInfo, free_port, init_process_group

__all__ = ["Job", "fit_local", "free_port", "init_process_group", "main"]


@dataclass
class Job:
    """One model to train in `fit_local`: the model name, its settings and data, the seed."""

    model: str
    dataset: InteractionDataset
    params: dict[str, Any] = field(default_factory=dict)
    validation: InteractionDataset | None = None
    seed: int = 42


def _fit_worker(rank: int, world_size: int, port: int, jobs: list[Job], outs: list[str]) -> None:
    """One process of `fit_local`: join the group, train every job, rank 0 saves each."""
    import torch.distributed as dist

    from privrec.models.zoo import create_model

    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "LOCAL_RANK": str(rank)}
    )
    store = dist.TCPStore("127.0.0.1", port, world_size, is_master=False)
    init_process_group("gloo", rank=rank, world_size=world_size, store=store)
    try:
        for job, out in zip(jobs, outs, strict=True):
            model = create_model(job.model, **job.params)
            model.fit(job.dataset, rng=job.seed, validation=job.validation)  # type: ignore[call-arg]
            if rank == 0:
                model.save(out)
            dist.barrier()
    finally:
        dist.destroy_process_group()


def fit_local(jobs: Job | list[Job], *, world_size: int = 2) -> list[Recommender]:
    """Train each job with DDP in `world_size` local CPU processes (gloo on 127.0.0.1).

    The processes start once for all jobs (starting them is the slow part); rank 0 saves each model
    to a temporary folder and this process loads them back. Settings default to device="cpu".
    """
    import torch.distributed as dist
    import torch.multiprocessing as mp

    jobs = [jobs] if isinstance(jobs, Job) else list(jobs)
    for job in jobs:
        job.params = {"device": "cpu", **job.params}
    # This process hosts the rendezvous store, as torchrun's agent does. When rank 0 hosted it,
    # rank 0 could exit while rank 1 was still tearing its group down, and rank 1 then aborted
    # in native code now and then (SIGABRT, "terminate called without an active exception").
    store = dist.TCPStore("127.0.0.1", 0, world_size, is_master=True, wait_for_workers=False)
    with tempfile.TemporaryDirectory() as tmp:
        outs = [str(Path(tmp) / f"model{i}") for i in range(len(jobs))]
        mp.spawn(
            _fit_worker, args=(world_size, store.port, jobs, outs), nprocs=world_size, join=True
        )
        return [Recommender.load(o) for o in outs]


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (run it under torchrun; alone it trains in one process)."""
    parser = argparse.ArgumentParser(
        prog="python -m privrec.models.distributed", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--model", required=True, choices=["sasrec", "bert4rec"])
    parser.add_argument(
        "--dataset",
        required=True,
        help="dataset folder or file (any format privrec.data.loaders detects)",
    )
    parser.add_argument(
        "--out", required=True, help="folder for the trained model (written by rank 0)"
    )
    parser.add_argument(
        "--config", help="model settings as a JSON object, or the path of a JSON file"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one setting (JSON value), repeatable",
    )
    parser.add_argument(
        "--split",
        choices=["none", "loo"],
        default="none",
        help="loo: train on all but the last two items, validate on the second to last",
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--backend", default="auto", choices=["auto", "gloo", "nccl"])
    args = parser.parse_args(argv)

    import time

    import torch.distributed as dist

    from privrec.data.loaders import load_dataset
    from privrec.data.splitters import leave_one_out
    from privrec.models.zoo import create_model

    params: dict[str, Any] = {}
    if args.config:
        p = Path(args.config)
        params.update(json.loads(p.read_text()) if p.exists() else json.loads(args.config))
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected KEY=VALUE")
        params[key.strip()] = _parse_value(value)

    distributed = "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    info = init_process_group(args.backend) if distributed else DistInfo()
    try:
        ds = load_dataset(args.dataset)
        valid = None
        if args.split == "loo":
            ds, valid, _ = leave_one_out(ds)
        model = create_model(args.model, **params)
        t0 = time.perf_counter()
        model.fit(ds, rng=args.seed, validation=valid)  # type: ignore[call-arg]
        seconds = time.perf_counter() - t0
        if info.rank == 0:
            model.save(args.out)
            log = getattr(model, "train_log", [])
            summary = {
                "model": args.model,
                "world_size": info.world_size,
                "params": params,
                "epochs_run": len(log),
                "best_epoch": getattr(model, "best_epoch", None),
                "final": log[-1] if log else None,
                "train_seconds": round(seconds, 3),
                "out": str(args.out),
            }
            print(json.dumps(summary, default=float), flush=True)
        if distributed:
            dist.barrier()
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
