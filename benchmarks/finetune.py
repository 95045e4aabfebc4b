"""LoRA fine-tuning of the content encoder on the demo shop, through `privrec finetune`'s service.

The demo shop of the main job (`generate_shop(n_items=3000, n_users=3000, seed=42)`, as
`privrec demo` makes it) is ingested through the gate into a fresh data directory, then
`RecSys.finetune` runs the whole life cycle with the CLI's defaults unless told otherwise: pairs
of items one shopper interacted with within 2 steps, 10% of the items held out (seed 42), a
LoRA adapter trained on the rest, and for each held-out pair the partner ranked among all items
by cosine similarity, frozen MiniLM vs MiniLM + adapter (recall@10, MRR, nDCG@10). The adapter
is deployed only if its recall@10 is higher by `min_gain` (0.01) and its MRR not lower.

Run: .venv/bin/python benchmarks/finetune.py [--max-pairs N] [--epochs N] [--rank R]
    [--items N] [--users N] [--out NAME]   (JSON on the last line; results/finetune.json)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from _common import REPO, emit, machine

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-pairs", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--items", type=int, default=3000)
    ap.add_argument("--users", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", default="finetune.json", help="file name in benchmarks/results")
    args = ap.parse_args()

    from privrec.core.settings import Settings
    from privrec.data.synthetic import generate_shop
    from privrec.service import RecSys
    from privrec.service.finetune import FinetuneOptions

    with tempfile.TemporaryDirectory() as tmp:
        events, catalogue = generate_shop(n_items=args.items, n_users=args.users, seed=42)
        with RecSys(Settings(data_dir=Path(tmp) / "data")) as rs:
            rs.add_items(catalogue)
            rs.ingest_frame(events)
            t0 = time.perf_counter()
            res = rs.finetune(
                FinetuneOptions(
                    max_pairs=args.max_pairs,
                    epochs=args.epochs,
                    rank=args.rank,
                    seed=args.seed,
                    name="demo",
                )
            )
            seconds = time.perf_counter() - t0
    out = {
        "benchmark": "finetune",
        "dataset": f"demo shop ({args.items} items, {args.users} shoppers, seed 42)",
        "seconds_total": round(seconds, 1),
        **res.to_dict(),
        "machine": machine(),
    }
    out.pop("path", None)
    (REPO / "benchmarks" / "results" / args.out).write_text(json.dumps(out, indent=2))
    emit(out)


if __name__ == "__main__":
    main()
