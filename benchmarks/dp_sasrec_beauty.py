"""DP-SASRec (user-level DP-SGD, Opacus ghost clipping) on Amazon Beauty at one epsilon.

Leave-one-out, full ranking, history masked (as benchmarks/beauty.py). One training example is
one user's latest window of 51 items; Poisson sampling rate 0.05 (about 1,100 users a step),
per-user clipping at 1.0, noise set by Opacus' RDP accountant for (epsilon, 1/(10 x users)).
Settings are not tuned (no validation runs were affordable): embedding 32, 1 block, Adam.

`--item-repr text`: the item table is replaced by the frozen public MiniLM vectors of the item
text (384-d, $PRIVREC_TEXT_CACHE_DIR caches them) through a trainable 384 -> d linear adaptor,
tied for input and output; 1 block, 1 head. The trainable parameter count of both variants is
printed. `--draws N` repeats the fit with fresh secure noise (N releases, each its own budget).

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dp_sasrec_beauty.py [--epsilon 8] [--epochs
    20] [--lr 0.01]
(JSON on the last line).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

from _common import emit, machine, shared_data
from privrec.data.loaders import load_amazon_s3rec
from privrec.data.splitters import leave_one_out_test
from privrec.evaluation.protocol import evaluate_loo
from privrec.models.dp.sasrec import trainable_parameters
from privrec.models.zoo import create_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epsilon", type=float, default=8.0)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--item-repr", choices=["id", "text"], default="id")
    ap.add_argument("--embedding-size", type=int, default=32)
    ap.add_argument("--draws", type=int, default=1)
    ap.add_argument("--seed", type=int, default=42, help="init/negatives of the first draw")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    ds = load_amazon_s3rec(shared_data() / "amazon-beauty")
    train, test = leave_one_out_test(ds)
    params = {
        "epsilon": args.epsilon,
        "epochs": args.epochs,
        "sample_rate": 0.05,
        "embedding_size": args.embedding_size,
        "max_len": 50,
        "grad_sample_mode": "ghost",
        "learning_rate": args.lr,
        "num_threads": 1,
        "num_blocks": 1,
        "num_heads": 1,
    }
    if args.item_repr == "text":
        params.update(item_repr="text", text_cache_dir=os.environ.get("PRIVREC_TEXT_CACHE_DIR"))
    draws = []
    for draw in range(args.draws):
        t = time.perf_counter()
        model = create_model("dp_sasrec", **params).fit(train, rng=args.seed + draw)
        fit_s = time.perf_counter() - t
        metrics = evaluate_loo(model, train, test, metrics=["hr@10", "ndcg@10"])
        n_train = trainable_parameters(model.net)
        print(
            f"dp_sasrec draw {draw} {params}: {metrics} fit {fit_s:.0f}s noise multiplier "
            f"{model.noise_multiplier:.3f} trainable parameters {n_train}",
            flush=True,
        )
        draws.append({**metrics, "fit_seconds": round(fit_s, 1)})
    emit(
        {
            "benchmark": "dp_sasrec_beauty",
            "params": params,
            "hr@10": sum(d["hr@10"] for d in draws) / len(draws),
            "ndcg@10": sum(d["ndcg@10"] for d in draws) / len(draws),
            "draws": draws,
            "trainable_parameters": n_train,
            "noise_multiplier": model.noise_multiplier,
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
