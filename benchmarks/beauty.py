"""Amazon Beauty (S3-Rec 5-core), leave-one-out, FULL ranking, beside the published rows.

Protocol (../shared/data/amazon-beauty/PROVENANCE.md): per user, last item = test, second to last
= validation, the rest = training; rank ALL items with the user's training items masked; HR@10,
NDCG@10 (one relevant item, so HR@10 = Recall@10). Hyper-parameters are chosen on the validation
item with the model fit on the training part only; the chosen model is refit on training +
validation and evaluated once on the test item.

Run: .venv/bin/python benchmarks/beauty.py   (JSON on the last line)
"""

from __future__ import annotations

import time

from _common import emit, machine, shared_data, tune_and_test
from privrec.data.loaders import load_amazon_s3rec
from privrec.data.splitters import leave_one_out, leave_one_out_test

PUBLISHED = [
    {"model": "PopRec", "hr@10": 0.0152, "ndcg@10": 0.0068},
    {"model": "BERT4Rec", "hr@10": 0.0347, "ndcg@10": 0.0170},
    {"model": "SASRec", "hr@10": 0.0605, "ndcg@10": 0.0318},
    {"model": "S3-Rec", "hr@10": 0.0647, "ndcg@10": 0.0327},
    {"model": "SASRec + sampled softmax (tuned)", "hr@10": 0.0921, "ndcg@10": 0.0531},
    {"model": "uSASRec", "hr@10": 0.0928, "ndcg@10": 0.0523},
]
METRICS = ("hr@10", "ndcg@10", "mrr", "coverage@10")

ROSTER = [
    ("popularity", {"binary": [True]}, {}),
    ("itemknn", {"k": [50, 200], "shrink": [0.0, 10.0]}, {"binary": True}),
    ("ease", {"reg": [20.0, 50.0, 150.0]}, {"binary": True}),
    (
        "als",
        {"alpha": [1.0, 10.0, 20.0], "reg": [10.0, 30.0]},
        {"binary": True, "epochs": 15, "embedding_size": 64},
    ),
    ("bpr", {"embedding_size": [64], "epochs": [20]}, {"binary": True}),
]


def main() -> None:
    t0 = time.perf_counter()
    ds = load_amazon_s3rec(shared_data() / "amazon-beauty")
    sub_train, valid, _ = leave_one_out(ds)
    train, test = leave_one_out_test(ds)
    rows = []
    for name, grid, fixed in ROSTER:
        row = tune_and_test(
            name, grid, fixed, sub_train, valid, train, test, protocol="loo", metrics=METRICS
        )
        rows.append(row)
        m = row["metrics"]
        print(
            f"{name:11s} HR@10 {m['hr@10']:.4f}  NDCG@10 {m['ndcg@10']:.4f}  fit "
            f"{row['train_seconds']:.2f}s  params {row['params']}",
            flush=True,
        )
    emit(
        {
            "benchmark": "beauty",
            "protocol": "leave-one-out, full ranking over all items, training items masked; tuning "
            "on the validation item",
            "users": ds.n_users,
            "items": ds.n_items,
            "events": ds.n_events,
            "rows": rows,
            "published": PUBLISHED,
            "seconds": round(time.perf_counter() - t0, 1),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
