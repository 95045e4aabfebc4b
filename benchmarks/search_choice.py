"""What a consenting shopper's search writes in the request, before and after the search-choice fix.

Before, `run_search` stored every consenting shopper's search as a `search` event naming the
first item found: the live gate, an append to the encrypted store and the in-memory history,
plus the sealed query embedding. Now the search keeps only the sealed embedding (and marks the
shopper's cached lists stale); the `search` event is stored when the shopper acts on a result,
on the click's request (`FeedbackLog.on_search_choice`).

In-process on the demo shop's generator (400 items, 300 shoppers, itemknn, the real MiniLM
query encoder), interleaved so machine noise hits every variant alike:
- `old_write_ms`: the old write, reproduced step by step (gate, store append, history, embedding);
- `new_write_ms`: the new write (`SearchIndexes.remember` + the history bump);
- `search_ms`: the whole consenting-shopper search as served now (`RecSys.search`);
- `click_on_search_ms` / `click_on_recs_ms`: a click (`Ingestion.batch`, a view with the list id)
  on a search result, which now stores the chosen search too, against one on a recommendation.

Usage: python benchmarks/search_choice.py [--calls 200]
The last line of the output is the figures as JSON (also written to results/search_choice.json).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import REPO, machine


def _pct(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {
        "p50": round(statistics.median(xs), 3),
        "p90": round(xs[int(0.9 * (len(xs) - 1))], 3),
        "mean": round(statistics.fmean(xs), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()

    import numpy as np
    import pandas as pd

    from privrec.core.settings import Settings
    from privrec.data.synthetic import generate_shop
    from privrec.service import RecSys

    events, catalogue = generate_shop(n_items=400, n_users=300, seed=11)
    users = sorted(set(events["user"].astype(str)))[:100]
    titles = catalogue["title"].astype(str).tolist()
    queries = [" ".join(t.split()[:2]) for t in titles[:50]]
    times: dict[str, list[float]] = {
        k: [] for k in ("old_write", "new_write", "search", "click_on_search", "click_on_recs")
    }
    with tempfile.TemporaryDirectory() as tmp, RecSys(Settings(data_dir=Path(tmp) / "d")) as rs:
        rs.add_items(catalogue)
        rs.ingest_frame(events)
        rs.train("itemknn", params={"k": 50})
        rs.set_default_model("itemknn")
        idx = rs.serving.search_indexes
        idx.sync_max_items = 10_000  # the dense index now, not in the background
        rs.search(queries[0], 10, user_id=users[0])  # builds the index, loads the encoder
        entry = idx.get(rs.serving.model())
        gate = rs.ingestion.live_gate
        for n in range(args.calls):
            u, q = users[n % len(users)], queries[n % len(queries)]
            p = rs.ctx.pseudonymise(u)
            qv = np.asarray(entry.index.query_vector(q), np.float32)
            first = rs.search(q, 10).items[0]["item"]
            # the old write, as run_search did it before the fix
            t0 = time.perf_counter()
            rec = {
                "user": u,
                "item": first,
                "type": "search",
                "timestamp": time.time(),
                "query": q,
                "event_id": secrets.token_hex(16),
            }
            res = gate.process_frame(pd.DataFrame([rec]), line_numbers=np.asarray([1], np.int64))
            row = res.accepted.iloc[0]
            idx.memory.add(p, str(row["event_id"]), float(row["ts"]), qv)
            rs.ctx.store.append(res.accepted)
            rs.serving.add_events(res.accepted)
            times["old_write"].append((time.perf_counter() - t0) * 1e3)
            # the new write
            t0 = time.perf_counter()
            idx.remember(p, secrets.token_hex(8), q, qv)
            rs.serving.history.bump(p)
            times["new_write"].append((time.perf_counter() - t0) * 1e3)
            # the whole search as served now, then a click on its second result
            t0 = time.perf_counter()
            found = rs.search(q, 10, user_id=u)
            times["search"].append((time.perf_counter() - t0) * 1e3)
            click = {"user": u, "type": "view", "timestamp": time.time()}
            item, rid = found.items[1]["item"], found.recommendation_id
            t0 = time.perf_counter()
            rs.ingestion.batch([{**click, "item": item, "recommendation_id": rid}])
            times["click_on_search"].append((time.perf_counter() - t0) * 1e3)
            recs = rs.recommend(u, k=10)
            item, rec_id = recs.items[1]["item"], recs.recommendation_id
            t0 = time.perf_counter()
            rs.ingestion.batch([{**click, "item": item, "recommendation_id": rec_id}])
            times["click_on_recs"].append((time.perf_counter() - t0) * 1e3)
    out: dict[str, Any] = {
        "benchmark": "search_choice",
        "calls": args.calls,
        **{f"{k}_ms": _pct(v) for k, v in times.items()},
        "load_average_1m": round(os.getloadavg()[0], 2),
        "machine": machine(),
    }
    (REPO / "benchmarks" / "results" / "search_choice.json").write_text(json.dumps(out, indent=1))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
