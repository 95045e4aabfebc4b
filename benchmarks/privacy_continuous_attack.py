"""The membership attack on a year of weekly releases (issue 16, item 5; continuous release).

`privacy_continuous.py` finds the per-release epsilon (0.889 at delta 1e-6) whose 52-fold
composition stays within epsilon 8, and `privacy_audit_points.py` attacked ONE release at that
epsilon. This script attacks the YEAR: the attacker sees all 52 weekly releases of DP EASE
(fixed settings, `privacy_tuning.DEFAULT_ROSTER`), each with its own secure noise, on the same
training data (the accountant's worst case: a shopper in every weekly training set).

The attacker combines the 52 releases by averaging their item-item weights (each release's
scores on its own selected items, 0 on the others: the score of h under the mean of the released
B matrices), which averages the independent Gaussian noise down by sqrt(52). The frontier's
shadow-model attack (`membership.membership_audit`, seed 42, at most 1,000 attacked shoppers a
side, `keep_trials=True`) then runs on that averaged model (the target's and the shadow's years
are 52 fits each), and its trials give the Clopper-Pearson 95% lower bound on epsilon at delta
1e-6 with the threshold chosen on the shadow trials (`attack_bound.attack_epsilon_bound`), as
for every other point. The claim it is set against is the year's composed epsilon (about 8).
For comparison the same attack runs on one release at the per-release epsilon.

Run: cd benchmarks && nice -n 10 ../.venv/bin/python privacy_continuous_attack.py \
    --datasets ml100k,ml1m   (JSON on the last line)
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
import scipy.sparse as sp

from _common import REPO, emit, machine
from privacy_draws import SEED, Data, log
from privrec.data.dataset import InteractionDataset
from privrec.evaluation.attack_bound import attack_epsilon_bound
from privrec.evaluation.membership import membership_audit
from privrec.evaluation.privacy_tuning import DEFAULT_ROSTER
from privrec.models.base import Recommender
from privrec.models.dp.ease import DPEASE
from privrec.models.zoo import create_model

CONTINUOUS = REPO / "benchmarks" / "results" / "privacy_continuous.json"
MODEL = "dp_ease"
LABEL = "dp_ease (fixed)"


class YearOfReleases:
    """`releases` independent secure DP EASE releases of the same data, averaged by the attacker."""

    def __init__(self, epsilon: float, releases: int) -> None:
        self.epsilon = epsilon
        self.releases = releases
        self.models: list[DPEASE] = []

    def fit(self, dataset: InteractionDataset, *, rng: int | None = None) -> YearOfReleases:
        params = dict(DEFAULT_ROSTER[MODEL](self.epsilon))
        # secure noise (never seeded): each weekly release draws its own
        self.models = [
            cast(DPEASE, create_model(MODEL, **params).fit(dataset, rng=rng))
            for _ in range(self.releases)
        ]
        return self

    @property
    def privacy(self) -> Any:
        return self.models[0].privacy  # one release's guarantee (the year's is composed)

    def input_matrix(self, dataset: InteractionDataset) -> sp.csr_matrix:
        return self.models[0].input_matrix(dataset)

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        out = np.zeros((histories.shape[0], self.models[0].n_items))
        for m in self.models:
            out[:, m.selected] += np.asarray(m.selected_scores(histories), dtype=np.float64)
        return out / len(self.models)


def attack(data: Data, factory: Any, delta: float) -> dict[str, Any]:
    """The frontier's attack with its trials, and the shadow-threshold bound."""
    t = time.perf_counter()
    res = membership_audit(factory, data.train, seed=SEED, max_eval_users=1000, keep_trials=True)
    assert res.trials is not None
    shadow = attack_epsilon_bound(res.trials, delta=delta, select="shadow")
    split = attack_epsilon_bound(res.trials, delta=delta, select="split", seed=SEED)
    return {
        "auc": res.auc,
        "shadow_auc": res.shadow_auc,
        "tpr@1%fpr": res.tpr_at_1pct_fpr,
        "trials": {"in": res.n_members, "out": res.n_nonmembers},
        "eps_lb": shadow.epsilon_lb,
        "eps_lb_detail": vars(shadow),
        "eps_lb_split": split.epsilon_lb,
        "seconds": round(time.perf_counter() - t, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="ml100k")
    ap.add_argument("--releases", type=int, default=52)
    ap.add_argument("--points-out", default=None, help="append each dataset's result (JSONL)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("privrec.models.dp.release").setLevel(logging.ERROR)
    plan = json.loads(CONTINUOUS.read_text(encoding="utf-8"))["plans"][LABEL]
    eps_r, year_eps, delta = plan["per_release_epsilon"], plan["yearly_epsilon"], 1e-6
    log(f"{LABEL}: {args.releases} releases at eps {eps_r:.4f} -> year eps {year_eps:.3f}")
    t0 = time.perf_counter()
    rows = []
    for ds in args.datasets.split(","):
        data = Data(ds)
        one = attack(data, lambda: create_model(MODEL, **DEFAULT_ROSTER[MODEL](eps_r)), delta)
        log(
            f"[{ds}] one release at eps {eps_r:.3f}: AUC {one['auc']:.3f} "
            f"eps_lb {one['eps_lb']:.2f}"
        )
        year = attack(data, lambda: cast(Recommender, YearOfReleases(eps_r, args.releases)), delta)
        log(
            f"[{ds}] year of {args.releases} releases (claim eps {year_eps:.2f}): AUC "
            f"{year['auc']:.3f} eps_lb {year['eps_lb']:.2f} (split {year['eps_lb_split']:.2f}), "
            f"{year['seconds']:.0f} s"
        )
        row = {
            "dataset": ds,
            "model": LABEL,
            "params": DEFAULT_ROSTER[MODEL](eps_r),
            "per_release_epsilon": eps_r,
            "releases": args.releases,
            "claimed_year_epsilon": year_eps,
            "delta": delta,
            "combination": "mean of the releases' item-item weights (0 off each selection)",
            "one_release": one,
            "year": year,
            "exceeds_claim": year["eps_lb"] > year_eps or one["eps_lb"] > eps_r,
        }
        rows.append(row)
        if args.points_out:
            with open(Path(args.points_out), "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
    emit(
        {
            "benchmark": "privacy_continuous_attack",
            "rows": rows,
            "seconds": round(time.perf_counter() - t0, 1),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
