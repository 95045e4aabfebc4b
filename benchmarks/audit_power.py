"""How much the privacy audits can see on MovieLens-100K: LiRA and canary epsilon lower bounds.

For undefended EASE (the frontier's reference setting) and DP EASE at epsilon 1 and 8 (the
settings the frontier chose on validation, `benchmarks/privacy_frontier.py`), on all of ML-100K:

- LiRA (`privrec.evaluation.lira`): K shadow models on random halves of the shoppers, each the
  target once; pooled AUC and TPR at 0.1% / 1% FPR with Clopper-Pearson 95% intervals (flagged
  unreliable when fewer than 100 false positives back them).
- Canary audit (`privrec.evaluation.canary`): m canaries, each in a random half of R fits, with
  rare-item and popular-item canaries (DP EASE keeps only DP-selected popular items, so rare-item
  canaries cannot reach it); the empirical lower bound on epsilon and the largest bound the audit
  could have shown with that many trials.

Run: .venv/bin/python benchmarks/audit_power.py [--quick] [--seed 0]  (JSON on the last line;
--quick: K = 8, R = 8, m = 32, under two minutes)
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from _common import REPO, emit, machine

ROSTER: list[tuple[str, str, dict[str, Any]]] = [
    ("ease", "ease", {"reg": 500.0}),
    (
        "dp_ease_eps1",
        "dp_ease",
        {"epsilon": 1.0, "top_items": 80, "selection_share": 0.3, "reg": 30.0, "reg_noise": 0.0},
    ),
    (
        "dp_ease_eps8",
        "dp_ease",
        {"epsilon": 8.0, "top_items": 200, "selection_share": 0.15, "reg": 30.0, "reg_noise": 0.0},
    ),
    # every other DP model at epsilon 1 and 8, with the privacy report's fixed public defaults
    # (privrec.evaluation.privacy_tuning.DEFAULT_ROSTER)
    *(
        (f"{m}_eps{e:g}", m, {"epsilon": e, **extra})
        for m, extra in (
            ("dp_popularity", {}),
            ("dp_itemknn", {"k": 100, "selection_share": 0.15}),
            ("dp_hybrid", {}),
            ("dp_bpr", {}),
        )
        for e in (1.0, 8.0)
    ),
]


def data_folder() -> Path | None:
    """ML-100K's folder, or None where the shared data is absent."""
    d = Path(os.environ.get("PRIVREC_SHARED_DATA", REPO.parent / "shared" / "data"))
    folder = d / "movielens-100k"
    return folder if (folder / "u.data").is_file() else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="K = 8, R = 8, m = 32 (under 2 min)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated roster labels (default: all), e.g. ease,dp_ease_eps1",
    )
    args = ap.parse_args()
    wanted = {x for x in args.only.split(",") if x}
    folder = data_folder()
    if folder is None:
        print("audit_power: MovieLens-100K not found under ../shared/data; skipped")
        emit({"benchmark": "audit_power", "skipped": "movielens-100k not found"})
        return

    from privrec.data.loaders import load_movielens_100k
    from privrec.evaluation.canary import empirical_epsilon
    from privrec.evaluation.lira import lira_audit
    from privrec.models.zoo import create_model

    shadows, runs, canaries = (8, 8, 32) if args.quick else (16, 16, 64)
    t_all = time.perf_counter()
    ds = load_movielens_100k(folder)
    print(f"{ds!r}; K={shadows} shadows, R={runs} runs, m={canaries} canaries", file=sys.stderr)
    out: dict[str, Any] = {}
    for label, name, params in ROSTER:
        if wanted and label not in wanted:
            continue
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the result records the low-power warnings
            lira = lira_audit(
                functools.partial(create_model, name, **params),
                ds,
                shadows=shadows,
                seed=args.seed,
            )
        row: dict[str, Any] = {
            "lira_auc": round(lira.auc, 4),
            "lira_auc_per_target_min": round(min(lira.auc_per_target), 4),
            "lira_trials": {"members": lira.n_members, "nonmembers": lira.n_nonmembers},
            "lira_seconds": round(lira.seconds, 1),
        }
        for p in lira.points:
            row[f"tpr_at_{p.target_fpr:g}_fpr"] = {
                "tpr": round(p.tpr, 4),
                "ci95": [round(p.tpr_low, 4), round(p.tpr_high, 4)],
                "fpr": round(p.fpr, 5),
                "false_positives": p.false_positives,
                "reliable": p.reliable,
            }
        for pool in ("rare", "popular"):
            can = empirical_epsilon(
                name,
                params,
                ds,
                canaries=canaries,
                runs=runs,
                seed=args.seed,
                item_pool=pool,
            )
            b = can.bound
            row[f"canary_{pool}"] = {
                "epsilon_lb": round(can.epsilon_lb, 3),
                "claimed_epsilon": can.to_dict()["claimed_epsilon"],  # "inf": valid JSON
                "exceeds_claim": can.exceeds_claim,
                "auc": round(can.auc, 4),
                "tpr": round(b.tpr, 4),
                "fpr": round(b.fpr, 4),
                "trials": {"in": b.n_positives, "out": b.n_negatives},
                "delta": can.delta,
                "seconds": round(can.seconds, 1),
            }
        row["seconds"] = round(time.perf_counter() - t0, 1)
        out[label] = row
        p1 = lira.point(0.01)
        rare, popular = row["canary_rare"]["epsilon_lb"], row["canary_popular"]["epsilon_lb"]
        print(
            f"{label}: LiRA AUC {lira.auc:.3f}, TPR@1%FPR {p1.tpr:.3f} [{p1.tpr_low:.3f}, "
            f"{p1.tpr_high:.3f}]; canary eps_lb rare {rare}, popular {popular} "
            f"({row['seconds']} s)",
            file=sys.stderr,
        )
    from privrec.evaluation.lira import clopper_pearson

    n = runs * canaries // 2
    best_tpr, best_fpr = clopper_pearson(n, n)[0], clopper_pearson(0, n)[1]
    ceiling = max(math.log(best_tpr / best_fpr), math.log((1 - best_fpr) / (1 - best_tpr)))
    emit(
        {
            "benchmark": "audit_power",
            "dataset": "ml-100k",
            "quick": bool(args.quick),
            "seed": args.seed,
            "shadows": shadows,
            "runs": runs,
            "canaries": canaries,
            "canary_size": 8,
            "epsilon_lb_ceiling": round(ceiling, 3),
            "models": out,
            "seconds": round(time.perf_counter() - t_all, 1),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
