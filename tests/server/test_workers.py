"""Several API workers over one PostgreSQL store: real server processes, a real database.

Two `privrec serve` processes (worker A and worker B, each on its own port so a test can address
one) share a PostgreSQL database (`pg_local`) and a data directory; their poll for activations
is set to two minutes, so only LISTEN/NOTIFY can explain a change reaching the other worker
within the bounds asserted here. `privrec serve --workers 2` runs two processes on one port.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from tests.server.browser import free_port

ADMIN = "admin-key-0123456789abcdef01"
CLIENT = "client-key-0123456789abcdef"
LIMITED = "client-key-limited-0123456789"  # only the rate-limit test uses it
KEYS = f"client:{CLIENT},client:{LIMITED},admin:{ADMIN}"
PER_MINUTE = 30  # the shared client limit: 0.5 requests/s over a 60 s window
BOUND_S = 3.0  # a change on one worker is seen by the other within this


def _call(url: str, method: str, path: str, body: Any = None, key: str = ADMIN) -> tuple[int, Any]:
    data = orjson.dumps(body) if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, orjson.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, {"retry_after": e.headers.get("Retry-After"), "body": e.read()}


def _wait_live(url: str, proc: subprocess.Popen[bytes], timeout: float = 600) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(f"the server exited: {out[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/health/ready", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    _stop(proc)
    out = proc.stdout.read().decode() if proc.stdout else ""
    raise AssertionError(f"the server did not become ready: {out[-2000:]}")


def _env(pg_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRIVREC_")}
    env.update(
        HF_HUB_OFFLINE="1",
        PRIVREC_STORE_URL=pg_url,
        PRIVREC_API_KEYS=KEYS,
        PRIVREC_REFRESH_SECONDS="120",  # the poll cannot explain what these tests see
        PRIVREC_RATE_CLIENT=str(PER_MINUTE / 60),
        PRIVREC_RATE_WINDOW_SECONDS="60",
        PRIVREC_SCHEDULER_ENABLED="false",
    )
    return env


def _serve(data: Path, env: dict[str, str], *extra: str) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    exe = Path(sys.executable).parent / "privrec"
    proc = subprocess.Popen(
        [str(exe), "serve", "--data-dir", str(data), "--port", str(port), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return f"http://127.0.0.1:{port}", proc


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the server and any worker processes it started
        proc.wait(10)


@pytest.fixture(scope="module")
def shop(pg_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A small shop over a fresh PostgreSQL database: itemknn trained twice, popularity once."""
    from privrec.core.settings import Settings
    from privrec.data.synthetic import generate_shop
    from privrec.service import RecSys

    db = pg_server.create_db()
    url = pg_server.url(db)
    data = tmp_path_factory.mktemp("workers") / "data"
    events, catalogue = generate_shop(n_items=200, n_users=120, seed=11)
    with RecSys(Settings(data_dir=data, store_url=url)) as rs:
        rs.add_items(catalogue)
        rs.ingest_frame(events)
        rs.train("popularity")
        rs.train("itemknn", params={"k": 40, "shrink": 5.0})
        rs.train("itemknn", params={"k": 20, "shrink": 5.0})
        rs.set_default_model("itemknn")
    try:
        yield data, url
    finally:
        pg_server.drop_db(db)


@pytest.fixture(scope="module")
def workers(shop: tuple[Path, str]) -> Iterator[tuple[str, str]]:
    """Worker A and worker B: two server processes over the same database and directory."""
    data, url = shop
    env = _env(url)
    a_url, a = _serve(data, env)
    b_url, b = _serve(data, env)
    try:
        _wait_live(a_url, a)
        _wait_live(b_url, b)
        yield a_url, b_url
    finally:
        _stop(a)
        _stop(b)


def _served(url: str, model: str) -> str | None:
    status, doc = _call(url, "GET", "/v1/models")
    assert status == 200, doc
    served: str | None = doc["models"][model]["served"] if "models" in doc else doc[model]["served"]
    return served


def _until(check: Any, bound: float, show: Any = None) -> float:
    """Seconds until `check()` is true; fails past `bound` (with `show()` in the message)."""
    t0 = time.perf_counter()
    while not check():
        seen = show() if show is not None else ""
        assert time.perf_counter() - t0 < bound, f"not seen within {bound} s {seen}"
        time.sleep(0.02)
    return time.perf_counter() - t0


