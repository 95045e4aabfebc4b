"""What deciding by the caller costs the hot path of POST /v1/recommendations.

In-process, on the demo shop's generator (2,000 items, 1,000 shoppers, itemknn, k = 10): each
round serves the same 500 shoppers from the warm list cache through
`privrec.server.personal.recommendations` (what the fast path and the FastAPI route call), once
per kind of caller, interleaved so that machine noise hits all alike:

- admin key (full explanations, the cost before this change plus one role check);
- client key alone (the shopper's list, explanations redacted on a copy);
- client key with the shopper's token (full; the token verified once, then remembered);
- client key alone in strict mode (the anonymous shopper's list).

The signature check of a token seen for the first time is timed on its own.

Usage: python benchmarks/personal_evidence.py [--rounds 5] [--calls 3000]
The last line of the output is the figures as JSON (also written to results/).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=3000)
    args = ap.parse_args()

    from privrec.core.settings import Settings
    from privrec.data.synthetic import generate_shop
    from privrec.server.personal import recommendations
    from privrec.server.schemas import RecommendIn
    from privrec.server.security import Principal
    from privrec.server.settings import ServerSettings
    from privrec.server.tokens import issue_shopper_token, verify_shopper_token
    from privrec.service import RecSys

    events, catalogue = generate_shop(n_items=2000, n_users=1000, seed=11)
    users = sorted(set(events["user"].astype(str)))[:500]
    secret = b"s" * 48
    tokens = {u: issue_shopper_token(secret, u, 3600) for u in users}
    bodies = {u: RecommendIn(user=u, k=10) for u in users}
    admin, client = Principal("admin", "key-a"), Principal("client", "key-c")
    with tempfile.TemporaryDirectory() as tmp, RecSys(Settings(data_dir=Path(tmp) / "d")) as rs:
        rs.add_items(catalogue)
        rs.ingest_frame(events)
        rs.train("itemknn", params={"k": 100})
        state = SimpleNamespace(
            rs=rs, server_settings=ServerSettings(), shopper_token_secret=secret
        )
        strict = SimpleNamespace(
            rs=rs,
            server_settings=ServerSettings(shopper_token_required=True),
            shopper_token_secret=secret,
        )
        callers = {
            "admin": (state, admin, False),
            "client_alone_redacted": (state, client, False),
            "client_with_token": (state, client, True),
            "client_alone_strict": (strict, client, False),
        }
        for st, who, tok in callers.values():  # warm: every list cached, every token seen
            for u in users:
                recommendations(st, who, tokens[u] if tok else None, bodies[u])

        def per_call_us(st: object, who: Principal, tok: bool) -> float:
            t0 = time.process_time()
            for n in range(args.calls):
                u = users[n % len(users)]
                recommendations(st, who, tokens[u] if tok else None, bodies[u])
            return (time.process_time() - t0) / args.calls * 1e6

        got: dict[str, list[float]] = {name: [] for name in callers}
        for _ in range(args.rounds):
            for name, (st, who, tok) in callers.items():
                got[name].append(per_call_us(st, who, tok))
        fresh = [issue_shopper_token(secret, u, 3600) for u in users]
        t0 = time.process_time()
        for t in fresh:
            verify_shopper_token(secret, t)
        verify_us = (time.process_time() - t0) / len(fresh) * 1e6
    med = {name: statistics.median(v) for name, v in got.items()}
    out = {
        "calls_per_round": args.calls,
        "rounds": args.rounds,
        "load_average_1min": round(os.getloadavg()[0], 1),
        "cpu_us_per_cached_list": {k: round(v, 1) for k, v in med.items()},
        "redaction_overhead_us": round(med["client_alone_redacted"] - med["admin"], 1),
        "remembered_token_overhead_us": round(med["client_with_token"] - med["admin"], 1),
        "first_token_signature_check_us": round(verify_us, 1),
        "all_rounds": {k: [round(x, 1) for x in v] for k, v in got.items()},
    }
    dest = REPO / "benchmarks" / "results" / "personal_evidence.json"
    dest.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out), file=sys.stdout)


if __name__ == "__main__":
    main()
