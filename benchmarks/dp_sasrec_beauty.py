"""DP-SASRec (user-level DP-SGD, Opacus ghost clipping) on Amazon Beauty at one epsilon.

Leave-one-out, full ranking, history masked (as benchmarks/beauty.py). One training example is
one user's latest window of 51 items; Poisson sampling rate 0.05 (about 1,100 users a step),
per-user clipping at 1.0, noise set by Opacus' RDP accountant for (epsilon, 1/(10 x users)).
Settings are not tuned (no validation runs were affordable): embedding 32, 1 block, Adam.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dp_sasrec_beauty.py [--epsilon 8] [--epochs
    20] [--lr 0.01]
(JSON on the last line).
"""

from __future__ import annotations

import argparse
import time
import warnings

from _common import emit, machine, shared_data
from privrec.data.loaders import load_amazon_s3rec
from privrec.data.splitters import leave_one_out_test
from privrec.evaluation.protocol import evaluate_loo
from privrec.models.zoo import create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epsilon", type=float, default=8.0)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    ds = load_amazon_s3rec(shared_data() / "amazon-beauty")
    train, test = leave_one_out_test(ds)
    params = {
        "epsilon": args.epsilon,
        "epochs": args.epochs,
        "sample_rate": 0.05,
        "embedding_size": 32,
        "max_len": 50,
        "grad_sample_mode": "ghost",
        "learning_rate": args.lr,
        "num_threads": 1,
    }
    t = time.perf_counter()
    model = create_model("dp_sasrec", **params).fit(train, rng=42)
    fit_s = time.perf_counter() - t
    metrics = evaluate_loo(model, train, test, metrics=["hr@10", "ndcg@10"])
    print(
        f"dp_sasrec {params}: {metrics} fit {fit_s:.0f}s noise multiplier "
        f"{model.noise_multiplier:.3f}",
        flush=True,
    )
    emit(
        {
            "benchmark": "dp_sasrec_beauty",
            "params": params,
            "hr@10": metrics["hr@10"],
            "ndcg@10": metrics["ndcg@10"],
            "fit_seconds": round(fit_s, 1),
            "noise_multiplier": model.noise_multiplier,
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
