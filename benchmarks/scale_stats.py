"""Statistics jobs beyond one process (issue 15): single process vs Ray, and a projection.

Part 1, MovieLens-1M (all 836,478 user-item pairs of the LightGCN++ split, 6,039 users, 3,628
items): the statistics job (item counts, co-occurrence, EASE's Gram matrix) in one process and
as 2 user shards on a local Ray cluster of 2 workers: wall time, peak memory (the driver's traced
numpy peak and each Ray worker's peak RSS), and whether the results are bit-identical.

Part 2, the stages at 1, 2 and 4 million synthetic events: users bootstrapped (resampled with
replacement) from one `privrec.data.synthetic.generate_shop` shop (its per-user histories and
item popularity; the generator itself takes ~1 ms per shopper, too slow to draw 140,000 of
them here), the catalogue fixed. Each stage in this process, timed, with its traced peak memory:

  build      events -> the user x item CSR matrix
  stats      per-shard sums (4 shards) + the one reduction (counts, co-occurrence, Gram)
  ease       EASE's solve from the reduced Gram (items^3; does not grow with events)
  dp_sums    the exact sums of a DP EASE release (unit-row column sums, Gram of 1,000 items)
  topk       every user's top-50 list (scoring users x items)

and a least-squares fit t = a + b x events (memory likewise) extrapolated to 1 billion events
from 10 million shoppers, with the engine that runs each stage there.

Usage: nice python benchmarks/scale_stats.py [--ml1m-only] [--sizes 1e6,2e6,4e6]
The last line of the output is the figures as JSON (also written to results/scale_stats.json).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from _common import machine, shared_data
from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary
from privrec.models.dp.release import unit_column_sums, unit_gram
from privrec.models.ease import EASE, ease_solution
from privrec.models.sharded import (
    ShardRunner,
    Statistics,
    reduce_statistics,
    row_shards,
    shard_statistics,
    sharded_topk,
)

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "scale_stats.json"
TARGET_EVENTS = 1_000_000_000
TARGET_USERS = 10_000_000


CPU: dict[str, float] = {}  # CPU seconds of the last `measured` call


def measured(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """fn(), its wall seconds and its traced peak memory in MB (numpy/scipy arrays included).

    The CPU seconds of this process (all its threads) go to CPU["last"]: on a machine shared
    with other jobs they vary far less than the wall time, so the projection fits them.
    """
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    c0 = time.process_time()
    t0 = time.perf_counter()
    out = fn()
    secs = time.perf_counter() - t0
    CPU["last"] = time.process_time() - c0
    peak = (tracemalloc.get_traced_memory()[1] - base) / 2**20
    return out, secs, peak


def figures(secs: float, peak: float, **extra: Any) -> dict[str, Any]:
    """One stage's wall seconds, CPU seconds and traced peak MB."""
    return {
        "seconds": round(secs, 2),
        "cpu_seconds": round(CPU["last"], 2),
        "peak_mb": round(peak, 1),
        **extra,
    }


def worker_stats(x: sp.csr_matrix) -> tuple[Statistics, float, float, float]:
    """One shard's statistics, the seconds computing them took in the worker and the worker
    process's peak RSS (MB) after computing them, and the CPU seconds they took."""
    t0, c0 = time.perf_counter(), time.process_time()
    s = shard_statistics(x)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    return s, secs, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, cpu


def _noop(v: int) -> int:
    return v


def same(a: Statistics, b: Statistics) -> bool:
    """Bit-identical statistics (counts, both sparse matrices' structure and values)."""
    return (
        a.n_users == b.n_users
        and np.array_equal(a.item_counts, b.item_counts)
        and all(
            np.array_equal(getattr(p, f), getattr(q, f))
            for p, q in [(a.cooccurrence, b.cooccurrence), (a.gram, b.gram)]
            for f in ("indptr", "indices", "data")
        )
    )


# ---- part 1: MovieLens-1M ----------------------------------------------------------------------
def load_ml1m() -> sp.csr_matrix:
    """All user-item pairs of the LightGCN++ MovieLens-1M split, as a 0/1 CSR matrix."""
    folder = shared_data() / "movielens-1m-lightgcnpp"
    rows: list[int] = []
    cols: list[int] = []
    for name in ("train.txt", "valid.txt", "test.txt"):
        for line in (folder / name).read_text().splitlines():
            ids = [int(v) for v in line.split()]
            if len(ids) > 1:
                rows += [ids[0]] * (len(ids) - 1)
                cols += ids[1:]
    r, c = np.asarray(rows), np.asarray(cols)
    x = sp.csr_matrix((np.ones(r.size), (r, c)), shape=(r.max() + 1, c.max() + 1))
    x.sum_duplicates()
    x.data[:] = 1.0
    return x


