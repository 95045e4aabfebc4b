"""The closed loop's lift in simulated conversion on the demo shop's generative model.

The world (`privrec.evaluation.loop_world`): the demo shop (3,000 items, 3,000 shoppers with 90
days of history, seed 42) run forward D days in fast time from its hidden tastes
(`privrec.data.synthetic.generate_shop_truth`), with 20% of the catalogue launched during the
simulation and 600 new shoppers joining; each day 300 shoppers visit, browse organically (the
generator's session model) and answer the top-10 list the service serves them (position bias
1/log2(p+2), click probability from their own view distribution, the generator's cart and
purchase funnel).

Three arms, each in its own data directory through the real service path
(`privrec.service.loop_sim`: catalogue import, the gate, training, `Serving.recommend` with its
impression log, outcomes with their `recommendation_id` through `Ingestion.batch`, the feedback
log's attribution, `Scheduler.tick(now)`), over the same shoppers, organic sessions and random
numbers:
  (a) popularity trained on day 0, never retrained;
  (b) EASE trained on day 0, never retrained;
  (c) EASE in the closed loop: a retrain policy every 24 h, ticked at the start of each day,
      retraining on every event so far (the list outcomes included).

Reported per arm: conversion = purchases from the list per visit, as simulated (sampled) and as
the truth's expected purchases for the lists served (same lists, no sampling noise), per day and
in total; the lift of (c) over (a) and over (b) with 95% paired bootstrap intervals over visits
(shopper-days; the arms share them, so each resample takes the same visits in every arm).

Run: nice -n 10 .venv/bin/python benchmarks/closed_loop.py | tee benchmarks/results/closed_loop.log
(JSON on the last line; also written to benchmarks/results/closed_loop.json; `--quick` runs a
tiny version and writes nothing.) `--seeds 5` runs five independent worlds (seeds seed..seed+4)
and reports a t interval over their lifts instead (closed_loop_seeds.json).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from _common import REPO, emit, machine
from privrec.evaluation.loop_world import ShopWorld, WorldConfig
from privrec.service.loop_sim import ArmResult, ArmSpec, run_arm

EASE = {"reg": 200.0}  # the demo shop roster's EASE (pipeline.ROSTERS["shop"])


def lift_ci(treat: np.ndarray, base: np.ndarray, *, n_boot: int, seed: int) -> dict[str, float]:
    """Relative lift mean(treat)/mean(base) - 1 with a 95% paired bootstrap interval."""
    rng = np.random.default_rng(seed)
    n = len(treat)
    point = float(treat.mean() / base.mean() - 1.0) if base.mean() > 0 else float("nan")
    boots = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, size=n)
        m = base[idx].mean()
        boots[b] = treat[idx].mean() / m - 1.0 if m > 0 else np.nan
    lo, hi = np.nanpercentile(boots, [2.5, 97.5])
    return {"lift": round(point, 4), "ci95": [round(float(lo), 4), round(float(hi), 4)]}


def arm_summary(r: ArmResult, days: int) -> dict[str, Any]:
    """Totals and per-day figures of one arm."""
    daily = []
    for d in range(1, days + 1):
        m = r.day == d
        daily.append(
            {
                "day": d,
                "visits": int(m.sum()),
                "conversion": round(float(r.purchases[m].mean()), 4),
                "expected_conversion": round(float(r.expected[m].mean()), 5),
            }
        )
    return {
        "visits": len(r.purchases),
        "purchases": int(r.purchases.sum()),
        "conversion": round(float(r.purchases.mean()), 4),
        "expected_conversion": round(float(r.expected.mean()), 5),
        "clicks_per_visit": round(float(r.clicks.mean()), 4),
        "service_attributed": r.attributed,
        "service_impressions": r.impressions,
        "new_item_share_of_slots": round(r.new_items_shown, 4),
        "retrain_jobs": [j["status"] for j in r.jobs],
        "daily": daily,
        "seconds": round(r.seconds, 1),
    }


def simulate(
    cfg: WorldConfig, *, gate: bool, t_all: float
) -> tuple[ShopWorld, dict[str, ArmResult]]:
    """Build the world and run the three arms on it, one after another."""
    world = ShopWorld(cfg)
    print(
        f"world: {cfg.n_items} items ({int((world.launch_day > 0).sum())} launched during the "
        f"run), {cfg.n_history_users} shoppers with history + {cfg.n_new_users} joining, "
        f"{len(world.history)} history events, {cfg.days} days x {cfg.visits_per_day} visits, "
        f"seed {cfg.seed}; {time.perf_counter() - t_all:.1f}s",
        flush=True,
    )
    arms = [
        ArmSpec("popularity_static", "popularity"),
        ArmSpec("ease_static", "ease", EASE),
        ArmSpec("ease_loop", "ease", EASE, retrain_every_hours=24.0, gate=gate),
    ]
    results: dict[str, ArmResult] = {}
    for arm in arms:
        with tempfile.TemporaryDirectory(prefix=f"closed-loop-{arm.name}-") as d:
            results[arm.name] = run_arm(
                world, arm, Path(d), progress=lambda line: print(line, flush=True)
            )
        print(f"{arm.name}: {results[arm.name].seconds:.1f}s", flush=True)
    return world, results


def lifts_of(results: dict[str, ArmResult], cfg: WorldConfig, *, n_boot: int) -> dict[str, Any]:
    """The loop's lifts over both static arms, with paired bootstrap intervals."""
    loop = results["ease_loop"]
    late = loop.day > cfg.days // 2
    lifts: dict[str, Any] = {}
    for base in ("popularity_static", "ease_static"):
        b = results[base]
        lifts[f"loop_over_{base}"] = {
            "expected_conversion": lift_ci(loop.expected, b.expected, n_boot=n_boot, seed=1),
            "conversion": lift_ci(
                loop.purchases.astype(float), b.purchases.astype(float), n_boot=n_boot, seed=2
            ),
            "expected_conversion_second_half": lift_ci(
                loop.expected[late], b.expected[late], n_boot=n_boot, seed=3
            ),
        }
    return lifts


