"""What logging every served list as an impression costs the hot path.

In-process, on the demo shop's generator (2,000 items, 1,000 shoppers, itemknn): each round
serves the same shoppers from the warm list cache (the hot path of `POST /v1/recommendations`),
once with the impression log as it runs and once with `FeedbackLog.log` replaced by a no-op,
interleaved so that machine noise hits both alike. The background write is measured on its own:
sealing and writing `FLUSH_EVERY` buffered impressions in one transaction.

Usage: python benchmarks/feedback_overhead.py [--rounds 7] [--calls 5000]
The last line of the output is the figures as JSON (also written to results/).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=5000)
    args = ap.parse_args()

    from privrec.core.settings import Settings
    from privrec.data.synthetic import generate_shop
    from privrec.service import RecSys
    from privrec.service.feedback import FLUSH_EVERY

    events, catalogue = generate_shop(n_items=2000, n_users=1000, seed=11)
    users = sorted(set(events["user"].astype(str)))[:500]
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp, RecSys(Settings(data_dir=Path(tmp) / "d")) as rs:
        rs.add_items(catalogue)
        rs.ingest_frame(events)
        rs.train("itemknn", params={"k": 100})
        for u in users:  # warm: every list cached
            rs.recommend(u, k=10)
        fb = rs.experiments.feedback
        real_log = fb.log

        def noop(*_a: object, **_k: object) -> None:
            return None

        def per_call_us() -> float:
            t0 = time.perf_counter()
            for n in range(args.calls):
                rs.recommend(users[n % len(users)], k=10)
            return (time.perf_counter() - t0) / args.calls * 1e6

        with_log, without = [], []
        for _ in range(args.rounds):
            fb.log = real_log  # type: ignore[method-assign]
            with_log.append(per_call_us())
            fb.log = noop  # type: ignore[method-assign]
            without.append(per_call_us())
        fb.log = real_log  # type: ignore[method-assign]
        fb.flush()
        for n in range(FLUSH_EVERY):
            fb._pending.append(  # a full buffer, as the serving path leaves it
                (f"bench{n:012x}", "p" * 32, True, time.time(), "recommend", "itemknn", "v",
                 "", "", [f"sku-{i:06d}" for i in range(10)])
            )  # fmt: skip
        t0 = time.perf_counter()
        written = fb.flush()
        flush_ms = (time.perf_counter() - t0) * 1e3
        out = {
            "calls_per_round": args.calls,
            "rounds": args.rounds,
            "cached_recommend_us_with_impression_log": round(statistics.median(with_log), 2),
            "cached_recommend_us_without": round(statistics.median(without), 2),
            "overhead_us_per_list": round(
                statistics.median(with_log) - statistics.median(without), 2
            ),
            "all_rounds_with": [round(x, 2) for x in with_log],
            "all_rounds_without": [round(x, 2) for x in without],
            "background_flush_ms": round(flush_ms, 2),
            "flushed_impressions": written,
            "flush_us_per_impression": round(flush_ms * 1e3 / max(written, 1), 2),
        }
    dest = REPO / "benchmarks" / "results" / "feedback_overhead.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out), file=sys.stdout)


if __name__ == "__main__":
    main()
