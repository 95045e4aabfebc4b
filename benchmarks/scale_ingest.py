"""Ingest into PostgreSQL through the privacy gate (COPY), and a writer killed mid-batch.

Phases, on one seeded synthetic shop log (benchmarks/ingest.py's generator, CSV):
  gate_only    the CSV read into frames, then only the gate (validate, pseudonymise, event ids)
  copy_only    the gated frames appended to an empty PostgreSQL store (binary COPY of the
               sorted ids into the event-id ledger and of the rows into the month partitions)
  end_to_end   `ingest_file` from the CSV into an empty PostgreSQL store (read, gate and append,
               the append on a writer thread), then the same file again (every row a duplicate)
  killed       a child process ingesting the file is SIGKILLed while one of its batches is in
               flight (its COPY or INSERT running); the file is re-sent by a fresh process.
               Counted before and after: nothing committed is lost, nothing is stored twice, and
               the stored ids are exactly the gate's ids of the file.

PostgreSQL is a throwaway local cluster (`privrec.events.pg_local`, unix socket, fsync on) on
this machine, sharing its cores with the client; CPU seconds of the client and of the server
processes are reported beside the wall-clock rates.

Usage: python benchmarks/scale_ingest.py [--events N] [--batch-size N] [--kill-batch-size N]
       [--phases gate_only,copy_only,end_to_end,killed]
The last line of the output is the figures as JSON (also written to results/scale_ingest.json).
`measure(...)` returns the same figures to a caller (benchmarks/scale.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from ingest import generate_csv  # benchmarks/ingest.py: the same seeded shop log

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "scale_ingest.json"
TARGET_EVENTS_PER_S = 100_000


def client_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def server_cpu(postmaster: int) -> float:
    """CPU seconds of the server: the postmaster, its reaped children and its live ones."""
    tick = os.sysconf("SC_CLK_TCK")

    def stat(pid: int) -> list[str]:
        text = Path(f"/proc/{pid}/stat").read_text()
        return text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on

    total = sum(int(x) for x in stat(postmaster)[11:15])  # utime stime cutime cstime
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                f = stat(int(d.name))
            except (OSError, ValueError):
                continue
            if int(f[1]) == postmaster:
                total += int(f[11]) + int(f[12])
    return total / tick


def rate(n: int, seconds: float) -> int:
    return round(n / seconds) if seconds > 0 else 0


def gate_only(csv: Path, data_dir: Path, batch: int) -> tuple[dict, list[pd.DataFrame]]:
    """Only the gate, on frames already read; returns the figures and the gated frames."""
    from privrec.events.gate import Gate
    from privrec.privacy.pseudonym import Pseudonymiser

    frames = list(pd.read_csv(csv, dtype=str, keep_default_na=False, chunksize=batch))
    for f in frames:  # empty optional fields are missing, as the CSV reader of ingest_file has it
        for c in ("rating", "query", "session"):
            f[c] = f[c].where(f[c] != "", None)
    gate = Gate(Pseudonymiser.from_data_dir(data_dir))
    accepted, rejected = [], 0
    c0, t0 = client_cpu(), time.perf_counter()
    for f in frames:
        res = gate.process_frame(f)
        accepted.append(res.accepted)
        rejected += len(res.rejects)
    secs, cpu = time.perf_counter() - t0, client_cpu() - c0
    n = sum(len(f) for f in frames)
    return {
        "rows": n,
        "accepted": sum(len(a) for a in accepted),
        "rejected": rejected,
        "seconds": round(secs, 3),
        "events_per_s": rate(n, secs),
        "client_cpu_s": round(cpu, 2),
    }, accepted


def copy_only(url: str, data_dir: Path, frames: list[pd.DataFrame], postmaster: int) -> dict:
    from privrec.events.pg_store import PgEventStore

    with PgEventStore.open(url, data_dir=data_dir) as store:
        c0, s0, t0 = client_cpu(), server_cpu(postmaster), time.perf_counter()
        ins = dup = 0
        for f in frames:
            i, d = store.append(f)
            ins, dup = ins + i, dup + d
        secs = time.perf_counter() - t0
        out = {
            "rows": sum(len(f) for f in frames),
            "inserted": ins,
            "duplicates": dup,
            "seconds": round(secs, 3),
            "events_per_s": rate(ins + dup, secs),
            "client_cpu_s": round(client_cpu() - c0, 2),
            "server_cpu_s": round(server_cpu(postmaster) - s0, 2),
            "partitions": len(store.partitions()),
            "stored": store.count(),
        }
    return out


def end_to_end(url: str, data_dir: Path, csv: Path, batch: int, postmaster: int) -> dict:
    from privrec.events.gate import Gate
    from privrec.events.ingest import ingest_file
    from privrec.events.pg_store import PgEventStore
    from privrec.privacy.pseudonym import Pseudonymiser

    gate = Gate(Pseudonymiser.from_data_dir(data_dir))
    out: dict = {}
    with PgEventStore.open(url, data_dir=data_dir) as store:
        for name in ("first", "again"):
            c0, s0 = client_cpu(), server_cpu(postmaster)
            r = ingest_file(
                csv, gate, store, rejects_path=data_dir / f"rejects-{name}.jsonl", batch_size=batch
            )
            out[name] = {
                "read": r.read,
                "accepted": r.accepted,
                "duplicates": r.duplicates,
                "rejected": r.rejected,
                "seconds": round(r.seconds, 3),
                "events_per_s": rate(r.read, r.seconds),
                "client_cpu_s": round(client_cpu() - c0, 2),
                "server_cpu_s": round(server_cpu(postmaster) - s0, 2),
            }
        out["stored"] = store.count()
    return out


def ingest_child(url: str, data_dir: str, csv: str, batch: int) -> None:
    """The killed writer (and the re-sender): ingest the whole file, print the report."""
    from privrec.events.gate import Gate
    from privrec.events.ingest import ingest_file
    from privrec.events.pg_store import PgEventStore
    from privrec.privacy.pseudonym import Pseudonymiser

    gate = Gate(Pseudonymiser.from_data_dir(Path(data_dir)))
    with PgEventStore.open(url, data_dir=Path(data_dir)) as store:
        r = ingest_file(
            csv, gate, store, rejects_path=Path(data_dir) / "rejects-kill.jsonl", batch_size=batch
        )
    print(json.dumps({"accepted": r.accepted, "duplicates": r.duplicates, "read": r.read}))


def killed(url: str, data_dir: Path, csv: Path, batch: int, reference: set[str]) -> dict:
    """SIGKILL a writer while a batch is in its transaction; re-send; count before and after."""
    import psycopg

    from privrec.events.pg_store import PgEventStore

    PgEventStore.open(url, data_dir=data_dir).close()  # schema in place before the child starts
    cmd = [sys.executable, __file__, "--child", url, str(data_dir), str(csv), str(batch)]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    committed_at_kill, in_tx, query = 0, False, ""
    with psycopg.connect(url, autocommit=True) as mon:
        t0 = time.perf_counter()
        while child.poll() is None and time.perf_counter() - t0 < 300:
            committed = mon.execute("SELECT count(*) FROM event_ids").fetchone()[0]
            row = mon.execute(
                "SELECT state, left(query, 40) FROM pg_stat_activity WHERE datname = "
                "current_database() AND pid <> pg_backend_pid() AND state = 'active' "
                "AND (query LIKE 'COPY event%' OR query LIKE 'COPY _ids%' "
                "OR query LIKE 'COPY (INSERT%')"
            ).fetchone()
            # Kill once a batch has committed and the next one is being written (one of its
            # COPYs running inside the batch's transaction).
            if committed and row is not None:
                child.send_signal(signal.SIGKILL)
                committed_at_kill, in_tx, query = int(committed), True, str(row[1])
                break
            time.sleep(0.005)
        child.wait()
        time.sleep(0.5)  # the server notices the dropped connection and aborts its transaction
        after_kill = mon.execute("SELECT count(*) FROM events").fetchone()[0]
        ids_after_kill = {r[0] for r in mon.execute("SELECT event_id FROM events").fetchall()}
        t1 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        resend_s = time.perf_counter() - t1
        if res.returncode:
            raise SystemExit(f"re-send failed:\n{res.stderr[-3000:]}")
        resent = json.loads(res.stdout.strip().splitlines()[-1])
        final = mon.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone()
        ids = {r[0] for r in mon.execute("SELECT event_id FROM events").fetchall()}
    return {
        "batch_size": batch,
        "killed_with_a_transaction_open": in_tx,
        "query_at_kill": query,
        "child_returncode": child.returncode,
        "events_committed_before_kill": committed_at_kill,
        "events_after_kill": int(after_kill),
        "events_after_kill_all_from_the_file": ids_after_kill <= reference,
        # the batch in flight at the kill was not committed (a race of a few ms could commit it)
        "in_flight_batch_committed": int(after_kill) > committed_at_kill,
        "resend": resent | {"seconds": round(resend_s, 2)},
        "events_after_resend": int(final[0]),
        "distinct_event_ids_after_resend": int(final[1]),
        "expected_events": len(reference),
        "no_loss": ids == reference,
        "no_duplicate": int(final[0]) == int(final[1]) == len(reference),
        "resend_counted": resent["accepted"] + int(after_kill) == len(reference),
    }


def _derived(phase: dict) -> None:
    """Rates per CPU second, the server's share of the CPU, and how many cores were busy."""
    cpu = phase["client_cpu_s"] + phase.get("server_cpu_s", 0.0)
    n = phase.get("rows", phase.get("read", 0))
    # Wall-clock rates depend on what else runs; events per CPU second (client + server) do not.
    phase["events_per_cpu_s"] = rate(n, cpu)
    if "server_cpu_s" in phase and cpu > 0:
        phase["server_cpu_share"] = round(phase["server_cpu_s"] / cpu, 3)
    if phase.get("seconds"):
        # below 2 on 2 cores: other jobs had the rest (or a thread waited on disk or the GIL)
        phase["cores_busy"] = round(cpu / phase["seconds"], 2)


