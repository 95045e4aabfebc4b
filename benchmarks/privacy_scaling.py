"""The scaling curve (issue 16, item 3): DP retention against the number of shoppers.

MovieLens-1M (LightGCN++ split) subsampled to ``--sizes`` shoppers (seeded, the same shoppers in
train, valid and test), and at each size, under the frontier's rules (`privacy_draws.py`):
EASE tuned on valid and refit (the non-private reference of that size) and DP EASE with its
settings fixed in advance (`privacy_tuning.DEFAULT_ROSTER`, secure noise, delta 1e-6) at epsilon
1 and 8, ``--draws`` independent releases each. Retention = DP NDCG@20 / EASE NDCG@20.

The trend: retention = a + b ln(shoppers), least squares per epsilon, and its projection to
100,000 and 1,000,000 shoppers, capped at 1. Assumptions (stated in the JSON): the catalogue
(3,628 films) and the per-shopper activity stay as in MovieLens-1M, the noise per statistic is
fixed by epsilon while the signal grows with the shoppers (so the fit is in log users), and the
trend is extrapolated one to two orders of magnitude past the data: a rough guide, not a
measurement.

Run: nice -n 10 .venv/bin/python benchmarks/privacy_scaling.py --sizes 1000,2000,4000,6039
(JSON on the last line).
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from _common import emit, machine
from privacy_draws import Data, dp_point, log, nonprivate
from privrec.privacy.ledger import Budget, PrivacyLedger

PROJECT_TO = (100_000, 1_000_000)
ASSUMPTIONS = (
    "retention = a + b ln(shoppers), fitted per epsilon on the measured sizes; same catalogue "
    "and per-shopper activity as MovieLens-1M; fixed DP EASE settings; delta 1e-6 at every "
    "size; capped at 1; an extrapolation far past the data"
)


def trend(sizes: list[int], retention: list[float]) -> dict[str, Any]:
    """Least-squares a + b ln(n) and its projections (capped at 1)."""
    x = np.log(np.asarray(sizes, dtype=np.float64))
    y = np.asarray(retention, dtype=np.float64)
    b, a = np.polyfit(x, y, 1)
    resid = y - (a + b * x)
    return {
        "a": float(a),
        "b_per_ln_users": float(b),
        "rmse": float(math.sqrt(float(np.mean(resid**2)))),
        "projection": {str(n): float(min(1.0, a + b * math.log(n))) for n in PROJECT_TO},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,2000,4000,6039")
    ap.add_argument("--epsilons", default="1,8")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--row", default="dp_ease (fixed)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("privrec.models.dp.release").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    ledger = PrivacyLedger(
        Path(tempfile.mkdtemp(prefix="privacy-scaling-")) / "ledger.jsonl",
        Budget(epsilon=1e6, delta=0.5),
    )
    sizes = [int(s) for s in args.sizes.split(",")]
    epsilons = [float(e) for e in args.epsilons.split(",")]
    rows = []
    for n in sizes:
        data = Data("ml1m", users=None if n >= 6039 else n)
        key = f"ndcg@{data.k}"
        ref = nonprivate(data)
        base = ref["metrics"][key]
        log(f"[{data.n_users} shoppers] EASE reg {ref['params']['reg']}: {key} {base:.4f}")
        for eps in epsilons:
            pt = dp_point(data, args.row, eps, args.draws, ledger, audit=False)
            m = pt["metrics"][key]
            row = {
                "shoppers": data.n_users,
                "epsilon": eps,
                "ease": base,
                "dp_mean": m["mean"],
                "dp_ci95": m["ci95"],
                "retention": m["mean"] / base,
                "retention_ci95": [v / base for v in m["ci95"]],
                "point": pt,
            }
            rows.append(row)
            log(
                f"  {args.row} eps {eps:g}: {key} {m['mean']:.4f} "
                f"[{m['ci95'][0]:.4f}, {m['ci95'][1]:.4f}] retention {row['retention']:.1%}"
            )
    trends = {}
    for eps in epsilons:
        r = [x for x in rows if x["epsilon"] == eps]
        if len(r) >= 2:
            trends[f"{eps:g}"] = trend([x["shoppers"] for x in r], [x["retention"] for x in r])
            log(f"eps {eps:g}: trend {trends[f'{eps:g}']}")
    emit(
        {
            "benchmark": "privacy_scaling",
            "dataset": "ml1m (LightGCN++ split), subsampled shoppers",
            "row": args.row,
            "draws": args.draws,
            "rows": rows,
            "trends": trends,
            "assumptions": ASSUMPTIONS,
            "seconds": round(time.perf_counter() - t0, 1),
            "machine": machine(),
        }
    )


if __name__ == "__main__":
    main()
