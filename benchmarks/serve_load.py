"""Load benchmark of the HTTP server on the Amazon Beauty catalogue.

The server runs in one process (uvicorn, uvloop + httptools, one worker: the embedded store is
one process's file); the load generator runs in another process and talks raw HTTP/1.1 over
keep-alive connections to 127.0.0.1 only. Every phase is bounded in time.

Phases:
  recs-closed    closed loop, C connections, POST /v1/recommendations k=10 (explanations are
                 always on), users drawn uniformly from the 22,363 Beauty shoppers: throughput
                 and latency at saturation, with the per-user list cache on.
  recs-open      open loop at a fixed rate (default 1,000 req/s): latency measured from each
                 request's scheduled time, so a stalled server cannot hide its queue.
  recs-nocache   the open-loop phase again with the server's list cache off (every request
                 computes scores, rules and explanations): the worst case.
  ingest         POST /v1/events/batch with 5,000 new events per request.
  hotswap        closed loop while the model is swapped between two versions and back via
                 POST /v1/models/{name}/activate: every request must succeed.

Usage: python benchmarks/serve_load.py [--model ease|itemknn] [--data-dir DIR] [--seconds S]
The data directory is prepared (gate -> encrypted store -> model trained twice for the swap)
unless it already holds the model. The last line of the output is the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import multiprocessing as mp
import os
import random
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
CLIENT_KEY = "bench-client-" + "c" * 24
ADMIN_KEY = "bench-admin-" + "a" * 24
PARAMS = {
    "ease": {"reg": 50.0},
    "itemknn": {"k": 200, "shrink": 10.0},
}  # benchmarks/beauty.py's tuned values
# The served hybrid (benchmarks/serve_hybrid.py): EASE (reg 50) + a small SASRec (10 epochs of
# sequential_beauty.py's settings) + MiniLM content + popularity, with the blend weights that
# sequential_beauty.py's validation fit chose (fixed here, so one fit of each component).
HYBRID_PARAMS: dict[str, Any] = {
    "cf": "ease",
    "cf_params": {"reg": 50.0, "binary": True},
    "sequential": "sasrec",
    "sequential_params": {
        "embedding_size": 64,
        "num_blocks": 1,
        "num_heads": 1,
        "max_len": 50,
        "dropout": 0.5,
        "loss": "sampled_softmax",
        "n_negatives": 1024,
        "batch_size": 256,
        "learning_rate": 0.002,
        "epochs": 10,
    },
    "weights": {"cf": 0.04, "sequential": 0.40, "content": 0.40, "popularity": 0.15},
    "cold_weights": {"content": 0.857, "popularity": 0.143},
    "cold_item_boost": 1.0,
    "seed": 42,
}
PARAMS["hybrid"] = {**HYBRID_PARAMS, "candidates": 100}
TARGET_RPS, TARGET_P99_MS, TARGET_EVENTS_PER_S = 1000.0, 25.0, 20000.0


# ---- data ---------------------------------------------------------------------------------------
def prepare(
    data_dir: Path,
    model: str,
    beauty: Path,
    *,
    params: dict[str, Any] | None = None,
    versions: int = 2,
) -> dict[str, Any]:
    """Ingest Beauty through the gate into the store, train `model` (with `params`, default
    PARAMS[model]), save it as `versions` versions (2: the swap phase needs a second)."""
    import pandas as pd

    from privrec.core.settings import Settings
    from privrec.data.loaders import SYNTHETIC_BASE_TS, load_amazon_s3rec
    from privrec.service import RecSys

    info: dict[str, Any] = {}
    with RecSys(Settings(data_dir=data_dir)) as rs:
        known = rs.registry.models().get(model)
        have = known.versions if known is not None else []
        if len(have) >= versions:
            info["reused"] = True
            rs.registry.activate(model, have[0])  # the swap phase then loads the other version cold
            rs.set_default_model(model)
            return info
        t0 = time.perf_counter()
        if rs.store.count() == 0:
            ds = load_amazon_s3rec(beauty, gate=rs.ctx.gate())
            rs.add_items(ds.item_meta[["item", "title", "category", "text"]])
            users, items, pos = [], [], []
            with open(next(beauty.glob("*.txt")), encoding="utf-8") as fh:
                for ln in fh:
                    p = ln.split()
                    for k, it in enumerate(p[1:]):
                        users.append(p[0])
                        items.append(it)
                        pos.append(k)
            frame = pd.DataFrame(
                {
                    "user": users,
                    "item": items,
                    "type": "purchase",
                    "timestamp": SYNTHETIC_BASE_TS + np.asarray(pos),
                }
            )
            info["ingest"] = rs.ingest_frame(frame).to_dict()
        info["prepare_ingest_s"] = round(time.perf_counter() - t0, 1)
        if not have:
            res = rs.train(model, params=params if params is not None else PARAMS[model])
            path = rs.models_dir / model / res.version
            info["train_s"] = round(res.train_seconds, 1)
        else:
            path = rs.models_dir / model / have[-1]
        rs.set_default_model(model)
        if versions < 2:
            return info
        # the same fitted artifact saved again: a second version to swap to
        from privrec.models.base import Recommender

        fitted = Recommender.load(path)
        rs.registry.save(fitted, rs.registry.items_of(model, path.name), name=model)
        rs.registry.activate(model, rs.registry.models()[model].versions[0])
    return info


def beauty_users(beauty: Path) -> list[str]:
    with open(next(beauty.glob("*.txt")), encoding="utf-8") as fh:
        return [ln.split()[0] for ln in fh if ln.strip()]


# ---- server process ------------------------------------------------------------------------------
def serve(data_dir: str, port: int, cache_entries: int) -> None:
    import logging

    import uvicorn

    from privrec.core.native_threads import serving_blas_threads
    from privrec.core.settings import Settings
    from privrec.server.app import create_app
    from privrec.server.settings import ServerSettings

    logging.basicConfig(level=logging.WARNING)
    server = ServerSettings(
        api_keys=f"client:{CLIENT_KEY},admin:{ADMIN_KEY}",
        rate_client=1e9,
        rate_admin=1e9,
        pages="off",
        cache_entries=cache_entries,
        max_batch_events=20000,
    )
    app = create_app(Settings(data_dir=Path(data_dir)), server=server)
    serving_blas_threads(server.blas_threads)  # as `privrec serve` does, in the main thread
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        backlog=2048,
        timeout_keep_alive=60,
    )


def _http(
    method: str,
    url: str,
    body: dict[str, Any] | None = None,
    key: str = ADMIN_KEY,
    timeout: float = 120,
) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_ready(base: str, proc: mp.Process, timeout: float = 600) -> dict[str, Any]:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if not proc.is_alive():
            raise RuntimeError("the server process died while starting")
        try:
            code, doc = _http("GET", base + "/health/ready", timeout=5)
            if code == 200:
                return doc
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("server not ready in time")


def metric(base: str, name: str) -> float:
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


# ---- load generator process ----------------------------------------------------------------------
def _request(path: str, body: bytes, key: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> int:
    writer.write(req)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    low = head.lower()
    i = low.find(b"content-length:")
    n = int(low[i + 15 : low.find(b"\r\n", i)]) if i >= 0 else 0
    if n:
        await reader.readexactly(n)
    return status


def loadgen(spec: dict[str, Any], out: Any) -> None:
    """Run one phase; send {lat_ms, statuses, errors, seconds, sent} back through `out`."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out.send(asyncio.run(_phase(spec)))


