"""SASRec on MovieLens-100K: one process vs DDP on 2 Ray Train workers (`models.ray_train`).

Same seed and global batch; dropout 0, so the only randomness (data order, negatives) comes from
the seed on every rank alike. Reported: the loss per epoch of both and their largest relative
difference, validation NDCG@10 per epoch, wall-clock seconds (the Ray run includes starting a
local cluster and its workers) and rank 0's seconds inside `fit`. Both runs share the machine's
2 cores; on them DDP cannot be faster than one process (two ranks split one global batch and
all-reduce every step): the figure shows what the Ray path costs, not a speed-up.

Usage: nice python benchmarks/ray_train.py [--epochs 3]
The last line of the output is the figures as JSON (also written to results/ray_train.json).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from _common import REPO, machine, shared_data

RESULTS = REPO / "benchmarks" / "results" / "ray_train.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    from privrec.data.loaders import load_dataset
    from privrec.data.splitters import leave_one_out
    from privrec.models.distributed import Job
    from privrec.models.ray_train import fit_ray
    from privrec.models.zoo import create_model

    ds = load_dataset(shared_data() / "movielens-100k")
    train, valid, _ = leave_one_out(ds)
    params: dict[str, Any] = {
        "embedding_size": 32,
        "num_blocks": 1,
        "num_heads": 1,
        "max_len": 50,
        "epochs": args.epochs,
        "batch_size": 256,
        "learning_rate": 0.002,
        "dropout": 0.0,
        "loss": "sampled_softmax",
        "n_negatives": 64,
        "num_threads": 1,
        "device": "cpu",
        "eval_every": 1,
        "patience": args.epochs,
    }
    out: dict[str, Any] = {
        "machine": machine(),
        "dataset": "movielens-100k (leave-one-out: train, validation)",
        "params": params,
        "load_avg_1m_before": round(os.getloadavg()[0], 2),
    }
    t0 = time.perf_counter()
    single = create_model("sasrec", **params).fit(train, rng=7, validation=valid)
    out["single"] = {
        "seconds": round(time.perf_counter() - t0, 2),
        "loss": [e["loss"] for e in single.train_log],  # type: ignore[attr-defined]
        "ndcg@10": [e["ndcg@10"] for e in single.train_log],  # type: ignore[attr-defined]
    }
    print("single", out["single"], flush=True)
    res = fit_ray(Job("sasrec", train, params, valid, seed=7), workers=args.workers)
    out["ray"] = {
        "workers": res.workers,
        "seconds": round(res.seconds, 2),
        "rank0_fit_seconds": round(res.train_seconds, 2),
        "startup_and_teardown_seconds": round(res.seconds - res.train_seconds, 2),
        "loss": [e["loss"] for e in res.train_log],
        "ndcg@10": [e["ndcg@10"] for e in res.train_log],
    }
    print("ray", out["ray"], flush=True)
    a, b = np.array(out["single"]["loss"]), np.array(out["ray"]["loss"])
    out["loss_max_rel_diff"] = float(np.max(np.abs(a - b) / np.abs(a)))
    out["ndcg_max_abs_diff"] = float(
        np.max(np.abs(np.array(out["single"]["ndcg@10"]) - np.array(out["ray"]["ndcg@10"])))
    )
    out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
