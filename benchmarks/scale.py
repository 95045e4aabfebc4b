"""Issue 15's acceptance in one script: API workers over PostgreSQL, ingest, Ray statistics.

Parts (each bounded in time; PostgreSQL is a throwaway local cluster, fsync on, on this machine):
  workers      `privrec serve --workers N` for N = 1 and 2 over one PostgreSQL store holding
               Amazon Beauty (22,363 shoppers, 12,101 items, through the gate), serving EASE with
               the list cache OFF (every request scores, filters and explains): a closed loop of
               C connections for S seconds. Throughput, latency, and CPU ms per request of the
               server processes (the supervisor and its workers) and of PostgreSQL. The load
               generator is another process on the same 2 cores: its CPU is reported too.
               Each worker count runs `--repeats` times, alternated (medians reported), and the
               CPU per request gives the rate 2 dedicated cores would allow (`cpu_bound_req_per_s`).
               `--model hybrid` serves the best model instead (serve_hybrid.py's hybrid with
               candidate scoring, N = 100); `--rate R` adds, before each closed loop, an open
               loop at R requests/s over 64 connections (the hybrid's acceptance: 500 req/s,
               p99 <= 50 ms, latency from each request's scheduled time).
  kill         two workers under the same closed loop; one worker is SIGKILLed mid-run. Failed
               requests are split into those in flight at the kill (sent before it, on the dead
               worker's connections) and those sent after it; the client reuses a keep-alive
               connection only when the server has not closed it (as HTTP client pools do).
               Reported: the longest gap without an answer, when throughput is back to 90% of the
               pre-kill rate, and when the supervisor has started the replacement worker.
  coordination the costs of the cross-worker machinery on this PostgreSQL: NOTIFY -> LISTEN
               delivery latency between two processes' connections, one rate-limit claim (an
               UPSERT) and a request's rate-limit check with leases (`SharedRateLimiter`) next to
               the in-process bucket.
  ingest       benchmarks/scale_ingest.py's own measurement (`measure`, imported): `end_to_end`
               ingest of its seeded CSV through the gate into an empty PostgreSQL store, and
               `killed` (a writer SIGKILLed mid-batch; counted before and after).
  stats        benchmarks/scale_stats.py's `ml1m` (imported): the statistics job on MovieLens-1M in
               one process vs 2 Ray workers, exactly equal or not; the projection to 10 million
               shoppers is quoted from its last full run (results/scale_stats.json).

Usage: nice python benchmarks/scale.py [--seconds 8] [--connections 16] [--repeats 2]
       [--ingest-events N] [--skip ingest,stats] [--model ease|hybrid] [--rate 500]
       [--workers 1,2] [--out results/scale.json] [--connect-spacing-ms 0]
The hybrid's acceptance run: scale.py --model hybrid --rate 500
    --skip kill,coordination,ingest,stats --out benchmarks/results/scale_hybrid.json
The last line of the output is the figures as JSON (also written to --out).
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from _common import machine, shared_data  # noqa: E402
from serve_hybrid import (  # noqa: E402
    CANDIDATES,
    TARGET_P99_MS,
    TARGET_RPS,
    hybrid_params,
    meets_target,
)
from serve_load import (  # noqa: E402
    ADMIN_KEY,
    CLIENT_KEY,
    PARAMS,
    _free_port,
    _request,
    _roundtrip,
    beauty_users,
    cpu_seconds,
    run_phase,
)

RESULTS = REPO / "benchmarks" / "results" / "scale.json"
OPEN_KEYS = ("req_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_request", "load_avg_1m")


def model_params(model: str) -> dict[str, Any]:
    """The trained model's settings: serve_load's, and for the hybrid serve_hybrid's (with
    candidate scoring, N = 100, and the shared MiniLM vector cache when there is one)."""
    if model == "hybrid":
        return hybrid_params(CANDIDATES)
    return dict(PARAMS[model])


def prepare(data_dir: Path, model: str, beauty: Path) -> dict[str, Any]:
    """Beauty's catalogue and purchases through the gate into the store; `model` trained.

    (serve_load.prepare also saves a second version for its hot swap, which this does not need.)
    """
    import pandas as pd

    from privrec.core.settings import Settings
    from privrec.data.loaders import SYNTHETIC_BASE_TS, load_amazon_s3rec
    from privrec.service import RecSys

    users, items, pos = [], [], []
    with open(next(beauty.glob("*.txt")), encoding="utf-8") as fh:
        for ln in fh:
            p = ln.split()
            users += [p[0]] * (len(p) - 1)
            items += p[1:]
            pos += range(len(p) - 1)
    frame = pd.DataFrame(
        {"user": users, "item": items, "type": "purchase",
         "timestamp": SYNTHETIC_BASE_TS + np.asarray(pos)}
    )  # fmt: skip
    with RecSys(Settings(data_dir=data_dir)) as rs:
        t0 = time.perf_counter()
        ds = load_amazon_s3rec(beauty, gate=rs.ctx.gate())
        rs.add_items(ds.item_meta[["item", "title", "category", "text"]])
        report = rs.ingest_frame(frame).to_dict()
        ingest_s = time.perf_counter() - t0
        res = rs.train(model, params=model_params(model))
        rs.set_default_model(model)
    return {
        "events": report.get("accepted"),
        "ingest_s": round(ingest_s, 1),
        "train_s": round(res.train_seconds, 1),
    }


# ---- the server ---------------------------------------------------------------------------------
def start_server(
    data_dir: Path, url: str, workers: int, proxy: str | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """`privrec serve --workers N` as a real command over the PostgreSQL store (with `proxy`
    "nginx": N single-process `privrec serve` behind nginx, see `start_proxied`)."""
    if proxy == "nginx":
        return start_proxied(data_dir, url, workers)
    env = _server_env(url)
    port = _free_port()
    exe = Path(sys.executable).parent / "privrec"
    proc = subprocess.Popen(
        [
            str(exe),
            "serve",
            "--data-dir",
            str(data_dir),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    _wait_ready(base, proc, lambda: len(workers_of(proc.pid)) >= (workers if workers > 1 else 0))
    return base, proc


def start_proxied(data_dir: Path, url: str, n: int) -> tuple[str, subprocess.Popen[bytes]]:
    """N single-process `privrec serve` over the PostgreSQL store behind nginx (one worker,
    `least_conn`, keep-alive to the upstreams): each request goes to the server with the fewest
    requests in flight, instead of staying with the process that accepted its connection. One
    process group (a shell that waits on them), so its CPU is counted as the server's."""
    import shlex
    import shutil

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists():
        raise SystemExit(
            "--proxy nginx: nginx is not installed (Debian: apt-get install nginx-light)"
        )
    ports = [_free_port() for _ in range(n)]
    front = _free_port()
    tmp = Path(tempfile.mkdtemp(prefix="privrec-nginx-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    servers = " ".join(f"server 127.0.0.1:{p};" for p in ports)
    temp_paths = " ".join(
        f"{k}_temp_path {tmp / k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp / "nginx.conf").write_text(
        f"""worker_processes 1;
error_log {tmp / "error.log"} warn;
pid {tmp / "nginx.pid"};
events {{ worker_connections 4096; }}
http {{
  access_log off;
  {temp_paths}
  upstream privrec {{ least_conn; {servers} keepalive 64; }}
  server {{
    listen 127.0.0.1:{front};
    keepalive_requests 1000000;
    location / {{
      proxy_pass http://privrec;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_buffering off;
    }}
  }}
}}
"""
    )
    exe = shlex.quote(str(Path(sys.executable).parent / "privrec"))
    cmds = [f"{exe} serve --data-dir {shlex.quote(str(data_dir))} --port {p} &" for p in ports]
    cmds.append(f"{nginx} -p {tmp} -c {tmp / 'nginx.conf'} -g 'daemon off;' &")
    proc = subprocess.Popen(
        ["bash", "-c", " ".join(cmds) + " wait"],
        env=_server_env(url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    for p in ports:
        _wait_ready(f"http://127.0.0.1:{p}", proc, lambda: True)
    base = f"http://127.0.0.1:{front}"
    _wait_ready(base, proc, lambda: True)
    return base, proc


def _wait_ready(base: str, proc: subprocess.Popen[bytes], extra: Any) -> None:
    import urllib.request

    t0 = time.time()
    while time.time() - t0 < 900:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode})")
        try:
            with urllib.request.urlopen(base + "/health/ready", timeout=5) as r:
                if r.status == 200 and extra():
                    settle(proc.pid)
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not become ready")


def _server_env(url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRIVREC_")}
    env.update(
        HF_HUB_OFFLINE="1",
        PRIVREC_STORE_URL=url,
        PRIVREC_API_KEYS=f"client:{CLIENT_KEY},admin:{ADMIN_KEY}",
        PRIVREC_RATE_CLIENT="1e9",  # the shared limiter still runs: one claim per 1/64 of this
        PRIVREC_RATE_ADMIN="1e9",
        PRIVREC_CACHE_ENTRIES="0",  # the list cache off: every request computes
        PRIVREC_PAGES="off",
        PRIVREC_SCHEDULER_ENABLED="false",
    )
    return env


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def workers_of(pid: int) -> list[int]:
    """The worker processes of a `privrec serve --workers N` supervisor."""
    out = []
    for c in children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes():
                out.append(c)
        except OSError:
            continue
    return out


def settle(pid: int, timeout: float = 300) -> None:
    """Wait until every process of the server is idle (each worker has loaded its model)."""
    t0 = time.time()
    last = {p: cpu_seconds(p) or 0.0 for p in [pid, *descendants(pid)]}
    while time.time() - t0 < timeout:
        time.sleep(1.0)
        now = {p: cpu_seconds(p) or 0.0 for p in [pid, *descendants(pid)]}
        if all(now[p] - last.get(p, 0.0) < 0.1 for p in now):
            return
        last = now


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(x) for x in out.stdout.split()]


def _reaped_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (nginx's workers are its master's children)."""
    out, todo = [], children(pid)
    while todo:
        c = todo.pop()
        out.append(c)
        todo += children(c)
    return out


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and every live process below it."""
    return sum(cpu_seconds(p) or 0.0 for p in [pid, *descendants(pid)])


# ---- one vs two workers -------------------------------------------------------------------------
def throughput(
    data_dir: Path, url: str, workers: int, users: list[str], args: Any, postmaster: int
) -> dict[str, Any]:
    from scale_ingest import server_cpu

    t0 = time.time()
    base, proc = start_server(data_dir, url, workers, args.proxy)
    started = round(time.time() - t0, 1)
    try:
        port = int(base.rsplit(":", 1)[1])
        common = {
            "port": port,
            "connections": args.connections,
            "users": users,
            "kind": "recs",
            "connect_spacing_s": args.connect_spacing_ms / 1000,
        }
        run_phase({**common, "seconds": 3.0})  # warm-up: every worker loads its model
        opened: dict[str, Any] | None = None
        if args.rate:
            # the acceptance's phase: an open loop at the target rate (latency from each
            # request's scheduled time, so a queue shows), before the closed loop
            s0, g0 = tree_cpu(proc.pid), _reaped_cpu()
            w0 = {p: cpu_seconds(p) or 0.0 for p in children(proc.pid)}
            opened = run_phase(
                {**common, "connections": 64, "rate": args.rate, "seconds": args.seconds}
            )
            n = max(1, opened["requests"])
            opened.update(
                server_cpu_ms_per_request=round((tree_cpu(proc.pid) - s0) * 1000 / n, 3),
                loadgen_cpu_ms_per_request=round((_reaped_cpu() - g0) * 1000 / n, 3),
                load_avg_1m=round(os.getloadavg()[0], 2),
                # how the work split over the worker processes (cores used by each)
                worker_cpu_shares=sorted(
                    round(((cpu_seconds(p) or 0.0) - c) / opened["seconds"], 2)
                    for p, c in w0.items()
                ),
                meets_target=meets_target(opened, args.rate),
            )
        s0, p0, g0 = tree_cpu(proc.pid), server_cpu(postmaster), _reaped_cpu()
        load0 = os.getloadavg()[0]
        res = run_phase({**common, "seconds": args.seconds})
        s1, p1, g1 = tree_cpu(proc.pid), server_cpu(postmaster), _reaped_cpu()
        n = max(1, res["requests"])
        res.update(
            workers=workers,
            processes=1 + len(descendants(proc.pid)) if workers > 1 or args.proxy else 1,
            proxy=args.proxy,
            server_start_s=started,
            server_cpu_ms_per_request=round((s1 - s0) * 1000 / n, 3),
            server_cpu_share=round((s1 - s0) / res["seconds"], 2),
            postgres_cpu_ms_per_request=round((p1 - p0) * 1000 / n, 3),
            load_avg_1m=round(load0, 2),
            # the load generator (a child process of this script, reaped after the phase)
            loadgen_cpu_ms_per_request=round((g1 - g0) * 1000 / n, 3),
        )
        if opened is not None:
            res["open_loop"] = opened
        return res
    finally:
        stop_server(proc)


# ---- a worker killed under load -----------------------------------------------------------------
def killgen(spec: dict[str, Any], out: Any) -> None:
    """Closed loop on `connections` keep-alive connections; every request's wall times."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out.send(asyncio.run(_kill_phase(spec)))


async def _kill_phase(spec: dict[str, Any]) -> dict[str, Any]:
    port, users = spec["port"], spec["users"]
    rng = random.Random(3)
    t_end = time.time() + spec["seconds"]
    done: list[tuple[float, float]] = []  # (sent, answered) of each 200
    failed: list[tuple[float, str]] = []  # (sent, why)
    reconnects = [0]

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while True:
            try:
                return await asyncio.open_connection("127.0.0.1", port, limit=2**22)
            except OSError:
                failed.append((time.time(), "connect"))
                await asyncio.sleep(0.01)

    async def worker() -> None:
        reader, writer = await connect()
        while time.time() < t_end:
            if reader.at_eof() or writer.is_closing():
                # the server closed this keep-alive connection (its worker died): a client pool
                # opens a new one instead of sending on it
                writer.close()
                reader, writer = await connect()
                reconnects[0] += 1
            body = json.dumps({"user": users[rng.randrange(len(users))], "k": 10}).encode()
            t0 = time.time()
            try:
                status = await _roundtrip(
                    reader, writer, _request("/v1/recommendations", body, CLIENT_KEY)
                )
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                failed.append((t0, type(exc).__name__))
                writer.close()
                reader, writer = await connect()
                continue
            if status == 200:
                done.append((t0, time.time()))
            else:
                failed.append((t0, f"http {status}"))
        writer.close()

    await asyncio.gather(*(worker() for _ in range(spec["connections"])))
    return {"done": done, "failed": failed, "reconnects": reconnects[0]}


def kill_under_load(data_dir: Path, url: str, users: list[str], args: Any) -> dict[str, Any]:
    base, proc = start_server(data_dir, url, 2)
    try:
        port = int(base.rsplit(":", 1)[1])
        run_phase({"port": port, "connections": args.connections, "users": users, "kind": "recs",
                   "seconds": 3.0})  # fmt: skip
        seconds = max(10.0, args.seconds + 4)
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe(duplex=False)
        gen = ctx.Process(
            target=killgen,
            args=({"port": port, "users": users, "connections": args.connections,
                   "seconds": seconds}, child),
        )  # fmt: skip
        t_start = time.time()
        gen.start()
        time.sleep(seconds * 0.4)
        victims = workers_of(proc.pid)
        victim = victims[0]
        t_kill = time.time()
        os.kill(victim, signal.SIGKILL)
        t_new = None
        while time.time() < t_start + seconds + 5 and t_new is None:
            now = set(workers_of(proc.pid))
            if now - set(victims):
                t_new = time.time()
            time.sleep(0.02)
        res = parent.recv()
        gen.join(30)
    finally:
        stop_server(proc)
    done = np.asarray(res["done"], dtype=np.float64).reshape(-1, 2)
    answered = np.sort(done[:, 1])
    pre = answered[(answered > t_start + 1.0) & (answered < t_kill)]
    pre_rate = len(pre) / max(1e-9, t_kill - (t_start + 1.0))
    after = answered[answered >= t_kill]
    gaps = np.diff(np.concatenate([[t_kill], after])) if len(after) else np.asarray([np.inf])
    back = None  # first 200 ms window after the kill at >= 90% of the pre-kill rate
    for w0 in np.arange(t_kill, answered[-1] if len(answered) else t_kill, 0.05):
        n = np.count_nonzero((after >= w0) & (after < w0 + 0.2))
        if n / 0.2 >= 0.9 * pre_rate:
            back = round(float(w0 + 0.2 - t_kill), 3)
            break
    in_flight = [f for f in res["failed"] if f[0] <= t_kill]
    beyond = [f for f in res["failed"] if f[0] > t_kill]
    return {
        "connections": args.connections,
        "seconds": round(seconds, 1),
        "requests_ok": len(done),
        "failed_in_flight_at_kill": len(in_flight),
        "failed_beyond_in_flight": len(beyond),
        "failure_kinds": sorted({f[1] for f in res["failed"]}),
        "reconnects_on_closed_connections": res["reconnects"],
        "pre_kill_req_per_s": round(pre_rate, 1),
        "after_kill_req_per_s": round(len(after) / max(1e-9, answered[-1] - t_kill), 1)
        if len(after)
        else 0.0,
        "longest_gap_after_kill_ms": round(float(gaps.max()) * 1000, 1),
        "throughput_back_to_90pct_s": back,
        "replacement_worker_started_s": round(t_new - t_kill, 2) if t_new else None,
        "no_failure_beyond_in_flight": not beyond,
    }


# ---- the cost of coordination -------------------------------------------------------------------
def _listen_child(url: str, ready: Any, out: Any, n: int) -> None:
    from privrec.events.pg_notify import PgListener

    got: list[float] = []
    lis = PgListener(url, lambda p: got.append(time.time() - float(p)), poll_seconds=0.2)
    lis.start()
    ready.set()
    t0 = time.time()
    while len(got) < n and time.time() - t0 < 60:
        time.sleep(0.01)
    lis.stop()
    out.send(got)


def coordination_costs(url: str) -> dict[str, Any]:
    from privrec.events.pg_notify import PgNotifier, PgWindowCounter, wall_window
    from privrec.server.security import Principal, RateLimiter
    from privrec.server.workers import SharedRateLimiter

    n = 300
    ctx = mp.get_context("spawn")
    ready, (parent, child) = ctx.Event(), ctx.Pipe(duplex=False)
    p = ctx.Process(target=_listen_child, args=(url, ready, child, n))
    p.start()
    ready.wait(60)
    notifier = PgNotifier(url)
    for _ in range(n):
        notifier.send(repr(time.time()))
        time.sleep(0.005)
    lat = np.asarray(parent.recv()) * 1000
    p.join(10)
    notifier.close()
    counter = PgWindowCounter(url)
    counter.claim("warm", 0, 1, 10)
    k = 2000
    t0 = time.perf_counter()
    for i in range(k):
        counter.claim("bench", wall_window(1.0)[0] + 10_000 + i, 1, 10**9)
    claim_us = (time.perf_counter() - t0) / k * 1e6
    who = Principal("client", "key-bench")
    shared = SharedRateLimiter({"client": 5000.0}, counter, window_seconds=1.0)
    local = RateLimiter({"client": 1e9})
    m = 20_000
    out = {"notify_to_listen_ms": {
        "p50": round(float(np.percentile(lat, 50)), 2),
        "p99": round(float(np.percentile(lat, 99)), 2),
        "max": round(float(lat.max()), 2),
        "messages": len(lat),
    }}  # fmt: skip
    for name, lim in (("shared_lease_limit_5000_per_s", shared), ("in_process", local)):
        t0 = time.perf_counter()
        for _ in range(m):
            lim.take(who)
        out[f"rate_check_us_{name}"] = round((time.perf_counter() - t0) / m * 1e6, 2)
    out["rate_claim_round_trip_us"] = round(claim_us, 1)
    out["shared_claims_per_request"] = round(shared.claims / m, 4)
    counter.close()
    return out


# ---- the other engineers' parts, imported ------------------------------------------------------
def ingest_part(events: int) -> dict[str, Any]:
    """scale_ingest's own measurement (its throwaway cluster): end to end, and a killed writer."""
    from scale_ingest import measure

    return measure(events, phases=("end_to_end", "killed"))


def stats_part() -> dict[str, Any]:
    import ray

    from scale_stats import RESULTS as STATS_RESULTS
    from scale_stats import ml1m

    tracemalloc.start()  # scale_stats.measured reads the traced numpy peak
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out: dict[str, Any] = {"ml1m": ml1m(ray)}
    finally:
        ray.shutdown()
        tracemalloc.stop()
    if STATS_RESULTS.exists():
        prev = json.loads(STATS_RESULTS.read_text())
        out["projection_from_results_scale_stats_json"] = prev.get("projection")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=8.0, help="each throughput phase")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--model", default="ease", choices=["ease", "itemknn", "hybrid"])
    ap.add_argument(
        "--rate",
        type=float,
        default=None,
        help=f"also an open loop at this many requests/s per worker count (the hybrid's "
        f"acceptance: {TARGET_RPS:g}, p99 <= {TARGET_P99_MS:g} ms)",
    )
    ap.add_argument(
        "--workers",
        default="1,2",
        help="worker counts to run, comma separated (alternated --repeats times)",
    )
    ap.add_argument("--ingest-events", type=int, default=200_000)
    ap.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    ap.add_argument(
        "--proxy",
        choices=["nginx"],
        default=None,
        help="workers: N single-process servers behind nginx (least_conn) instead of "
        "`serve --workers N` (nginx from Debian's nginx-light)",
    )
    ap.add_argument(
        "--connect-spacing-ms",
        type=float,
        default=0.0,
        help="open the load generator's connections this far apart (0: all at once)",
    )
    ap.add_argument("--repeats", type=int, default=2, help="runs of each worker count")
    ap.add_argument(
        "--skip", default="", help="comma list of: workers,kill,coordination,ingest,stats"
    )
    args = ap.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    from privrec.events.pg_local import LocalPostgres

    beauty = shared_data() / "amazon-beauty"
    out: dict[str, Any] = {
        "benchmark": "scale",
        "machine": machine(),
        "load_avg_1m_before": round(os.getloadavg()[0], 2),
        "model": args.model,
        "dataset": "amazon-beauty",
        "list_cache": "off",
    }
    with (
        tempfile.TemporaryDirectory(prefix="privrec-scale-") as tmp,
        LocalPostgres(fsync=True, settings={"max_connections": "100"}) as pg,
    ):
        root = Path(tmp)
        url = pg.url(pg.create_db())
        out["postgres"] = pg.bindir.parent.name
        if not {"workers", "kill"} <= skip:
            data_dir = root / "data"
            os.environ["PRIVREC_STORE_URL"] = url  # prepare(): the gate into PostgreSQL
            t0 = time.perf_counter()
            out["prepare"] = prepare(data_dir, args.model, beauty)
            out["prepare_s"] = round(time.perf_counter() - t0, 1)
            del os.environ["PRIVREC_STORE_URL"]
            print("prepared", out["prepare"], flush=True)
            users = beauty_users(beauty)
            if "workers" not in skip:
                counts = [int(x) for x in args.workers.split(",") if x.strip()]
                runs: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
                for _ in range(args.repeats):  # alternated: the machine's load drifts
                    for n in counts:
                        runs[n].append(throughput(data_dir, url, n, users, args, pg.postmaster_pid))
                        print(f"workers_{n}", json.dumps(runs[n][-1]), flush=True)
                for n, rs in runs.items():
                    out[f"workers_{n}"] = {
                        f"{k}_median": float(np.median([r[k] for r in rs]))
                        for k in ("req_per_s", "p50_ms", "p99_ms", "server_cpu_ms_per_request",
                                  "server_cpu_share", "postgres_cpu_ms_per_request",
                                  "loadgen_cpu_ms_per_request", "load_avg_1m")
                    } | {"failed": sum(r["failed"] for r in rs), "runs": rs}  # fmt: skip
                    opened = [r["open_loop"] for r in rs if "open_loop" in r]
                    if opened:
                        out[f"workers_{n}"]["open_loop"] = {
                            "rate": args.rate,
                            **{
                                f"{k}_median": float(np.median([o[k] for o in opened]))
                                for k in OPEN_KEYS
                            },
                            "failed": sum(o["failed"] for o in opened),
                            "not_sent": sum(o["not_sent"] for o in opened),
                            "runs_meeting_target": sum(o["meets_target"] for o in opened),
                            "runs": len(opened),
                        }
            if "workers" not in skip and {1, 2} <= set(runs):
                one, two = out["workers_1"], out["workers_2"]
                out["speedup_2_vs_1"] = round(
                    two["req_per_s_median"] / max(1e-9, one["req_per_s_median"]), 2
                )
                # what the CPU per request allows on 2 dedicated cores: one worker uses at most
                # one core; two workers and the load generator share both
                c1, c2 = (
                    one["server_cpu_ms_per_request_median"],
                    two["server_cpu_ms_per_request_median"],
                )
                gen = two["loadgen_cpu_ms_per_request_median"]
                out["cpu_bound_req_per_s"] = {
                    "one_worker": round(min(1000 / c1, 2000 / (c1 + gen)), 0),
                    "two_workers": round(2000 / (c2 + gen), 0),
                }
            if "kill" not in skip:
                out["kill_one_of_two"] = kill_under_load(data_dir, url, users, args)
                print("kill", json.dumps(out["kill_one_of_two"]), flush=True)
        if "coordination" not in skip:
            out["coordination"] = coordination_costs(url)
            print("coordination", json.dumps(out["coordination"]), flush=True)
    if "ingest" not in skip:
        out["ingest"] = ingest_part(args.ingest_events)
        print("ingest", json.dumps(out["ingest"]), flush=True)
    if "stats" not in skip:
        out["stats"] = stats_part()
        print("stats", json.dumps(out["stats"]["ml1m"]), flush=True)
    out["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
