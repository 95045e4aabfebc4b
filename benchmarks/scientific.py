"""Amazon Scientific (UniSRec-style processed data, with item text), its GIVEN split, full ranking.

Data: ../shared/data/amazon-scientific-unisrec (see its PROVENANCE.md): 8,442 users, 4,385 items,
59,427 interactions, histories truncated to the last 50 items. The split is the one shipped in the
`.train/.valid/.test.inter` files: per user, test = the last item, valid = the second to last,
train = every earlier item. `load_unisrec_split` rebuilds it and checks it against the files
(it raises if a target differs); `leave_one_out` of the rebuilt sequences gives the same three
parts, and `leave_one_out_test` gives training + validation (the history a test item is ranked
with).

Protocol: every item of the catalogue is ranked (full ranking) for each user, the user's history
items masked; HR@10 (= Recall@10 with one held-out item) and NDCG@10 of the test item.
Hyper-parameters and epochs are chosen on the validation item with models trained on the training
part only; the chosen settings are refit on training + validation and the test item is looked at
once. Models:
  - popularity, item-kNN and EASE (grids below; `_common.tune_and_test`);
  - content: frozen all-MiniLM-L6-v2 vectors of the item text ("title. categories. brand."),
    user profile = recency-weighted sum of the history's vectors; half-life chosen on validation;
  - SASRec (ID items) and SASRec with ID + frozen MiniLM text item vectors (MLP adaptor): the
    epoch chosen on the validation item (early stopping), then refit for that many epochs;
  - hybrid: `HybridRecommender` with the best classic model (by validation NDCG@10) as CF, the
    SASRec variant with the better validation NDCG@10 (its selected epochs) as the sequential part,
    content (the chosen half-life) and popularity; fit on training + validation, its own
    validation split being the validation item (see sequential_beauty.py), so its blend weights
    are chosen on the validation item too.

Published rows: ../shared/anchors.md holds none for Scientific, so nothing is compared here.
UniSRec-family papers report on this data with the same given split and full ranking
(RecBole, history masked), so their Recall@10 / NDCG@10 would be comparable in protocol; their
figures have not been checked into the anchors and are not quoted.

Run: .venv/bin/python benchmarks/scientific.py [--quick]   (JSON on the last line). Torch runs on 1
thread (SequentialConfig.num_threads); set OMP_NUM_THREADS=1 for the linear algebra too.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from typing import Any

import numpy as np

from _common import REPO, emit, machine, shared_data, tune_and_test
from privrec.data.loaders import load_unisrec, load_unisrec_split
from privrec.data.splitters import leave_one_out, leave_one_out_test
from privrec.models.zoo import create_model
from sequential_beauty import (
    CONFIGS,
    QUICK,
    TEXT_VARIANT,
    evaluate,
    history_scorer,
    item_text_matrix,
)

METRICS = ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "mrr")
CLASSIC = [
    ("popularity", {"binary": [True]}, {}),
    ("itemknn", {"k": [20, 50, 200], "shrink": [0.0, 10.0]}, {"binary": True}),
    ("ease", {"reg": [20.0, 50.0, 150.0, 500.0]}, {"binary": True}),
]
CONTENT = ("content", {"recency_half_life": [1.0, 3.0, 8.0]}, {})
# The Beauty SASRec settings (sequential_beauty.CONFIGS), checked on validation every epoch here:
# an epoch is a few seconds on this small data set.
SASREC = {**CONFIGS["sasrec"], "eval_every": 1, "patience": 5, "time_budget_s": 900}


def _short(res: dict[str, Any]) -> dict[str, float]:
    return {k: round(float(res[k]), 5) for k in METRICS if k in res}


def sasrec_rows(
    label: str, params: dict[str, Any], sub: Any, valid: Any, train: Any, test: Any, text: Any
) -> tuple[list[dict[str, Any]], int]:
    """Select the epoch on the validation item, refit on train + valid for that many, test once."""
    extra = {} if text is None else {"item_text_embeddings": text}
    m = create_model("sasrec", **params)
    t0 = time.perf_counter()
    m.fit(sub, validation=valid, rng=42, **extra)
    sel_s = time.perf_counter() - t0
    best = next(e for e in m.train_log if e["epoch"] == m.best_epoch)
    again = {**params, "epochs": m.best_epoch, "time_budget_s": None}
    m2 = create_model("sasrec", **again)
    t0 = time.perf_counter()
    m2.fit(train, rng=42, **extra)
    fit_s = time.perf_counter() - t0
    fig = evaluate(m2, train, test)
    print(
        f"{label:12s} refit {m.best_epoch} epochs: masked {fig['masked']}  fit "
        f"{fit_s:.0f}s (selection {sel_s:.0f}s)",
        flush=True,
    )
    row = {
        "model": label,
        "params": again,
        "test": fig,
        "metrics": fig["masked"],
        "valid_at_best_epoch": {
            "hr@10": round(best["hr@10"], 5),
            "ndcg@10": round(best["ndcg@10"], 5),
        },
        "best_epoch": m.best_epoch,
        "train_seconds": round(fit_s, 1),
        "selection_seconds": round(sel_s, 1),
        "curve": [{k: round(v, 5) for k, v in e.items()} for e in m.train_log if "ndcg@10" in e],
    }
    return [row], m.best_epoch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--quick", action="store_true", help="2 SASRec epochs, small grids: a smoke run"
    )
    ap.add_argument(
        "--cache-dir",
        default=os.environ.get("PRIVREC_TEXT_CACHE_DIR")
        or str(REPO / "privrec-data" / "cache" / "embeddings"),
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    t0 = time.perf_counter()
    folder = shared_data() / "amazon-scientific-unisrec"
    f_train, f_valid, f_test = load_unisrec_split(
        folder
    )  # raises unless it reproduces the files' split
    ds = load_unisrec(folder)
    sub, valid, test0 = leave_one_out(ds)
    train, test = leave_one_out_test(ds)
    for a, b in ((f_train, sub), (f_valid, valid), (f_test, test0), (f_test, test)):
        assert (
            a.n_events == b.n_events
            and np.array_equal(a.user_idx, b.user_idx)
            and np.array_equal(a.item_idx, b.item_idx)
        )
    rows: list[dict[str, Any]] = []
    valid_ndcg: dict[str, float] = {}
    for name, grid, fixed in [*CLASSIC, CONTENT]:
        if args.quick:
            grid = {k: v[:1] for k, v in grid.items()}
        if name == "content":
            fixed = {**fixed, "cache_dir": args.cache_dir}
        row = tune_and_test(
            name, grid, fixed, sub, valid, train, test, protocol="loo", metrics=METRICS
        )
        row["metrics"] = _short(row["metrics"])
        if row["tuning"]:
            valid_ndcg[name] = max(r["ndcg@10"] for r in row["tuning"])
        rows.append(row)
        print(
            f"{name:12s} {row['metrics']}  fit {row['train_seconds']:.1f}s  params {row['params']}",
            flush=True,
        )

    text, text_info = item_text_matrix(ds, args.cache_dir)
    q = {**QUICK} if args.quick else {}
    seq: dict[str, tuple[float, dict[str, Any]]] = {}  # variant -> (validation NDCG@10, settings)
    for label, params, t in (
        ("sasrec", {**SASREC, **q}, None),
        ("sasrec+text", {**SASREC, **TEXT_VARIANT, **q}, text),
    ):
        r, best_epoch = sasrec_rows(label, params, sub, valid, train, test, t)
        rows += r
        seq[label] = (
            r[0]["valid_at_best_epoch"]["ndcg@10"],
            {**params, "epochs": max(1, best_epoch), "time_budget_s": None},
        )

    # The hybrid's parts: the classic CF model, the SASRec variant and the content half-life that
    # did best on the validation item (the text SASRec reads the MiniLM matrix from a file).
    cf = max(("itemknn", "ease"), key=lambda n: valid_ndcg.get(n, -1.0))
    cf_params = next(x["params"] for x in rows if x["model"] == cf)
    seq_name = max(seq, key=lambda n: seq[n][0])
    seq_params = seq[seq_name][1]
    if seq_name == "sasrec+text":
        path = REPO / "privrec-data" / "bench" / "scientific_minilm.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.asarray(text, np.float32))
        seq_params = {**seq_params, "item_text_embeddings": str(path)}
    content_params = next(x["params"] for x in rows if x["model"] == "content")
    hp = {
        "cf": cf,
        "cf_params": cf_params,
        "sequential": "sasrec",
        "sequential_params": seq_params,
        "content_params": content_params,
        "max_valid_users": ds.n_users,
        "seed": 42,
    }
    hyb = create_model("hybrid", **hp)
    t1 = time.perf_counter()
    hyb.fit(train, rng=42)
    fit_s = time.perf_counter() - t1
    fig = evaluate(hyb, train, test, scorer=history_scorer(hyb, train), unmasked=False)
    print(
        f"hybrid       masked {fig['masked']}  weights {hyb.weights}  fit {fit_s:.0f}s", flush=True
    )
    rows.append(
        {
            "model": f"hybrid ({cf} + {seq_name} + content + popularity)",
            "params": hp,
            "test": fig,
            "metrics": fig["masked"],
            "weights": hyb.weights,
            "tuning": hyb.tuning,
            "train_seconds": round(fit_s, 1),
        }
    )
    emit(
        {
            "benchmark": "scientific",
            "protocol": (
                "the dataset's given leave-one-out split (checked against its .inter files); full "
                "ranking over all items, history items masked; settings and epochs chosen on the "
                "validation item, refit on train + valid, test item looked at once"
            ),
            "users": ds.n_users,
            "items": ds.n_items,
            "events": ds.n_events,
            "text": text_info,
            "rows": rows,
            "published": [],
            "published_note": "no Scientific rows in ../shared/anchors.md; nothing compared",
            "seconds": round(time.perf_counter() - t0, 1),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