def ml1m(ray: Any) -> dict[str, Any]:
    x = load_ml1m()
    one, t_one, m_one = measured(lambda: shard_statistics(x))
    cpu_one = CPU["last"]
    runner = ShardRunner(use_ray=True)
    t0 = time.perf_counter()
    runner.map(_noop, [0, 1])  # workers up (not part of the job's time)
    warm = time.perf_counter() - t0

    split: dict[str, float] = {}

    def job() -> tuple[Statistics, list[float]]:
        t = time.perf_counter()
        parts = runner.map(worker_stats, row_shards(x, 2))
        split["map"] = time.perf_counter() - t
        t = time.perf_counter()
        total = reduce_statistics([p[0] for p in parts])
        split["reduce"] = time.perf_counter() - t
        split["task_compute_max"] = max(p[1] for p in parts)
        split["task_cpu"] = sum(p[3] for p in parts)
        return total, [p[2] for p in parts]

    (two, rss), t_two, m_two = measured(job)
    return {
        "users": int(x.shape[0]),
        "items": int(x.shape[1]),
        "pairs": int(x.nnz),
        "cooccurrence_nnz": int(one.cooccurrence.nnz),
        "single_process": {
            "seconds": round(t_one, 2),
            "cpu_seconds": round(cpu_one, 2),
            "peak_mb": round(m_one, 1),
        },
        "ray_2_workers": {
            "seconds": round(t_two, 2),
            "map_seconds": round(split["map"], 2),
            "reduce_seconds": round(split["reduce"], 2),
            "slowest_task_compute_seconds": round(split["task_compute_max"], 2),
            "tasks_cpu_seconds": round(split["task_cpu"], 2),
            "driver_cpu_seconds": round(CPU["last"], 2),
            "driver_peak_mb": round(m_two, 1),
            "worker_peak_rss_mb": [round(v, 1) for v in rss],
            "cluster_start_seconds": round(warm, 1),
        },
        "exactly_equal": same(one, two),
    }


