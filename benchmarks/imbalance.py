"""Class imbalance on the Taobao log: predict the next PURCHASE from the multi-behaviour history,
with and without purchase-oriented training (event-type weights, purchase resampling).

Data: `../shared/data/taobao-userbehavior-samples` (a real 2-hour slice of Alibaba's Taobao
UserBehavior log; its PROVENANCE.md: 96,168 complete rows, 58,732 users, 75,384 items, 2.2% of the
events are purchases, about 1.6 events per user). The PROVENANCE names no published protocol or
figures for this slice, so there is nothing published to compare with; the baselines below are
ours.

Protocol (leave-last-purchase-out, full ranking):
- a case: per user, their LAST purchase that has at least one earlier event of theirs; its
  history is every event of theirs before it (views, carts, favourites, purchases, in time
  order). Users without such a purchase only train.
- users with a case are split by a seeded permutation (seed 0): 30% validation users, 70% test
  users. Choosing: trained without every case user's events from their case purchase on, scored
  on the validation users' cases. Testing: trained without the test users' events from their
  case purchase on (the validation users' events all train), scored once on the test users.
  No test purchase is seen before the one test run.
- ranking: the target among ALL items, history items NOT masked (a shopper often buys what they
  viewed minutes before: the test item is in the history for `target_in_history` of the users);
  ties broken as the models' top-k does (lower item index first). HR@10 and NDCG@10.
- choice: a small, fixed grid of event weights (item-kNN) and of purchase target weights x
  resampling ratios (SASRec, with its epoch) is scored on the validation purchases only; the best
  by validation NDCG@10 is refit on the whole training part and tested once. "without" is the
  model with the weighting off (item-kNN's default 0/1 matrix, SASRec with every target weighing
  1), refit and tested the same way. SASRec's refit runs the number of epochs its validation run
  chose. Where the choice is "off" (the weighting did not win on validation), "weighted" adds,
  for information only, the test figures of the best weighted grid point (not a selected model).
- EASE is not run: with 75,384 items its dense Gram matrix and inverse need ~23 GB each;
  item-kNN (sparse) is the CF model here.
- `evaluation/tuning.py` is not used: it scores the next event of any type with history items
  masked, not the next purchase.

Uncertainty: a paired bootstrap (2,000 resamples of the test users, seed 0) of NDCG@10(with) -
NDCG@10(without) gives a 95% interval.

Run: nice .venv/bin/python benchmarks/imbalance.py [--quick] (JSON on the last line). Seeded
(model seeds 42; SASRec on 1 CPU thread).
"""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import numpy as np

from _common import emit, machine, shared_data
from privrec.core.types import DEFAULT_EVENT_WEIGHTS, EVENT_CODE, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.data.taobao import load_taobao_userbehavior
from privrec.models.itemknn import ItemKNN
from privrec.models.sasrec import SASRec

PURCHASE = EVENT_CODE["purchase"]
SEED = 42
VALID_SHARE = 0.3

KNN_GRID: list[dict[str, Any]] = [
    {},  # the default 0/1 matrix: "without"
    {"binary": False, "event_weights": dict(DEFAULT_EVENT_WEIGHTS)},  # view 1, cart 3, fav 4, buy 5
    {
        "binary": False,
        "event_weights": {"view": 1.0, "cart": 2.0, "favorite": 2.0, "purchase": 10.0},
    },
    {
        "binary": False,
        "event_weights": {"view": 1.0, "cart": 5.0, "favorite": 5.0, "purchase": 20.0},
    },
]
SASREC_BASE: dict[str, Any] = {
    "embedding_size": 64,
    "num_blocks": 1,
    "max_len": 20,
    "dropout": 0.3,
    "loss": "sampled_softmax",
    "n_negatives": 256,
    "batch_size": 256,
    "learning_rate": 2e-3,
    "long_sequences": "chunks",
    "eval_mask_history": False,
    "patience": 2,
    "num_threads": 1,
    "seed": SEED,
}
SASREC_GRID: list[dict[str, Any]] = [
    {},  # every target weighs 1, no resampling: "without"
    {"target_weights": {"purchase": 5.0}},
    {"target_weights": {"purchase": 20.0}},
    {"resample_ratio": 0.2},
    {"target_weights": {"purchase": 5.0}, "resample_ratio": 0.2},
]


# ---- the split ----
Case = tuple[np.ndarray, np.ndarray, int]  # (history items, history event types, bought item)


def last_purchases(ds: InteractionDataset) -> dict[int, int]:
    """user -> event position of their last purchase that has an earlier event of theirs."""
    off = ds.user_offsets()
    out = {}
    for u in range(ds.n_users):
        lo, hi = off[u], off[u + 1]
        buys = np.flatnonzero(ds.event_type[lo:hi] == PURCHASE)
        buys = buys[buys >= 1]
        if buys.size:
            out[u] = int(lo + buys[-1])
    return out


