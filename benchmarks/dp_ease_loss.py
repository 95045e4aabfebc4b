"""Where DP EASE loses NDCG@10 on MovieLens-100K: a decomposition of the gap to non-private EASE.

The privacy-utility targets ask DP models to keep 90% (epsilon 8) and 70% (epsilon 1) of the best
non-private NDCG@10. DP EASE misses both; this script measures which step costs what, so the next
attempt aims at the right place. At each epsilon, with the setting the frontier chose on validation
(`benchmarks/privacy_frontier.py`), on the Microsoft Recommenders split, mean of `--seeds`
noise draws:

1. `ease_all`: EASE with unit-norm user rows on every item (= DP EASE at epsilon inf).
2. `exact_true_top`: the same on the truly most popular m items (the cost of keeping m items).
3. `exact_dp_selected`: the exact Gram matrix on the DP-selected items (the cost of noisy
   selection).
4. `dp_true_top`: the Gram noise of the real release (selection still charged) on the truly top
   m items, denoised as DP EASE does (the cost of the Gram noise alone).
5. `oracle_rank`: the exact Gram on the DP-selected items truncated to the rank that the spectral
   denoiser kept (the cost of the low rank itself; the rest of the gap is noisy eigenvectors).
6. `dp_ease`: the model itself.
7. Two free post-processing variants of the same release, both tried as fixes:
   `dp_public_genres` adds back the residual (noisy minus denoised) projected on the span of the
   items' public genre indicators (catalogue data, no privacy cost); `dp_knn_blend` mixes in
   10% cosine similarity of the denoised matrix.

Steps 2-5 use exact data where the DP model cannot; they are diagnostics, never served.

Run: .venv/bin/python benchmarks/dp_ease_loss.py [--seeds 4]  (JSON on the last line)
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np
from scipy.linalg import eigh

from _common import emit, machine
from privacy_frontier import load
from privrec.evaluation.privacy_report import evaluate
from privrec.models.dp.ease import DPEASE, spectral_denoise
from privrec.models.dp.release import unit_rows
from privrec.models.ease import EASE, ease_weights
from privrec.privacy.dp import GaussianMechanism
from privrec.privacy.noise import NoiseSource

# the frontier's validation choices (benchmarks/results/privacy_frontier_ml100k.log)
SETTINGS = {
    1.0: {"top_items": 80, "selection_share": 0.3, "reg": 30.0, "reg_noise": 0.0},
    8.0: {"top_items": 200, "selection_share": 0.15, "reg": 30.0, "reg_noise": 0.0},
}
EXACT_REG = 10.0  # the best ridge of unit-row EASE without noise (scan in this script's log)


def ndcg(model: Any, train: Any, test: Any) -> float:
    return evaluate(model, train, test, "ranking")["ndcg@10"]


def with_weights(model: DPEASE, selected: np.ndarray, weights: np.ndarray) -> DPEASE:
    """The fitted DP EASE scorer with other items / weights (a diagnostic only)."""
    model.selected = np.asarray(selected, dtype=np.int64)
    model.weights = np.asarray(weights, dtype=np.float32)
    return model


def decompose(
    train: Any, test: Any, epsilon: float, seeds: int, genres: np.ndarray
) -> dict[str, Any]:
    s = SETTINGS[epsilon]
    m = s["top_items"]
    x = DPEASE().input_matrix(train).astype(np.float64)
    true_top = np.sort(np.argsort(-np.asarray(unit_rows(x).sum(axis=0)).ravel(), kind="stable")[:m])
    xt = unit_rows(x[:, true_top])
    exact_top = np.asarray((xt.T @ xt).toarray())
    rows: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    ranks, overlaps = [], []
    for i in range(seeds):
        model = DPEASE(epsilon=epsilon, **s).fit(train, rng=42 + i)
        add("dp_ease", ndcg(model, train, test))
        sel, gn, noise_std, ridge = (
            model.selected.copy(),
            model.noisy_gram,
            model.noise_std,
            model.ridge,
        )
        overlaps.append(len(set(sel.tolist()) & set(true_top.tolist())))
        ranks.append(model.rank)
        xs = unit_rows(x[:, sel])
        exact = np.asarray((xs.T @ xs).toarray())
        add(
            "exact_dp_selected",
            ndcg(with_weights(model, sel, ease_weights(exact, EXACT_REG)), train, test),
        )
        w, v = eigh(exact)
        top = np.argsort(w)[::-1][: max(model.rank, 1)]
        low = (v[:, top] * w[top]) @ v[:, top].T
        add("oracle_rank", ndcg(with_weights(model, sel, ease_weights(low, ridge)), train, test))
        # the same noise level on the truly top items (what a free, perfect selection would give)
        g = GaussianMechanism(noise_std, 1.0).add_symmetric_noise(
            exact_top,
            NoiseSource.reproducible(1000 + i),  # an oracle for the study, not a release
        )
        add(
            "dp_true_top",
            ndcg(
                with_weights(
                    model, true_top, ease_weights(spectral_denoise(g, noise_std)[0], ridge)
                ),
                train,
                test,
            ),
        )
        # free post-processing of the real release
        low_n, _ = spectral_denoise(gn, noise_std)
        q, _r = np.linalg.qr(np.hstack([genres[sel], np.ones((sel.size, 1))]))
        resid = gn - low_n
        add(
            "dp_public_genres",
            ndcg(
                with_weights(model, sel, ease_weights(low_n + q @ (q.T @ resid @ q) @ q.T, ridge)),
                train,
                test,
            ),
        )
        b = ease_weights(low_n, ridge).astype(np.float64)
        d = np.sqrt(np.maximum(np.diag(low_n), 1e-12))
        cos = low_n / d[:, None] / d[None, :]
        np.fill_diagonal(cos, 0.0)
        blend = 0.9 * b / np.abs(b).max() + 0.1 * cos / np.abs(cos).max()
        add("dp_knn_blend", ndcg(with_weights(model, sel, blend), train, test))
    exact_model = DPEASE(epsilon=math.inf, top_items=m, reg=EXACT_REG).fit(train)
    out = {
        "epsilon": epsilon,
        "setting": s,
        "noise_std": noise_std,
        "rank_kept_mean": float(np.mean(ranks)),
        "dp_selection_overlap_with_true_top": float(np.mean(overlaps)) / m,
        "exact_true_top": ndcg(exact_model, train, test),
    }
    out.update({k: float(np.mean(v)) for k, v in rows.items()})
    out["std"] = {k: float(np.std(v)) for k, v in rows.items()}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=4)
    args = ap.parse_args()
    t0 = time.perf_counter()
    _ds, train, test, _sub, _valid = load("ml100k")
    cats = train.item_meta["category"].fillna("").tolist()
    names = sorted({g for c in cats for g in c.split("|") if g})
    genres = np.array([[1.0 if g in c.split("|") else 0.0 for g in names] for c in cats])
    reference = ndcg(EASE(binary=True, reg=500.0).fit(train), train, test)
    ease_all = ndcg(DPEASE(epsilon=math.inf, reg=3.0).fit(train), train, test)
    print(f"reference EASE {reference:.4f}; unit-row EASE, all items {ease_all:.4f}", flush=True)
    parts = []
    for eps in (1.0, 8.0):
        r = decompose(train, test, eps, args.seeds, genres)
        parts.append(r)
        line = "  ".join(
            f"{k} {v:.4f}"
            for k, v in r.items()
            if isinstance(v, float) and k not in ("epsilon", "noise_std")
        )
        print(f"eps {eps:g}: {line}", flush=True)
    emit(
        {
            "benchmark": "dp_ease_loss",
            "dataset": "ml100k",
            "reference_ease": reference,
            "ease_all_unit_rows": ease_all,
            "seeds": args.seeds,
            "by_epsilon": parts,
            "seconds": round(time.perf_counter() - t0, 1),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
