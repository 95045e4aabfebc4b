"""Ingestion benchmark: privacy gate + encrypted event store throughput and peak memory.

Cases (each runs in a fresh child process, so its peak RSS is its own):
  taobao      the Taobao UserBehavior 2-hour slice (no header: user_id,item_id,category_id,
              behavior_type,timestamp; pv/cart/fav/buy -> view/cart/favorite/purchase; the
              truncated last line is dropped), written as a CSV with a header, then ingested.
  generated   a seeded 1,000,000-event CSV log (views, carts, favourites, purchases, searches,
              ratings; sessions; 0.1% malformed timestamps), ingested into an empty store and
              then ingested again (every row a duplicate).

Everything runs in a temporary data directory; nothing is written under the shared data folder.
Usage: python benchmarks/ingest.py [--events N] [--batch-size N] [--threads N]
The last line of the output is the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
TAOBAO = Path("taobao-userbehavior-samples") / "UserBehavior_flink_ecommerce_2h_slice.csv"
TAOBAO_TYPES = {"pv": "view", "cart": "cart", "fav": "favorite", "buy": "purchase"}
TARGET_EVENTS_PER_S = 100_000


def shared_data_dir() -> Path:
    """$PRIVREC_SHARED_DATA or ../shared/data beside the repository."""
    return Path(os.environ.get("PRIVREC_SHARED_DATA", REPO.parent / "shared" / "data"))


def taobao_to_csv(src: Path, dst: Path) -> int:
    """Map the Taobao log to a CSV the gate reads (user,item,type,timestamp); returns rows."""
    raw = src.read_bytes()
    if raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]  # the slice ends mid-line: drop the truncated line
    df = pd.read_csv(
        __import__("io").BytesIO(raw),
        header=None,
        names=["user", "item", "category", "behavior", "timestamp"],
        dtype=str,
    )
    out = pd.DataFrame(
        {
            "user": df["user"],
            "item": df["item"],
            "type": df["behavior"].map(TAOBAO_TYPES),
            "timestamp": df["timestamp"],
        }
    )
    out.to_csv(dst, index=False)
    return len(out)


def generate_csv(path: Path, n: int, seed: int = 7) -> int:
    """A seeded synthetic shop log with `n` events (about 0.1% malformed timestamps)."""
    rng = np.random.default_rng(seed)
    n_users, n_items = 50_000, 100_000
    users = np.minimum(rng.zipf(1.3, n), n_users) - 1
    items = np.minimum(rng.zipf(1.2, n), n_items) - 1
    types = rng.choice(
        ["view", "cart", "favorite", "purchase", "search", "rating"],
        size=n,
        p=[0.7, 0.1, 0.05, 0.05, 0.05, 0.05],
    )
    end = 1_719_792_000  # 2024-07-01
    ts = np.sort(rng.integers(end - 90 * 86_400, end, n))
    sessions = users * 1000 + (ts // 1800) % 1000
    words = np.array(
        [
            "green tea",
            "running shoes",
            "usb-c cable",
            "yoga mat",
            "coffee beans",
            "dog food",
            "face cream",
        ]
    )
    df = pd.DataFrame(
        {
            "user": np.char.add("shopper-", users.astype(str)),
            "item": np.char.add("sku-", items.astype(str)),
            "type": types,
            "timestamp": ts.astype(str),
            "rating": np.where(types == "rating", rng.integers(1, 6, n).astype(str), ""),
            "query": np.where(types == "search", words[rng.integers(0, len(words), n)], ""),
            "session": np.char.add("s-", sessions.astype(str)),
        }
    )
    bad = rng.random(n) < 0.001
    df.loc[bad, "timestamp"] = "not-a-time"
    df.to_csv(path, index=False)
    return n


def child(
    case: str, csv_path: Path, data_dir: Path, batch_size: int, threads: int | None, repeat: bool
) -> dict:
    """Ingest one CSV into a fresh store in this process; report throughput and peak RSS."""
    from privrec.events.gate import Gate
    from privrec.events.ingest import ingest_file
    from privrec.events.store import EventStore
    from privrec.privacy.pseudonym import Pseudonymiser

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    p = Pseudonymiser.from_data_dir(data_dir)
    gate = Gate(p)
    out: dict = {"case": case, "load_avg_1m_before": round(os.getloadavg()[0], 2)}
    t0 = time.perf_counter()
    with EventStore.open(data_dir, threads=threads) as store:
        c = cpu()
        r1 = ingest_file(
            csv_path, gate, store, rejects_path=data_dir / "rejects.jsonl", batch_size=batch_size
        )
        # CPU seconds of this process (all threads): what the work costs whatever else runs.
        out["first"] = r1.to_dict() | {
            "events_per_s": round(r1.read / r1.seconds),
            "cpu_s": round(cpu() - c, 2),
        }
        if repeat:
            c = cpu()
            r2 = ingest_file(
                csv_path,
                gate,
                store,
                rejects_path=data_dir / "rejects2.jsonl",
                batch_size=batch_size,
            )
            out["again"] = r2.to_dict() | {
                "events_per_s": round(r2.read / r2.seconds),
                "cpu_s": round(cpu() - c, 2),
            }
        out["stored"] = store.count()
    out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    out["seconds_incl_open_close"] = round(time.perf_counter() - t0, 3)
    out["store_mb"] = round((data_dir / "events.duckdb").stat().st_size / 1e6, 1)
    # ru_maxrss is in KiB on Linux.
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["rss_at_start_mb"] = round(base_rss / 1024, 1)
    return out


def prepare(case: str, csv_path: Path, args: argparse.Namespace) -> dict:
    """Write a case's CSV in a child process, so this process stays small: ru_maxrss survives
    fork and exec, and a big parent would inflate the measured children's peaks."""
    cmd = [sys.executable, __file__, "--prepare", case, str(csv_path), "--events", str(args.events)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"preparing {case} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_child(
    case: str, csv_path: Path, data_dir: Path, args: argparse.Namespace, repeat: bool
) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        case,
        str(csv_path),
        str(data_dir),
        "--batch-size",
        str(args.batch_size),
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if repeat:
        cmd.append("--repeat")
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"benchmark case {case} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=1_000_000, help="events in the generated log")
    ap.add_argument("--batch-size", type=int, default=200_000)
    ap.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    ap.add_argument("--child", nargs=3, metavar=("CASE", "CSV", "DATA_DIR"), help=argparse.SUPPRESS)
    ap.add_argument("--prepare", nargs=2, metavar=("CASE", "CSV"), help=argparse.SUPPRESS)
    ap.add_argument("--repeat", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        case, csv_path, data_dir = args.child
        print(
            json.dumps(
                child(
                    case, Path(csv_path), Path(data_dir), args.batch_size, args.threads, args.repeat
                )
            )
        )
        return
    if args.prepare:
        case, csv_path = args.prepare
        t = time.perf_counter()
        n = (
            taobao_to_csv(shared_data_dir() / TAOBAO, Path(csv_path))
            if case == "taobao"
            else generate_csv(Path(csv_path), args.events)
        )
        print(json.dumps({"rows": n, "seconds": round(time.perf_counter() - t, 2)}))
        return

    results: dict = {
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "cpus": os.cpu_count(),
        "batch_size": args.batch_size,
    }
    with tempfile.TemporaryDirectory(prefix="privrec-bench-") as tmp:
        tmp_path = Path(tmp)
        src = shared_data_dir() / TAOBAO
        if src.is_file():
            csv_path = tmp_path / "taobao.csv"
            prep = prepare("taobao", csv_path, args)
            results["taobao"] = run_child(
                "taobao", csv_path, tmp_path / "store-taobao", args, repeat=False
            ) | {"rows": prep["rows"]}
        else:
            results["taobao"] = {"skipped": f"not found: {src}"}
        gen = tmp_path / "generated.csv"
        prep = prepare("generated", gen, args)
        results["generated_file_s"] = prep["seconds"]
        results["generated"] = run_child(
            "generated", gen, tmp_path / "store-gen", args, repeat=True
        ) | {"rows": prep["rows"]}

    print(
        "privrec ingestion benchmark (gate + AES-GCM encrypted DuckDB store, end to end from CSV)"
    )
    for case in ("taobao", "generated"):
        r = results[case]
        if "skipped" in r:
            print(f"  {case:<10} skipped ({r['skipped']})")
            continue
        f = r["first"]
        print(
            f"  {case:<10} {f['read']:>9,} rows  {f['events_per_s']:>9,} events/s  accepted "
            f"{f['accepted']:,}  rejected {f['rejected']:,}  duplicates {f['duplicates']:,}  "
            f"{f['seconds']:.2f} s wall, {f['cpu_s']:.2f} s CPU  peak RSS {r['peak_rss_mb']} MB  "
            f"store {r['store_mb']} MB  (load avg {r['load_avg_1m_before']})"
        )
        if "again" in r:
            a = r["again"]
            print(
                f"  {'(again)':<10} {a['read']:>9,} rows  {a['events_per_s']:>9,} "
                f"events/s  accepted {a['accepted']:,}  duplicates {a['duplicates']:,}"
            )
    ok = all(
        results[c]["first"]["events_per_s"] >= TARGET_EVENTS_PER_S
        for c in ("taobao", "generated")
        if "first" in results[c]
    )
    results["meets_target"] = ok
    print(f"  target {TARGET_EVENTS_PER_S:,} events/s: {'met' if ok else 'NOT met'}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
