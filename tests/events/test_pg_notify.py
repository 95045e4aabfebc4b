"""The PostgreSQL coordination primitives on a real cluster: NOTIFY/LISTEN, leader lock, counter."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from privrec.core.errors import StoreError


def _wait(check: Any, timeout: float = 10.0) -> None:
    t0 = time.time()
    while not check():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.01)


def test_a_message_reaches_every_listener_in_order_and_survives_a_dropped_connection(
    pg_url: str,
) -> None:
    import psycopg

    from privrec.events.pg_notify import PgListener, PgNotifier

    got_a: list[str] = []
    got_b: list[str] = []
    resyncs: list[int] = []
    a = PgListener(pg_url, got_a.append, on_resync=lambda: resyncs.append(1), poll_seconds=0.1)
    b = PgListener(pg_url, got_b.append, poll_seconds=0.1)
    a.start()
    b.start()
    sender = PgNotifier(pg_url)
    try:
        for i in range(5):
            sender.send(f"m{i}")
        _wait(lambda: len(got_a) == 5 and len(got_b) == 5)
        assert got_a == got_b == [f"m{i}" for i in range(5)]
        # the server drops both sessions (a restart, a failover): each reconnects and says so
        with psycopg.connect(pg_url, autocommit=True) as con:
            con.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
            )
        _wait(lambda: resyncs == [1] and a.reconnects == 1 and b.reconnects == 1)
        sender.send("after")
        _wait(lambda: "after" in got_a and "after" in got_b)
        with pytest.raises(ValueError, match="payload"):
            sender.send("x" * 8000)
    finally:
        a.stop()
        b.stop()
        sender.close()


def test_one_listener_leads_and_another_takes_over_when_it_stops(pg_url: str) -> None:
    from privrec.events.pg_notify import PgListener

    led: list[str] = []
    a = PgListener(pg_url, lambda p: None, lead_key=42, on_lead=lambda: led.append("a"),
                   poll_seconds=0.1)  # fmt: skip
    b = PgListener(pg_url, lambda p: None, lead_key=42, on_lead=lambda: led.append("b"),
                   poll_seconds=0.1)  # fmt: skip
    a.start()
    _wait(lambda: led == ["a"])
    b.start()
    time.sleep(0.5)
    assert led == ["a"] and a.leader and not b.leader
    a.stop()  # its connection closes: the lock is free
    _wait(lambda: led == ["a", "b"])
    assert b.leader
    b.stop()


def test_window_claims_of_concurrent_workers_never_exceed_the_limit(pg_url: str) -> None:
    from privrec.events.pg_notify import PgWindowCounter

    counters = [PgWindowCounter(pg_url) for _ in range(4)]
    granted = [0] * 4

    def claim(i: int) -> None:
        for _ in range(30):
            granted[i] += counters[i].claim("key-1", 7, 7, 100)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 100  # 4 x 30 claims of 7 asked for 840
    assert counters[0].used("key-1", 7) == 4 * 30 * 7
    assert counters[0].claim("key-1", 8, 7, 100) == 7  # a new window starts afresh
    assert counters[0].claim("key-2", 7, 7, 100) == 7  # and so does another key
    for c in counters:
        c.close()


def test_an_unreachable_database_is_a_store_error_naming_no_url() -> None:
    from privrec.events.pg_notify import PgNotifier

    url = "postgresql://nobody:secret-password@/nodb?host=/nonexistent-socket-dir"
    with pytest.raises(StoreError) as err:
        PgNotifier(url).send("x")
    assert "secret-password" not in str(err.value)