def held_out(
    ds: InteractionDataset, at: dict[int, int], users: np.ndarray
) -> tuple[InteractionDataset, list[Case]]:
    """(`ds` without `users`' events from their target purchase on, those users' cases)."""
    off = ds.user_offsets()
    keep = np.ones(ds.n_events, dtype=bool)
    cases = []
    for u in users.tolist():
        lo, p = off[u], at[u]
        cases.append((ds.item_idx[lo:p].astype(np.int64), ds.event_type[lo:p], int(ds.item_idx[p])))
        keep[p : off[u + 1]] = False
    return ds.subset(keep), cases


# ---- metrics ----
def per_user(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hit@10, ndcg@10) per row: the target's rank among all items (ties: lower index first)."""
    rows = np.arange(len(targets))
    ts = scores[rows, targets][:, None]
    rank = np.count_nonzero(scores > ts, axis=1)
    for j in np.nonzero(np.count_nonzero(scores == ts, axis=1) > 1)[0]:
        rank[j] += int(np.count_nonzero(scores[j, : targets[j]] == ts[j, 0]))
    hit = rank < 10
    return hit.astype(float), np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0)


def summary(hit: np.ndarray, ndcg: np.ndarray, repeat: np.ndarray | None = None) -> dict[str, Any]:
    """HR@10, NDCG@10 and users; with `repeat` (target in history), also each part on its own."""
    out: dict[str, Any] = {
        "hr@10": float(hit.mean()),
        "ndcg@10": float(ndcg.mean()),
        "users": int(hit.size),
    }
    if repeat is not None:
        for name, sel in (("target_in_history", repeat), ("target_new", ~repeat)):
            out[name] = summary(hit[sel], ndcg[sel]) if sel.any() else None
    return out