def across_seeds(args: argparse.Namespace, t_all: float) -> None:
    """The same comparison on `args.seeds` independent worlds: a t interval over the worlds'
    lifts (the world-to-world variation the one-world bootstrap leaves out)."""
    per_seed = []
    for s in range(args.seed, args.seed + args.seeds):
        cfg = WorldConfig(days=args.days, visits_per_day=args.visits, seed=s)
        _, results = simulate(cfg, gate=args.gate, t_all=t_all)
        row: dict[str, Any] = {"seed": s}
        for name, r in results.items():
            row[name] = {
                "conversion": float(r.purchases.mean()),
                "expected_conversion": float(r.expected.mean()),
            }
        per_seed.append(row)
        print(f"seed {s}: {json.dumps(row)}", flush=True)
    lifts: dict[str, Any] = {}
    for base in ("popularity_static", "ease_static"):
        for metric in ("expected_conversion", "conversion"):
            x = np.array(
                [r["ease_loop"][metric] / r[base][metric] - 1.0 for r in per_seed], np.float64
            )
            half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
            lifts.setdefault(f"loop_over_{base}", {})[metric] = {
                "mean_lift": round(float(x.mean()), 4),
                "ci95": [round(float(x.mean()) - half, 4), round(float(x.mean()) + half, 4)],
                "per_seed": [round(float(v), 4) for v in x],
            }
    summary = {
        "benchmark": "closed_loop_seeds",
        "days": args.days,
        "visits_per_day": args.visits,
        "seeds": list(range(args.seed, args.seed + args.seeds)),
        "model": {"name": "ease", "params": EASE},
        "retrain_policy": {"every_hours": 24.0, "gate": args.gate},
        "ci": "95% t interval over the worlds' (seeds') lifts",
        "per_seed": per_seed,
        "lifts": lifts,
        "seconds": round(time.perf_counter() - t_all, 1),
        "machine": machine(),
    }
    for name, lift in lifts.items():
        e, c = lift["expected_conversion"], lift["conversion"]
        print(
            f"{name}: expected conversion {e['mean_lift']:+.1%} [{e['ci95'][0]:+.1%}, "
            f"{e['ci95'][1]:+.1%}]; simulated {c['mean_lift']:+.1%} [{c['ci95'][0]:+.1%}, "
            f"{c['ci95'][1]:+.1%}]",
            flush=True,
        )
    out = REPO / "benchmarks" / "results" / "closed_loop_seeds.json"
    out.write_text(json.dumps(summary, indent=2, default=float))
    emit(summary)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--visits", type=int, default=300, help="visits per day")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--boot", type=int, default=2000, help="bootstrap resamples")
    ap.add_argument("--gate", action="store_true", help="run the retrain policy's gate")
    ap.add_argument("--quick", action="store_true", help="a tiny run; writes no results")
    ap.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="N > 1: run N worlds (seeds seed..seed+N-1) and report a t interval over them "
        "(closed_loop_seeds.json)",
    )
    args = ap.parse_args()
    t_all = time.perf_counter()
    if args.seeds > 1:
        across_seeds(args, t_all)
        return
    if args.quick:
        cfg = WorldConfig(
            n_items=300, n_history_users=200, n_new_users=40, days=3, visits_per_day=40
        )
    else:
        cfg = WorldConfig(days=args.days, visits_per_day=args.visits, seed=args.seed)
    world, results = simulate(cfg, gate=args.gate, t_all=t_all)
    lifts = lifts_of(results, cfg, n_boot=args.boot)
    summary = {
        "benchmark": "closed_loop",
        "world": {
            **cfg.__dict__,
            "history_events": len(world.history),
            "items_launched_during_run": int((world.launch_day > 0).sum()),
            "position_bias": "1/log2(p+2)",
        },
        "model": {"name": "ease", "params": EASE},
        "retrain_policy": {"every_hours": 24.0, "gate": args.gate},
        "ci": f"95% paired percentile bootstrap over visits (shopper-days), {args.boot} resamples",
        "arms": {name: arm_summary(r, cfg.days) for name, r in results.items()},
        "lifts": lifts,
        "seconds": round(time.perf_counter() - t_all, 1),
        "machine": machine(),
    }
    for name, lift in lifts.items():
        e, c = lift["expected_conversion"], lift["conversion"]
        print(
            f"{name}: expected conversion {e['lift']:+.1%} [{e['ci95'][0]:+.1%}, "
            f"{e['ci95'][1]:+.1%}]; simulated {c['lift']:+.1%} [{c['ci95'][0]:+.1%}, "
            f"{c['ci95'][1]:+.1%}]",
            flush=True,
        )
    if not args.quick:
        out = REPO / "benchmarks" / "results" / "closed_loop.json"
        out.write_text(json.dumps(summary, indent=2, default=float))
    emit(summary)


if __name__ == "__main__":
    main()