def test_activation_on_worker_a_is_served_by_worker_b_within_the_bound(
    workers: tuple[str, str],
) -> None:
    a, b = workers
    _call(b, "POST", "/v1/recommendations", {"user": "shopper-00003", "k": 5})  # B loads itemknn
    status, doc = _call(a, "GET", "/v1/models")
    assert status == 200
    info = doc["models"]["itemknn"] if "models" in doc else doc["itemknn"]
    older = next(v for v in info["versions"] if v != info["active"])
    assert _served(b, "itemknn") == info["active"]
    status, out = _call(a, "POST", "/v1/models/itemknn/activate", {"version": older})
    assert status == 200, out
    took = _until(lambda: _served(b, "itemknn") == older, BOUND_S)
    assert took < BOUND_S
    status, rec = _call(b, "POST", "/v1/recommendations", {"user": "shopper-00003", "k": 5})
    assert status == 200 and rec["version"] == older
    # and back, through a rollback on B this time: A follows
    _call(a, "POST", "/v1/recommendations", {"user": "shopper-00003", "k": 5})
    status, out = _call(b, "POST", "/v1/models/itemknn/rollback", {"reason": "test"})
    assert status == 200, out
    _until(lambda: _served(a, "itemknn") == out["active"], BOUND_S)


def test_an_event_on_worker_a_invalidates_the_shoppers_cached_list_on_worker_b(
    workers: tuple[str, str],
) -> None:
    a, b = workers
    body = {"user": "shopper-00007", "k": 10, "model": "itemknn"}
    status, first = _call(b, "POST", "/v1/recommendations", body)
    assert status == 200 and first["personalized"]
    top = first["items"][0]["item"]
    status, again = _call(b, "POST", "/v1/recommendations", body)  # now from B's list cache
    assert [r["item"] for r in again["items"]] == [r["item"] for r in first["items"]]
    event = {"user": "shopper-00007", "item": top, "type": "purchase", "timestamp": time.time()}
    status, rep = _call(a, "POST", "/v1/events", event)
    assert status == 200 and rep["accepted"] == 1, rep

    def gone() -> bool:
        _, doc = _call(b, "POST", "/v1/recommendations", body)
        return top not in [r["item"] for r in doc["items"]]  # bought: no longer recommended

    _until(gone, BOUND_S)


def test_a_consent_change_on_worker_a_reaches_worker_b(workers: tuple[str, str]) -> None:
    a, b = workers
    body = {"user": "shopper-00011", "k": 5}
    status, doc = _call(b, "POST", "/v1/recommendations", body)
    assert status == 200 and doc["personalized"] and doc["consent"] == "personalized"
    status, tok = _call(a, "POST", "/v1/admin/shopper-tokens", {"user": "shopper-00011"})
    assert status == 200, tok
    req = urllib.request.Request(
        a + "/v1/me/consent", data=orjson.dumps({"level": "anonymous"}), method="PUT"
    )
    for k, v in {
        "Authorization": f"Bearer {CLIENT}",
        "X-Shopper-Token": tok["token"],
        "Content-Type": "application/json",
    }.items():
        req.add_header(k, v)
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200

    def anonymous() -> bool:
        _, got = _call(b, "POST", "/v1/recommendations", body)
        return bool(got["consent"] == "anonymous" and not got["personalized"])

    _until(anonymous, BOUND_S)


def test_an_erasure_on_worker_a_reaches_worker_b(workers: tuple[str, str]) -> None:
    a, b = workers
    body = {"user": "shopper-00013", "k": 5}
    status, doc = _call(b, "POST", "/v1/recommendations", body)
    assert status == 200 and doc["personalized"]
    status, receipt = _call(a, "POST", "/v1/admin/users/erase", {"user": "shopper-00013"})
    assert status == 200 and receipt["events_deleted"] > 0, receipt

    def forgotten() -> bool:
        _, got = _call(b, "POST", "/v1/recommendations", body)
        return not got["personalized"]

    _until(forgotten, BOUND_S)


def test_a_catalogue_change_on_worker_a_reaches_worker_b(workers: tuple[str, str]) -> None:
    a, b = workers
    status, doc = _call(b, "POST", "/v1/recommendations", {"user": "shopper-00017", "k": 3})
    item = doc["items"][0]["item"]
    status, out = _call(a, "PATCH", f"/v1/items/{item}", {"title": "Renamed on worker A"})
    assert status == 200, out

    def renamed() -> bool:
        _, got = _call(b, "GET", f"/v1/items/{item}")
        return bool(got.get("title") == "Renamed on worker A")

    _until(renamed, BOUND_S)