# ---- part 2: stages at 1, 2, 4 million events --------------------------------------------------
def base_shop(n_items: int, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """User and item indices of one synthetic shop's events (view, cart, favourite, purchase)."""
    from privrec.data.synthetic import generate_shop

    events, catalogue = generate_shop(n_items=n_items, n_users=n_users, seed=15)
    events = events[events["type"] != "search"]
    users = {u: i for i, u in enumerate(sorted(set(events["user"])))}
    items = {k: i for i, k in enumerate(catalogue["item"].astype(str))}
    u = events["user"].map(users).to_numpy(np.int64)
    it = events["item"].astype(str).map(items).to_numpy(np.int64)
    return u, it


def scaled(
    u: np.ndarray, it: np.ndarray, n_events: int, seed: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """About `n_events` events of users resampled (with replacement) from the base shop."""
    order = np.argsort(u, kind="stable")
    u, it = u[order], it[order]
    starts = np.searchsorted(u, np.arange(u.max() + 2))
    lengths = np.diff(starts)
    per_user = lengths.mean()
    n_users = round(float(n_events / per_user))
    pick = np.random.default_rng(seed).integers(0, lengths.size, size=n_users)
    sizes = lengths[pick]
    new_u = np.repeat(np.arange(n_users), sizes)
    # positions of each picked user's events in the base arrays
    offs = np.repeat(starts[pick] - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes)
    new_i = it[np.arange(new_u.size) + offs]
    return new_u, new_i, n_users


def stages(u: np.ndarray, it: np.ndarray, n_users: int, n_items: int) -> dict[str, Any]:
    out: dict[str, Any] = {"events": int(u.size), "users": n_users, "items": n_items}

    def build() -> sp.csr_matrix:
        x = sp.csr_matrix((np.ones(u.size), (u, it)), shape=(n_users, n_items))
        x.sum_duplicates()
        x.data[:] = 1.0
        return x

    x, t, m = measured(build)
    out["build"] = figures(t, m)
    runner = ShardRunner()  # in process: the per-stage memory is this process's

    def stats() -> Statistics:
        return reduce_statistics(runner.map(shard_statistics, row_shards(x, 4)))

    total, t, m = measured(stats)
    out["stats"] = figures(t, m, cooccurrence_nnz=int(total.cooccurrence.nnz))
    _, t, m = measured(lambda: ease_solution(total.gram, 300.0))
    out["ease"] = figures(t, m)
    sel = np.sort(np.argsort(-total.item_counts, kind="stable")[:1000])

    def dp_sums() -> None:
        parts = row_shards(x, 4)
        sums = [unit_column_sums(p) for p in parts]
        grams = [unit_gram(p, sel) for p in parts]
        _ = (sum(sums[1:], sums[0]), sum(grams[1:], grams[0]))

    _, t, m = measured(dp_sums)
    out["dp_sums"] = figures(t, m, selected=int(sel.size))
    model = EASE().fit_from_statistics(total.gram, n_items)

    ds = InteractionDataset(
        users=Vocabulary([str(i) for i in range(n_users)]),
        items=Vocabulary([str(i) for i in range(n_items)]),
        user_idx=u.astype(np.int32),
        item_idx=it.astype(np.int32),
        event_type=np.zeros(u.size, np.int8),
        ts=np.zeros(u.size),
        rating=np.full(u.size, np.nan, np.float32),
        item_meta=pd.DataFrame({"item": [str(i) for i in range(n_items)]}),
    )
    lists, t, m = measured(lambda: sharded_topk(model, ds, 50, n_shards=4))
    out["topk"] = figures(t, m, users=len(lists.items))
    return out


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares intercept and slope."""
    b, a = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(a), float(b)


ENGINES = {
    "build": "the event store (PostgreSQL, events partitioned by time) read per user shard "
    "by each Ray task: no machine holds all events",
    "stats": "Ray tasks over user shards; one reduction (a tree of adds) on the driver",
    "ease": "one machine (the driver or a large Ray node): items^3, independent of events",
    "dp_sums": "Ray tasks over user shards; the noise is added once on the driver",
    "topk": "Ray tasks over user shards, lists written per shard",
}


def project(rows: list[dict[str, Any]], n_items: int) -> dict[str, Any]:
    ev = [r["events"] for r in rows]
    users = [r["users"] for r in rows]
    out: dict[str, Any] = {
        "target_events": TARGET_EVENTS,
        "target_users": TARGET_USERS,
        "catalogue_items_measured": n_items,
    }
    for stage in ("build", "stats", "dp_sums"):
        a, b = fit_line(ev, [r[stage]["cpu_seconds"] for r in rows])
        am, bm = fit_line(ev, [r[stage]["peak_mb"] for r in rows])
        out[stage] = {
            "cpu_seconds_per_million_events": round(b * 1e6, 3),
            "single_core_hours_at_target": round((a + b * TARGET_EVENTS) / 3600, 2),
            "peak_mb_per_million_events": round(bm * 1e6, 1),
            "peak_gb_at_target_in_one_process": round((am + bm * TARGET_EVENTS) / 1024, 1),
            "shards_for_4gb_tasks": int(np.ceil((am + bm * TARGET_EVENTS) / 1024 / 4)),
            "engine": ENGINES[stage],
        }
    a, b = fit_line(users, [r["topk"]["cpu_seconds"] for r in rows])
    out["topk"] = {
        "cpu_seconds_per_million_users": round(b * 1e6, 2),
        "single_core_hours_at_target": round((a + b * TARGET_USERS) / 3600, 2),
        "note": f"at {n_items} items; scoring grows with users x items",
        "engine": ENGINES["topk"],
    }
    ease = [r["ease"]["cpu_seconds"] for r in rows]
    out["ease"] = {
        "cpu_seconds_measured": round(float(np.median(ease)), 2),
        "cpu_seconds_at_20000_items": round(float(np.median(ease)) * (20_000 / n_items) ** 3, 0),
        "gb_at_20000_items": round(20_000**2 * 12 / 2**30, 1),  # float64 P + float32 B
        "engine": ENGINES["ease"],
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ml1m-only", action="store_true")
    ap.add_argument("--sizes", default="1e6,2e6,4e6")
    ap.add_argument("--base-users", type=int, default=3000)
    ap.add_argument("--items", type=int, default=3000)
    args = ap.parse_args()
    import ray

    tracemalloc.start()
    result: dict[str, Any] = {"machine": machine()}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result["ml1m"] = ml1m(ray)
    finally:
        ray.shutdown()
    print("ml1m", json.dumps(result["ml1m"]), flush=True)
    if not args.ml1m_only:
        t0 = time.perf_counter()
        u, it = base_shop(args.items, args.base_users)
        result["base_shop"] = {
            "users": int(u.max() + 1),
            "events": int(u.size),
            "items": args.items,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        rows = []
        for n in [int(float(s)) for s in args.sizes.split(",")]:
            su, si, n_users = scaled(u, it, n, seed=n)
            row = stages(su, si, n_users, args.items)
            print("stages", json.dumps(row), flush=True)
            rows.append(row)
        result["stages"] = rows
        result["projection"] = project(rows, args.items)
    if args.ml1m_only and RESULTS.exists():  # keep the stages of an earlier full run
        result = {**json.loads(RESULTS.read_text()), **result}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    sys.exit(main())
