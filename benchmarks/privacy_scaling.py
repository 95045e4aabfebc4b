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

``--dataset beauty`` (issue 16 on Amazon Beauty): Beauty subsampled to ``--sizes`` shoppers
(default 5000,10000; seeded, the same shoppers in train and test), and at each size
`privacy_beauty.run` for ``--rows`` (default dp_textknn and dp_hybrid, each with its fixed
settings) at epsilon 1 and 8; the non-private reference of each size is EASE (reg 50), measured
there (the sequential hybrid, the full-size reference, is too slow to refit per size), the
public-only baseline the content model on item text, measured there. ``--full-points`` adds the
full 22,363-shopper points of privacy_beauty.py / privacy_draws.py (their EASE: 0.04446).
Trends as above, of retention = DP / EASE of the same size.
"""

from __future__ import annotations

import argparse
import json
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
# EASE on all 6,039 shoppers (privacy_draws.py: reg 1000 chosen on valid, NDCG@20 on test)
FULL_EASE = 0.38732891901534283
ASSUMPTIONS = (
    "retention = a + b ln(shoppers), fitted per epsilon on the measured sizes; same catalogue "
    "and per-shopper activity as MovieLens-1M; fixed DP EASE settings; delta 1e-6 at every "
    "size; capped at 1; an extrapolation far past the data"
)


def trend(sizes: list[int], retention: list[float]) -> dict[str, Any]:
    """Two least-squares trends in the number of shoppers n, and their projections.

    - linear: retention = a + b ln(n) (capped at 1; optimistic: it never bends);
    - power: 1 - retention = c n^d, the gap shrinking as a power of n (it bends towards 1 as the
      signal outgrows the fixed noise; the more conservative of the two here).
    """
    x = np.log(np.asarray(sizes, dtype=np.float64))
    y = np.asarray(retention, dtype=np.float64)
    b, a = np.polyfit(x, y, 1)
    gap = np.log(np.clip(1.0 - y, 1e-9, None))
    d, c = np.polyfit(x, gap, 1)

    def rmse(pred: np.ndarray) -> float:
        return float(math.sqrt(float(np.mean((y - pred) ** 2))))

    return {
        "linear": {
            "a": float(a),
            "b_per_ln_users": float(b),
            "rmse": rmse(a + b * x),
            "projection": {str(n): float(min(1.0, a + b * math.log(n))) for n in PROJECT_TO},
        },
        "power": {
            "ln_c": float(c),
            "d": float(d),
            "rmse": rmse(1.0 - np.exp(c + d * x)),
            "projection": {str(n): float(1.0 - math.exp(c + d * math.log(n))) for n in PROJECT_TO},
        },
    }


def with_full_size(rows: list[dict[str, Any]], points: Path, row: str) -> list[dict[str, Any]]:
    """Adds the full-size points of the frontier run (privacy_draws.py --points-out) to `rows`."""
    ease = 0.0
    out = list(rows)
    for line in points.read_text(encoding="utf-8").splitlines():
        p = json.loads(line)
        if p.get("row") == row and p.get("users") is None and p["epsilon"] in (1.0, 8.0):
            m = p["metrics"]["ndcg@20"]
            out.append(
                {
                    "shoppers": 6039,
                    "epsilon": p["epsilon"],
                    "dp_mean": m["mean"],
                    "dp_ci95": m["ci95"],
                    "from": str(points.name),
                }
            )
            ease = ease or FULL_EASE
    for r in out:
        if "retention" not in r:
            r["ease"] = ease
            r["retention"] = r["dp_mean"] / ease
            r["retention_ci95"] = [v / ease for v in r["dp_ci95"]]
    return out


BEAUTY_FULL = 22363
BEAUTY_FULL_EASE = 0.04446129994549466  # privacy_draws.py --datasets beauty (reg 50, test)
BEAUTY_FULL_CONTENT = 0.03503861227520863  # the text-only model, all shoppers (privacy_draws.py)


def log_trend(sizes: list[int], values: list[float]) -> dict[str, Any]:
    """value = a + b ln(n), least squares, with its projections (no cap: gains and NDCG)."""
    x = np.log(np.asarray(sizes, dtype=np.float64))
    y = np.asarray(values, dtype=np.float64)
    b, a = np.polyfit(x, y, 1)
    pred = a + b * x
    return {
        "a": float(a),
        "b_per_ln_users": float(b),
        "rmse": float(math.sqrt(float(np.mean((y - pred) ** 2)))),
        "projection": {str(n): float(a + b * math.log(n)) for n in PROJECT_TO},
    }


BEAUTY_ASSUMPTIONS = (
    "retention = DP / EASE (reg 50) of the same size; Beauty's 12,101-item catalogue and "
    "per-shopper activity at every size; fixed settings (dp_textknn chosen on Amazon Scientific, "
    "dp_hybrid privacy_draws.py's); delta 1e-6; one seeded subsample per size; an "
    "extrapolation far past the data"
)


def beauty_full_points(paths: list[Path], rows: list[str]) -> list[dict[str, Any]]:
    """Full-size Beauty points (epsilon 1 and 8) of privacy_beauty.py or privacy_draws.py."""
    names = {"dp_hybrid (fixed; beauty)": "dp_hybrid"}
    out = []
    for path in paths:
        for line in path.read_text(encoding="utf-8").splitlines():
            p = json.loads(line)
            row = names.get(p.get("row"), p.get("row"))
            if p.get("dataset") != "beauty" or p.get("users") is not None or row not in rows:
                continue
            if p["epsilon"] not in (1.0, 8.0):
                continue
            m = p["metrics"]["ndcg@10"]
            out.append(
                {
                    "row": row,
                    "shoppers": BEAUTY_FULL,
                    "epsilon": p["epsilon"],
                    "ease": BEAUTY_FULL_EASE,
                    "dp_mean": m["mean"],
                    "dp_ci95": m["ci95"],
                    "retention": m["mean"] / BEAUTY_FULL_EASE,
                    "retention_ci95": [v / BEAUTY_FULL_EASE for v in m["ci95"]],
                    "public_only": BEAUTY_FULL_CONTENT,
                    "from": path.name,
                }
            )
    return out


def beauty(args: argparse.Namespace) -> None:
    """The Beauty scaling curve (see the module docstring)."""
    from privacy_beauty import run as beauty_run

    t0 = time.perf_counter()
    rows_wanted = args.row.split(",")
    epsilons = [float(e) for e in args.epsilons.split(",")]
    rows: list[dict[str, Any]] = []
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else []
    if args.rows_from:
        prev = json.loads(Path(args.rows_from).read_text().strip().splitlines()[-1])
        rows = [r for r in prev["rows"] if r.get("from") is None]
        sizes = []
    for n in sizes:
        res = beauty_run(epsilons, args.draws, rows_wanted, False, n, None)
        for pt in res["points"]:
            m = pt["metrics"]["ndcg@10"]
            rows.append(
                {
                    "row": pt["row"],
                    "shoppers": res["shoppers"],
                    "epsilon": pt["epsilon"],
                    "ease": res["ease"],
                    "public_only": res["public_only"],
                    "dp_mean": m["mean"],
                    "dp_ci95": m["ci95"],
                    "retention": m["mean"] / res["ease"],
                    "retention_ci95": [v / res["ease"] for v in m["ci95"]],
                    "gap_closed_vs_ease": pt["gap_closed"],
                }
            )
    if args.full_points:
        rows += beauty_full_points([Path(p) for p in args.full_points.split(",")], rows_wanted)
    trends: dict[str, Any] = {}
    for row in rows_wanted:
        for eps in epsilons:
            r = sorted(
                (x for x in rows if x["row"] == row and x["epsilon"] == eps),
                key=lambda x: x["shoppers"],
            )
            if len(r) >= 2:
                n = [x["shoppers"] for x in r]
                t = trend(n, [x["retention"] for x in r])
                # the DP part's gain over the text-only model of the same size: what the release
                # adds (the retention against EASE falls with n here: EASE grows faster)
                t["gain_over_text"] = log_trend(n, [x["dp_mean"] - x["public_only"] for x in r])
                t["ndcg"] = log_trend(n, [x["dp_mean"] for x in r])
                trends[f"{row} eps {eps:g}"] = t
                log(f"{row} eps {eps:g}: {[round(x['retention'], 3) for x in r]} trend {t}")
    eases = sorted({(x["shoppers"], x["ease"]) for x in rows if x.get("ease")})
    if len(eases) >= 2:
        trends["ease"] = log_trend([e[0] for e in eases], [e[1] for e in eases])
    emit(
        {
            "benchmark": "privacy_scaling",
            "dataset": "amazon beauty (leave-one-out), subsampled shoppers",
            "rows_measured": rows_wanted,
            "draws": args.draws,
            "rows": rows,
            "trends": trends,
            "assumptions": BEAUTY_ASSUMPTIONS,
            "seconds": round(time.perf_counter() - t0, 1),
            "machine": machine(),
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="ml1m", choices=("ml1m", "beauty"))
    ap.add_argument("--sizes", default=None, help="ml1m: 1000,2000,4000,6039; beauty: 5000,10000")
    ap.add_argument("--epsilons", default="1,8")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--row", default="dp_ease (fixed)")
    ap.add_argument(
        "--rows-from",
        default=None,
        help="recompute the trends from this earlier output (its JSON line) instead of measuring",
    )
    ap.add_argument(
        "--full-points",
        default=None,
        help="privacy_draws.py --points-out file(s, comma-separated for beauty) whose full-size "
        "points join the fit",
    )
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("privrec.models.dp.release").setLevel(logging.ERROR)
    if args.dataset == "beauty":
        if args.row == "dp_ease (fixed)":
            args.row = "dp_textknn,dp_hybrid"
        if args.sizes is None:
            args.sizes = "5000,10000"
        beauty(args)
        return
    if args.sizes is None:
        args.sizes = "1000,2000,4000,6039"
    t0 = time.perf_counter()
    ledger = PrivacyLedger(
        Path(tempfile.mkdtemp(prefix="privacy-scaling-")) / "ledger.jsonl",
        Budget(epsilon=1e6, delta=0.5),
    )
    sizes = [int(s) for s in args.sizes.split(",")]
    epsilons = [float(e) for e in args.epsilons.split(",")]
    rows: list[dict[str, Any]] = []
    if args.rows_from:
        prev = json.loads(Path(args.rows_from).read_text().strip().splitlines()[-1])
        rows = [r for r in prev["rows"] if r.get("from") is None]
        sizes = []
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
    if args.full_points:
        rows = with_full_size(rows, Path(args.full_points), args.row)
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
