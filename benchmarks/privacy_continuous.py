"""Continuous release (issue 16, item 5): a shop retrains weekly; 52 releases must fit epsilon 8.

Each weekly retrain of a DP model is one release whose mechanism (`Release.event`: the noisy
user count, the DP item selection and the noisy Gram matrix, Gaussians calibrated together) is
fixed by its per-release epsilon and delta. The privacy ledger composes releases with
dp-accounting's PLD accountant (`privacy.accounting.compose`); here the same accountant composes
52 copies of one release (a shopper may be in every weekly training set: the worst case), and a
bisection finds the largest per-release epsilon whose 52-fold composition stays within a total
epsilon of 8 at the models' delta (1e-6, one shopper's total delta for the year, so each release
keeps its own delta of 1e-6 and the year is charged once).

The release's event is taken from a real fit (MovieLens-100K, cheap; the event depends only on
the model's settings and its epsilon and delta, never on the data) and checked again on the
dataset measured. Accuracy at that per-release epsilon is then measured like a frontier point
(`privacy_draws.py`: fixed parameters, 5 independent secure-noise draws, mean and 95% interval,
retention against EASE and the gap closed over the public-only baseline).

A retrain sees a sliding window of the log, not the same data 52 times; the composition above is
still the right bound for a shopper active all year. The alternative privacy unit, "one shopper's
events of one week" (each retrain then at epsilon 8 for week-bounded privacy), protects nothing
about habits that span weeks, so it is not used.

Run: nice -n 10 .venv/bin/python benchmarks/privacy_continuous.py --datasets ml100k,ml1m
(JSON on the last line).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from _common import emit, machine, shared_data
from privacy_draws import ROWS, Data, dp_point, log, nonprivate, public_only, summarise
from privrec.data.loaders import load_movielens_100k
from privrec.evaluation.privacy_tuning import DEFAULT_ROSTER
from privrec.models.zoo import create_model
from privrec.privacy.accounting import compose
from privrec.privacy.dp import self_composed_spec
from privrec.privacy.ledger import Budget, PrivacyLedger

RELEASES = 52  # weekly retrains in a year
TOTAL_EPSILON = 8.0
DELTA = 1e-6  # the models' delta: 1 / (10 x 100,000 expected shoppers)


def release_event(model_name: str, epsilon: float, train: Any) -> Mapping[str, Any]:
    """The mechanism spec of one release of `model_name` (fixed settings) at `epsilon`."""
    model = create_model(model_name, **DEFAULT_ROSTER[model_name](epsilon)).fit(train, rng=42)
    event = getattr(getattr(model, "release", None), "event", None)
    if not isinstance(event, Mapping):
        raise SystemExit(f"{model_name}: the fit made no DP release with a mechanism spec")
    return dict(event)


def yearly_epsilon(event: Mapping[str, Any]) -> float:
    """The PLD-composed epsilon of RELEASES copies of one release at DELTA."""
    return compose([self_composed_spec(RELEASES, dict(event))], delta=DELTA)


def per_release_epsilon(model_name: str, train: Any, tol: float = 0.005) -> dict[str, Any]:
    """The largest per-release epsilon whose RELEASES-fold composition is <= TOTAL_EPSILON."""
    lo, hi = 0.01, TOTAL_EPSILON
    steps = []
    while hi - lo > tol * lo:
        mid = (lo * hi) ** 0.5  # bisection on the log scale
        total = yearly_epsilon(release_event(model_name, mid, train))
        steps.append({"per_release": mid, "yearly": total})
        if total <= TOTAL_EPSILON:
            lo = mid
        else:
            hi = mid
    event = release_event(model_name, lo, train)
    return {
        "model": model_name,
        "per_release_epsilon": lo,
        "yearly_epsilon": yearly_epsilon(event),
        "naive_sum": lo * RELEASES,
        "event": event,
        "bisection": steps,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="ml100k,ml1m")
    ap.add_argument("--rows", default="dp_popularity,dp_ease (fixed)")
    ap.add_argument("--draws", type=int, default=5)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("privrec.models.dp.release").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    ml100k = load_movielens_100k(shared_data() / "movielens-100k")
    rows = args.rows.split(",")
    plans = {}
    for label in rows:
        name = ROWS[label][0]
        plans[label] = per_release_epsilon(name, ml100k)
        p = plans[label]
        log(
            f"{label}: per-release epsilon {p['per_release_epsilon']:.4f} -> {RELEASES} releases "
            f"compose to {p['yearly_epsilon']:.3f} at delta {DELTA:g} (naive sum "
            f"{p['naive_sum']:.2f})"
        )
    ledger = PrivacyLedger(
        Path(tempfile.mkdtemp(prefix="privacy-continuous-")) / "ledger.jsonl",
        Budget(epsilon=1e6, delta=0.5),
    )
    results = []
    for ds in args.datasets.split(","):
        data = Data(ds)
        key = f"ndcg@{data.k}"
        ref = nonprivate(data)
        pub = public_only(data)
        log(
            f"[{ds}] shoppers {data.n_users}; EASE {key} {ref['metrics'][key]:.4f}; "
            f"public-only {pub['metrics'][key]['mean']:.4f}"
        )
        points = []
        for label in rows:
            eps = plans[label]["per_release_epsilon"]
            pt = dp_point(data, label, eps, args.draws, ledger, audit=False)
            # the event on this dataset: the same mechanism, so the same yearly epsilon
            pt["yearly_epsilon_check"] = yearly_epsilon(
                release_event(ROWS[label][0], eps, data.train)
            )
            points.append(pt)
            m = pt["metrics"][key]
            log(
                f"  {label:16s} eps/release {eps:.4f}: {key} {m['mean']:.4f} "
                f"[{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}] "
                f"({m['mean'] / ref['metrics'][key]:.0%} of EASE); yearly check "
                f"{pt['yearly_epsilon_check']:.3f}"
            )
        summarise(points, ref["metrics"][key], pub["metrics"][key]["mean"], key)
        results.append(
            {
                "dataset": ds,
                "shoppers": data.n_users,
                "metric": key,
                "nonprivate": ref,
                "public_only": pub,
                "points": points,
            }
        )
    emit(
        {
            "benchmark": "privacy_continuous",
            "releases": RELEASES,
            "total_epsilon": TOTAL_EPSILON,
            "delta": DELTA,
            "plans": plans,
            "datasets": results,
            "seconds": round(time.perf_counter() - t0, 1),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