def paired_ci(a: np.ndarray, b: np.ndarray, n: int = 2000) -> list[float]:
    """95% paired-bootstrap interval of mean(b - a)."""
    gen = np.random.default_rng(0)
    d = b - a
    means = d[gen.integers(0, d.size, size=(n, d.size))].mean(axis=1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


# ---- models ----
def knn_scores(model: ItemKNN, cases: list[tuple[np.ndarray, np.ndarray, int]]) -> np.ndarray:
    hs = [UserHistory(items=h, event_types=t) for h, t, _ in cases]
    return model.score_matrix(model.history_matrix(hs))


def history_baseline(
    train: InteractionDataset, cases: list[tuple[np.ndarray, np.ndarray, int]]
) -> np.ndarray:
    """Your own history first (strongest event type, then latest), then the most bought items."""
    pop = np.bincount(train.item_idx[train.event_type == PURCHASE], minlength=train.n_items)
    base = pop / (pop.max() + 1.0)
    table = np.array([DEFAULT_EVENT_WEIGHTS.get(t, 1.0) for t in EVENT_CODE], dtype=float)
    out = np.tile(base, (len(cases), 1))
    for r, (h, t, _) in enumerate(cases):
        for pos, (it, ty) in enumerate(zip(h, t, strict=True)):
            out[r, it] = max(out[r, it], 10.0 * table[ty] + 1.0 + pos / (len(h) + 1.0))
    return out


def sasrec_fit(
    params: dict[str, Any],
    train: InteractionDataset,
    valid: list[tuple[np.ndarray, np.ndarray, int]] | None,
    epochs: int,
) -> SASRec:
    from privrec.models.sequential_data import type_sequences

    m = SASRec(**SASREC_BASE, **params, epochs=epochs)
    val = None
    if valid is not None:
        val = ([h for h, _, _ in valid], np.array([y for _, _, y in valid], dtype=np.int64))
    m.fit_sequences(
        train.sequences(),
        train.n_items,
        validation=val,
        event_types=type_sequences(train) if m.config.by_event_type else None,
    )
    return m


def run(quick: bool) -> dict[str, Any]:
    t_all = time.perf_counter()
    ds = load_taobao_userbehavior(shared_data() / "taobao-userbehavior-samples")
    at = last_purchases(ds)
    eligible = np.array(sorted(at), dtype=np.int64)
    # a seeded 30% of the eligible users choose the settings; the other 70% test them once
    perm = np.random.default_rng(0).permutation(eligible.size)
    n_val = round(VALID_SHARE * eligible.size)
    val_users, test_users = np.sort(eligible[perm[:n_val]]), np.sort(eligible[perm[n_val:]])
    sub, valid = held_out(ds, at, eligible)  # choosing: no eligible user's target is trained on
    train, test = held_out(ds, at, test_users)  # testing: the validation users' events all train
    y_test = np.array([y for _, _, y in test], dtype=np.int64)
    repeat = np.array([y in set(h.tolist()) for h, _, y in test], dtype=bool)
    chosen = set(val_users.tolist())
    valid = [c for c, u in zip(valid, eligible.tolist(), strict=True) if u in chosen]
    y_val = np.array([y for _, _, y in valid], dtype=np.int64)
    facts = {
        "events": ds.n_events,
        "users": ds.n_users,
        "items": ds.n_items,
        "purchase_share": float(np.mean(ds.event_type == PURCHASE)),
        "test_users": len(test),
        "valid_users": len(valid),
        "test_history_median": float(np.median([len(h) for h, _, _ in test])),
        "target_in_history": float(np.mean([y in set(h.tolist()) for h, _, y in test])),
        "valid_target_in_history": float(np.mean([y in set(h.tolist()) for h, _, y in valid])),
    }
    print("data", facts, flush=True)
    out: dict[str, Any] = {"data": facts, "models": {}}
    per: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    hb = per_user(history_baseline(train, test), y_test)
    per["history+popular"] = hb
    out["models"]["history+popular"] = {"test": summary(*hb, repeat)}
    print("history+popular", out["models"]["history+popular"], flush=True)

    # item-kNN: choose the event weights on the validation purchases
    grid = []
    for params in KNN_GRID:
        t0 = time.perf_counter()
        m = ItemKNN(**params).fit(sub)
        v = summary(*per_user(knn_scores(m, valid), y_val))
        grid.append({"params": params, "valid": v, "seconds": time.perf_counter() - t0})
        print("itemknn valid", grid[-1], flush=True)
    best = max(range(len(grid)), key=lambda i: (grid[i]["valid"]["ndcg@10"], -i))
    weighted = max(range(1, len(grid)), key=lambda i: (grid[i]["valid"]["ndcg@10"], -i))
    runs = [("without", KNN_GRID[0]), ("with", KNN_GRID[best])]
    if weighted != best:  # for information: the best weighted point, though not chosen
        runs.append(("weighted", KNN_GRID[weighted]))
    for label, params in runs:
        m = ItemKNN(**params).fit(train)
        per[f"itemknn {label}"] = per_user(knn_scores(m, test), y_test)
        out["models"][f"itemknn {label}"] = {
            "params": params,
            "test": summary(*per[f"itemknn {label}"], repeat),
        }
        print(f"itemknn {label}", out["models"][f"itemknn {label}"], flush=True)
    out["models"]["itemknn grid"] = grid

    # SASRec: choose target weights / resampling (and the epoch) on the validation purchases
    epochs = 3 if quick else 8
    sgrid = []
    for params in SASREC_GRID[: 2 if quick else None]:
        t0 = time.perf_counter()
        m = sasrec_fit(params, sub, valid, epochs)
        entry = max(m.train_log, key=lambda e: e.get("ndcg@10", -1.0))
        sgrid.append(
            {
                "params": params,
                "valid": {"hr@10": entry["hr@10"], "ndcg@10": entry["ndcg@10"]},
                "best_epoch": m.best_epoch,
                "seconds": time.perf_counter() - t0,
            }
        )
        print("sasrec valid", sgrid[-1], flush=True)
    best = max(range(len(sgrid)), key=lambda i: (sgrid[i]["valid"]["ndcg@10"], -i))
    sruns = [("without", 0), ("with", best)]
    if len(sgrid) > 1:
        weighted = max(range(1, len(sgrid)), key=lambda i: (sgrid[i]["valid"]["ndcg@10"], -i))
        if weighted != best:  # for information: the best weighted point, though not chosen
            sruns.append(("weighted", weighted))
    for label, i in sruns:
        t0 = time.perf_counter()
        m = sasrec_fit(sgrid[i]["params"], train, None, max(1, sgrid[i]["best_epoch"]))
        s = m.score_sequences([h for h, _, _ in test])
        per[f"sasrec {label}"] = per_user(s, y_test)
        out["models"][f"sasrec {label}"] = {
            "params": sgrid[i]["params"],
            "epochs": sgrid[i]["best_epoch"],
            "test": summary(*per[f"sasrec {label}"], repeat),
            "seconds": time.perf_counter() - t0,
        }
        print(f"sasrec {label}", out["models"][f"sasrec {label}"], flush=True)
    out["models"]["sasrec grid"] = sgrid

    for name in ("itemknn", "sasrec"):
        for label in ("with", "weighted"):
            if f"{name} {label}" in per:
                a, b = per[f"{name} without"][1], per[f"{name} {label}"][1]
                out["models"][f"{name} {label}"]["ndcg@10_gain_ci95"] = paired_ci(a, b)
    out["seconds"] = time.perf_counter() - t_all
    out["machine"] = machine()
    out["quick"] = quick
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 SASRec grid points, 4 epochs")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    emit(run(args.quick))


if __name__ == "__main__":
    main()