def measure(
    events: int = 1_000_000,
    batch_size: int = 200_000,
    kill_batch_size: int = 50_000,
    *,
    phases: tuple[str, ...] = ("gate_only", "copy_only", "end_to_end", "killed"),
    verbose: bool = False,
) -> dict:
    """The ingest figures (importable: `benchmarks/scale.py` calls it), on a throwaway cluster.

    Args:
        events: rows of the seeded shop log (about 0.1% of them malformed).
        batch_size: rows per batch (one transaction each) in every phase but `killed`.
        kill_batch_size: rows per batch of the killed writer.
        phases: which of gate_only, copy_only, end_to_end, killed to run.
        verbose: print each phase's figures as it ends.

    Returns:
        The figures: per phase wall seconds, events/s, client and server CPU seconds, the
        server's share of the CPU, cores busy, the 1-minute load average when the phase began;
        `meets_target_end_to_end` and `killed_mid_batch_ok` when those phases ran.
    """
    from privrec.events.pg_local import LocalPostgres

    out: dict = {
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "cpus": os.cpu_count(),
        "events": events,
        "batch_size": batch_size,
        "load_avg_1m_before": round(os.getloadavg()[0], 2),
    }

    def note(name: str) -> None:
        if verbose:
            print(name, out[name], flush=True)

    def load() -> float:
        return round(os.getloadavg()[0], 2)

    with (
        tempfile.TemporaryDirectory(prefix="privrec-scale-") as tmp,
        LocalPostgres(fsync=True) as pg,
    ):
        root = Path(tmp)
        csv = root / "events.csv"
        t0 = time.perf_counter()
        generate_csv(csv, events)
        out["generate_s"] = round(time.perf_counter() - t0, 2)
        data_dir = root / "data"  # one pseudonym key for every phase: the same event ids
        data_dir.mkdir(mode=0o700)
        pm = pg.postmaster_pid
        out["server_version"] = pg.bindir.parent.name

        la = load()
        gate, frames = gate_only(csv, data_dir, batch_size)
        reference = {e for f in frames for e in f["event_id"]}
        if "gate_only" in phases:
            out["gate_only"] = gate | {"load_avg_1m": la}
            note("gate_only")
        if "copy_only" in phases:
            la = load()
            out["copy_only"] = copy_only(pg.url(pg.create_db()), data_dir, frames, pm)
            out["copy_only"]["load_avg_1m"] = la
            note("copy_only")
        del frames
        if "end_to_end" in phases:
            la = load()
            out["end_to_end"] = end_to_end(pg.url(pg.create_db()), data_dir, csv, batch_size, pm)
            out["end_to_end"]["load_avg_1m"] = la
            note("end_to_end")
        if "killed" in phases:
            out["killed"] = killed(
                pg.url(pg.create_db()), data_dir, csv, kill_batch_size, reference
            )
            note("killed")
    out["load_avg_1m_after"] = load()
    for name in ("gate_only", "copy_only"):
        if name in out:
            _derived(out[name])
    if "end_to_end" in out:
        for phase in out["end_to_end"].values():
            if isinstance(phase, dict):
                _derived(phase)
        e2e = out["end_to_end"]["first"]["events_per_s"]
        out["meets_target_end_to_end"] = e2e >= TARGET_EVENTS_PER_S
    if "killed" in out:
        k = out["killed"]
        out["killed_mid_batch_ok"] = bool(
            k["killed_with_a_transaction_open"] and k["no_loss"] and k["no_duplicate"]
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=200_000)
    ap.add_argument("--kill-batch-size", type=int, default=50_000)
    ap.add_argument("--phases", default="gate_only,copy_only,end_to_end,killed", help="comma list")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        url, d, csv, batch = args.child
        ingest_child(url, d, csv, int(batch))
        return
    out = measure(
        args.events,
        args.batch_size,
        args.kill_batch_size,
        phases=tuple(p for p in args.phases.split(",") if p),
        verbose=True,
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