async def _phase(spec: dict[str, Any]) -> dict[str, Any]:
    port, seconds, conns = spec["port"], spec["seconds"], spec["connections"]
    rng = random.Random(spec.get("seed", 1))
    users = spec.get("users", [])
    items = spec.get("items", [])
    kind = spec["kind"]
    lat: list[float] = []
    statuses: dict[int, int] = {}
    errors = [0]
    events_sent = [0]
    counter = [0]
    not_sent = [0]
    grace = float(spec.get("grace", 5.0))

    def make() -> bytes:
        counter[0] += 1
        if kind == "ingest":
            n = spec["batch"]
            base = 1_719_700_000 + counter[0]
            evs = [
                {
                    "user": f"bench-{counter[0]}-{j % 500}",
                    "item": items[rng.randrange(len(items))],
                    "type": "view" if j % 4 else "purchase",
                    "timestamp": base + j * 1e-3,
                }
                for j in range(n)
            ]
            events_sent[0] += n
            return _request("/v1/events/batch", json.dumps({"events": evs}).encode(), CLIENT_KEY)
        return _request(
            "/v1/recommendations",
            json.dumps({"user": users[rng.randrange(len(users))], "k": 10}).encode(),
            CLIENT_KEY,
        )

    t_start = time.perf_counter()
    t_end = t_start + seconds
    rate = spec.get("rate")

    spacing = float(spec.get("connect_spacing_s", 0.0))

    async def worker(queue: asyncio.Queue | None, nth: int = 0) -> None:
        # connect_spacing_s: connections opened one by one, as a client pool grows, instead of
        # in one burst (a burst lands on whichever worker process accepts first)
        if spacing:
            await asyncio.sleep(nth * spacing)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**22)
        except OSError:
            errors[0] += 1
            return
        try:
            while True:
                if queue is None:
                    if time.perf_counter() >= t_end:
                        return
                    t0 = time.perf_counter()
                else:
                    t0 = await queue.get()
                    if t0 is None:
                        return
                    if time.perf_counter() > t_end + grace:
                        not_sent[0] += 1  # the server fell too far behind: bounded, reported
                        continue
                req = make()
                try:
                    st = await _roundtrip(reader, writer, req)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors[0] += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=2**22)
                    continue
                lat.append((time.perf_counter() - t0) * 1000)
                statuses[st] = statuses.get(st, 0) + 1
        finally:
            writer.close()

    if rate is None:
        await asyncio.gather(*(worker(None, i) for i in range(conns)))
    else:
        q: asyncio.Queue = asyncio.Queue()
        tasks = [asyncio.create_task(worker(q, i)) for i in range(conns)]
        interval = 1.0 / rate
        n = 0
        while True:
            due = t_start + n * interval
            if due >= t_end:
                break
            now = time.perf_counter()
            if due > now:
                await asyncio.sleep(due - now)
            q.put_nowait(due)  # latency counts from the scheduled time (no coordinated omission)
            n += 1
        for _ in tasks:
            q.put_nowait(None)
        await asyncio.gather(*tasks)
    secs = time.perf_counter() - t_start
    return {
        "lat_ms": lat,
        "statuses": statuses,
        "errors": errors[0],
        "seconds": secs,
        "events": events_sent[0],
        "not_sent": not_sent[0],
    }


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def run_phase(
    spec: dict[str, Any], during: Any = None, server_pid: int | None = None
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    cpu0 = cpu_seconds(server_pid)
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=loadgen, args=(spec, child))
    p.start()
    extra = during() if during else None
    res = parent.recv()
    p.join(timeout=spec["seconds"] + 60)
    lat = np.asarray(res["lat_ms"], dtype=np.float64)
    ok = int(res["statuses"].get(200, 0))
    total = int(sum(res["statuses"].values()))
    out = {
        "requests": total,
        "ok": ok,
        "failed": total - ok + int(res["errors"]),
        "not_sent": int(res["not_sent"]),
        "statuses": {str(k): v for k, v in sorted(res["statuses"].items())},
        "seconds": round(res["seconds"], 2),
        "req_per_s": round(total / res["seconds"], 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
        "max_ms": round(float(lat.max()), 2) if len(lat) else None,
    }
    cpu1 = cpu_seconds(server_pid)
    if cpu0 is not None and cpu1 is not None and total:
        # CPU the server spent per request: what one dedicated core could serve, whatever else runs
        # on the machine
        out["server_cpu_ms_per_request"] = round((cpu1 - cpu0) * 1000 / total, 3)
        out["server_cpu_share"] = round((cpu1 - cpu0) / res["seconds"], 2)
    if spec["kind"] == "ingest":
        out["events_per_s"] = round(res["events"] / res["seconds"], 0)
        out["batch"] = spec["batch"]
    if extra is not None:
        out["during"] = extra
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", choices=sorted(PARAMS), default="ease")
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="reuse/prepare this data directory (default: a temporary one)",
    )
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rate", type=float, default=TARGET_RPS)
    ap.add_argument("--batch", type=int, default=5000)
    args = ap.parse_args()
    from _common import machine, shared_data

    beauty = shared_data() / "amazon-beauty"
    tmp = None
    if args.data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="privrec-serve-load-")
        args.data_dir = Path(tmp.name) / "data"
    print(f"preparing {args.data_dir} ({args.model}) ...", flush=True)
    prep = prepare(args.data_dir, args.model, beauty)
    print(f"prepared: {prep}", flush=True)
    users = beauty_users(beauty)
    results: dict[str, Any] = {
        "benchmark": "serve_load",
        "model": args.model,
        "dataset": "amazon-beauty",
        "users": len(users),
        "machine": machine(),
        "load_avg_start": os.getloadavg(),
        "prepare": prep,
    }
    ctx = mp.get_context("spawn")
    for cache in (True, False):
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        server = ctx.Process(target=serve, args=(str(args.data_dir), port, 100_000 if cache else 0))
        t0 = time.time()
        server.start()
        try:
            ready = wait_ready(base, server)
            results.setdefault("server_start_s", round(time.time() - t0, 1))
            versions = _http("GET", base + "/v1/models")[1]["models"][args.model]["versions"]
            common = {
                "port": port,
                "connections": args.connections,
                "users": users,
                "seconds": args.seconds,
            }
            run_phase({**common, "kind": "recs", "seconds": 2.0})  # warm-up
            if cache:
                h0, m0 = metric(base, "privrec_cache_hits"), metric(base, "privrec_cache_misses")
                print("phase recs-closed", flush=True)
                results["recs_closed"] = run_phase(
                    {**common, "kind": "recs"}, server_pid=server.pid
                )
                print("phase recs-open", flush=True)
                results["recs_open"] = run_phase(
                    {**common, "kind": "recs", "rate": args.rate, "connections": 64},
                    server_pid=server.pid,
                )
                h1, m1 = metric(base, "privrec_cache_hits"), metric(base, "privrec_cache_misses")
                results["recs_cache_hit_ratio"] = round(
                    (h1 - h0) / max(1.0, (h1 - h0) + (m1 - m0)), 3
                )
                print("phase ingest", flush=True)
                items = [str(i) for i in range(1, 12102)]
                results["ingest"] = run_phase(
                    {
                        **common,
                        "kind": "ingest",
                        "connections": 2,
                        "items": items,
                        "batch": args.batch,
                    },
                    server_pid=server.pid,
                )
                print("phase hotswap", flush=True)

                def swap(base: str, versions: list[str]) -> list[dict[str, Any]]:
                    time.sleep(args.seconds * 0.2)
                    out = []
                    for v in (versions[-1], versions[0], versions[-1]):
                        t = time.perf_counter()
                        code, _ = _http(
                            "POST", f"{base}/v1/models/{args.model}/activate", {"version": v}
                        )
                        out.append(
                            {
                                "version": v,
                                "status": code,
                                "seconds": round(time.perf_counter() - t, 2),
                            }
                        )
                        time.sleep(args.seconds * 0.15)
                    return out

                results["hotswap"] = run_phase(
                    {**common, "kind": "recs", "seconds": args.seconds * 1.2},
                    during=functools.partial(swap, base, versions),
                    server_pid=server.pid,
                )
                results["ready"] = ready
            else:
                print("phase recs-nocache", flush=True)
                results["recs_open_nocache"] = run_phase(
                    {**common, "kind": "recs", "rate": args.rate, "connections": 64},
                    server_pid=server.pid,
                )
                print("phase recs-closed-nocache", flush=True)
                results["recs_closed_nocache"] = run_phase(
                    {**common, "kind": "recs"}, server_pid=server.pid
                )
        finally:
            server.terminate()
            server.join(timeout=30)
    results["load_avg_end"] = os.getloadavg()
    rc, ro, ing, hs = (
        results["recs_closed"],
        results["recs_open"],
        results["ingest"],
        results["hotswap"],
    )
    results["targets"] = {
        "recs_req_per_s>=1000": rc["req_per_s"] >= TARGET_RPS and rc["failed"] == 0,
        "recs_p99_ms<=25_at_1000_rps": (ro["p99_ms"] or 1e9) <= TARGET_P99_MS
        and ro["not_sent"] == 0
        and ro["failed"] == 0,
        "ingest_events_per_s>=20000": ing["events_per_s"] >= TARGET_EVENTS_PER_S
        and ing["failed"] == 0,
        "no_failed_request_during_hot_swap": hs["failed"] == 0
        and all(s["status"] == 200 for s in hs["during"]),
    }
    for name, r in results.items():
        if isinstance(r, dict) and "req_per_s" in r:
            print(
                f"{name:22} {r['req_per_s']:>8} req/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} "
                f"ms  failed {r['failed']}  server CPU {r.get('server_cpu_ms_per_request')} "
                f"ms/request ({r.get('server_cpu_share')} cores)",
                flush=True,
            )
    if tmp is not None:
        tmp.cleanup()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