def test_the_rate_limit_holds_across_two_workers(workers: tuple[str, str]) -> None:
    a, b = workers
    if time.time() % 60 > 20:  # keep the burst inside one aligned minute, even on a busy machine
        time.sleep(61 - time.time() % 60)
    t0 = time.time()
    codes: dict[str, list[int]] = {a: [], b: []}
    retry = []
    for i in range(3 * PER_MINUTE):
        url = a if i % 2 == 0 else b
        status, doc = _call(url, "POST", "/v1/recommendations", {"user": "x", "k": 3}, LIMITED)
        codes[url].append(status)
        if status == 429:
            retry.append(int(doc["retry_after"]))
    assert int(t0 // 60) == int(time.time() // 60), "the burst crossed a minute: rerun"
    ok = sum(c == 200 for cs in codes.values() for c in cs)
    assert ok == PER_MINUTE  # not one more across both workers (each alone would allow 30)
    assert all(c in (200, 429) for cs in codes.values() for c in cs)
    assert 200 in codes[a] and 200 in codes[b]
    assert retry and all(1 <= r <= 60 for r in retry)
    # another key's limit is its own
    status, _ = _call(a, "POST", "/v1/recommendations", {"user": "x", "k": 3}, CLIENT)
    assert status == 200


def _coordination(url: str) -> tuple[int, int]:
    """(sessions listening on the channel, holders of the scheduler's leader lock)."""
    import psycopg

    from privrec.service.coordination import LEAD_LOCK

    with psycopg.connect(url, autocommit=True) as con:
        listening = con.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND "
            "datname = current_database() AND "
            "(query LIKE 'LISTEN privrec%' OR query LIKE 'SELECT pg_try_advisory_lock%')"
        ).fetchone()
        leaders = con.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
            "AND classid = %s AND objid = %s",
            (LEAD_LOCK >> 32, LEAD_LOCK & 0xFFFFFFFF),
        ).fetchone()
    return int(listening[0]), int(leaders[0])


def test_serve_with_two_workers_serves_and_replaces_a_killed_worker(
    shop: tuple[Path, str],
) -> None:
    data, url = shop
    before, _ = _coordination(url)
    env = _env(url)
    env["PRIVREC_SCHEDULER_ENABLED"] = "true"  # `serve --workers` runs it in one elected worker
    base, proc = _serve(data, env, "--workers", "2")
    try:
        _wait_live(base, proc)

        def workers() -> list[int]:
            out = subprocess.run(
                ["pgrep", "-f", "-P", str(proc.pid), "spawn_main"],
                capture_output=True,
                text=True,
                check=False,
            )
            return [int(x) for x in out.stdout.split()]

        # a loaded machine: the second worker may take minutes to import and start
        def joined() -> bool:
            return _coordination(url) == (before + 2, 1)

        _until(lambda: len(workers()) == 2, 180)
        # both workers listen for the others' changes; exactly one runs the scheduler
        _until(joined, 300, lambda: (before, _coordination(url)))
        kids = workers()
        status, doc = _call(base, "POST", "/v1/recommendations", {"user": "shopper-00002"})
        assert status == 200 and doc["items"]
        os.kill(kids[0], signal.SIGKILL)
        # the other worker goes on answering at once; the supervisor starts a new one, which
        # joins the coordination; the scheduler still runs in exactly one worker
        status, doc = _call(base, "POST", "/v1/recommendations", {"user": "shopper-00002"})
        assert status == 200
        _until(lambda: len(set(workers()) - {kids[0]}) == 2, 180)
        _until(joined, 300, lambda: (before, _coordination(url)))
    finally:
        _stop(proc)


def test_serve_refuses_several_workers_on_the_embedded_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from privrec.cli import app

    monkeypatch.delenv("PRIVREC_STORE_URL", raising=False)
    res = CliRunner().invoke(app, ["serve", "--data-dir", str(tmp_path / "d"), "--workers", "2"])
    flat = res.output.replace("\n", "")
    assert res.exit_code == 2
    assert "--workers" in flat and "PostgreSQL" in flat and "one writer" in flat


def test_the_shared_limiter_serves_from_leases_and_refuses_past_the_limit(pg_url: str) -> None:
    from privrec.events.pg_notify import PgWindowCounter
    from privrec.server.security import Principal
    from privrec.server.workers import SharedRateLimiter

    who = Principal("client", "key-abc")
    # a one-hour window: the test cannot cross into the next one
    one = SharedRateLimiter({"client": 640 / 3600}, PgWindowCounter(pg_url), window_seconds=3600)
    two = SharedRateLimiter({"client": 640 / 3600}, PgWindowCounter(pg_url), window_seconds=3600)
    assert one.limit("client") == 640
    allowed = sum(lim.take(who) == 0.0 for _ in range(500) for lim in (one, two))
    assert allowed == 640
    assert one.claims + two.claims <= 640 // 10 + 4  # leases of 10: far fewer round trips
    assert 0 < one.take(who) <= 3600  # refused: the seconds until the window ends
    one.counter.close()
    two.counter.close()
