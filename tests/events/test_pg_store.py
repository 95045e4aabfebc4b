"""The PostgreSQL event store: migrations, monthly partitions, idempotent COPY ingest under a
killed writer and concurrent writers, transactional re-keying, and the service over it.

The behaviour both stores share is tested in test_store.py against each; these tests cover what
only the PostgreSQL store has. They skip when no PostgreSQL binaries are found (conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pandas as pd
import pytest
from pydantic import SecretStr

from privrec.core.errors import ConfigError, StoreError
from privrec.core.settings import Settings
from privrec.events import pg_local
from privrec.events.gate import Gate
from privrec.events.pg_store import PgEventStore
from privrec.events.store_api import EventStoreAPI, open_store
from privrec.privacy.pseudonym import Pseudonymiser
from privrec.service import RecSys

psycopg = pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg")

NOW = 1_700_000_000.0  # 2023-11-14
DAY = 86_400.0


def _records(n: int, users: int = 7, offset: int = 0) -> list[dict[str, object]]:
    return [
        {
            "user": f"shopper-{i % users}",
            "item": f"sku-{i % 13}",
            "type": "view" if i % 3 else "purchase",
            "timestamp": NOW - (i + offset) * 3 * DAY,
        }
        for i in range(n)
    ]


@pytest.fixture()
def gate(data_dir: Path) -> Gate:
    return Gate(Pseudonymiser.from_data_dir(data_dir))


def test_migrations_are_versioned_and_applied_once(pg_url: str, data_dir: Path) -> None:
    with PgEventStore.open(pg_url, data_dir=data_dir) as store:
        assert isinstance(store, EventStoreAPI)
    PgEventStore.open(pg_url, data_dir=data_dir).close()  # a second open applies nothing
    with psycopg.connect(pg_url, autocommit=True) as con:
        rows = con.execute("SELECT version, name FROM schema_version ORDER BY 1").fetchall()
        assert rows == [(1, "0001_init.sql"), (2, "0002_user_btree.sql")]
        con.execute("INSERT INTO schema_version (version, name) VALUES (9999, 'future.sql')")
    with pytest.raises(StoreError, match="schema version 9999 is newer"):
        PgEventStore.open(pg_url, data_dir=data_dir)


def test_events_land_in_month_partitions(pg_url: str, data_dir: Path, gate: Gate) -> None:
    acc = gate.process_records(_records(40)).accepted  # 120 days back from mid-November
    with PgEventStore.open(pg_url, data_dir=data_dir) as store:
        assert store.append(acc) == (40, 0)
        months = sorted({pd.Timestamp(t, unit="s").strftime("%Y%m") for t in acc["ts"]})
        assert len(months) >= 4
        assert store.partitions() == ["events_other", *(f"events_p{m}" for m in months)]
        with psycopg.connect(pg_url) as con:
            per = con.execute(
                "SELECT tableoid::regclass::text, count(*) FROM events GROUP BY 1"
            ).fetchall()
        assert sum(n for _, n in per) == 40 and "events_other" not in dict(per)
        # A batch that fails keeps no partition it created (and the store still creates it later)
        bad = gate.process_records(
            [{"user": "x", "item": "i", "type": "view", "timestamp": NOW + 400 * DAY}]
        ).accepted
        bad["item"] = bad["item"].astype(object)
        bad.loc[0, "item"] = None
        with pytest.raises(StoreError, match="item is missing"):
            store.append(bad)
        with psycopg.connect(pg_url, autocommit=True) as con:
            con.execute("CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS "
                        "$$ BEGIN RAISE EXCEPTION 'injected'; END $$")  # fmt: skip
            con.execute(
                "CREATE TRIGGER boom BEFORE INSERT ON event_ids "
                "FOR EACH ROW EXECUTE FUNCTION boom()"
            )
        later = gate.process_records(
            [{"user": "x", "item": "i", "type": "view", "timestamp": NOW + 400 * DAY}]
        ).accepted
        with pytest.raises(StoreError, match="rolled back"):
            store.append(later)
        assert "events_p202412" not in store.partitions() and store.count() == 40
        with psycopg.connect(pg_url, autocommit=True) as con:
            con.execute("DROP TRIGGER boom ON event_ids")
        assert store.append(later) == (1, 0)
        assert "events_p202412" in store.partitions()


def test_a_writer_killed_mid_copy_loses_nothing_and_a_replay_duplicates_nothing(
    pg_url: str, data_dir: Path, gate: Gate, tmp_path: Path
) -> None:
    first = gate.process_records(_records(30)).accepted
    batch = gate.process_records(_records(60, offset=30)).accepted
    with PgEventStore.open(pg_url, data_dir=data_dir) as store:
        store.append(first)
    batch.to_parquet(tmp_path / "batch.parquet")
    # The child COPYs the batch's ids into the ledger, sends half of its events' COPY data,
    # then is SIGKILLed (no cleanup runs).
    child = textwrap.dedent(
        f"""
        import os, signal
        import pandas as pd
        from privrec.events import pg_io, pg_store
        real = pg_io.copy_binary
        def half_then_die(cur, target, chunks):
            if not target.startswith("events "):
                return real(cur, target, chunks)
            data = b"".join(chunks)
            with cur.copy(f"COPY {{target}} FROM STDIN (FORMAT BINARY)") as cp:
                cp.write(data[: len(data) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
        pg_store.copy_binary = half_then_die
        store = pg_store.PgEventStore.open({pg_url!r}, data_dir={str(data_dir)!r})
        store.append(pd.read_parquet({str(tmp_path / "batch.parquet")!r}))
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    with PgEventStore.open(pg_url, data_dir=data_dir) as store:
        assert store.count() == 30  # nothing of the killed batch, nothing stored before lost
        assert store.append(batch) == (60, 0)  # the batch re-sent
        assert store.append(batch) == (0, 60)  # and once more: duplicates only
        assert store.append(pd.concat([first, batch])) == (0, 90)
        ev = store.events()
        assert len(ev) == 90 and ev["event_id"].is_unique


def test_a_batch_with_some_stored_ids_stores_only_the_new_ones_exactly(
    pg_url: str, data_dir: Path
) -> None:
    gate = Gate(Pseudonymiser.from_data_dir(data_dir), keep_query_text=True)
    recs = _records(50)
    for i, r in enumerate(recs):  # nulls, non-ASCII text, ratings and queries round-trip
        if i % 4 == 0:
            r.update(type="rating", rating=1 + i % 5)
        if i % 5 == 0:
            r.update(type="search", query=f"grüner tee ☕ {i}", session=f"s-{i % 3}")
        r["item"] = f"sku-é{i % 13}"
    acc = gate.process_records(recs).accepted
    with PgEventStore.open(pg_url, data_dir=data_dir) as store:
        assert store.append(acc.iloc[:20]) == (20, 0)
    # A fresh writer (no hint that duplicates come): its ledger COPY hits a stored id, the batch
    # rolls back to the savepoint and de-duplicates, in the same transaction.
    with PgEventStore.open(pg_url, data_dir=data_dir) as store:
        assert store.append(acc.iloc[10:]) == (30, 10)
        assert store.append(acc) == (0, 50)
        got = store.events().sort_values("event_id").reset_index(drop=True)
    want = acc.sort_values("event_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got[want.columns], want, check_dtype=False)
    assert got["rating"].isna().sum() == want["rating"].isna().sum() > 0
    assert got["query"].str.contains("☕").sum() == 10
    # A NUL character (the gate lets it through; PostgreSQL text cannot hold it): a clear
    # error naming the field, nothing of the batch stored.
    nul = gate.process_records([{"user": "z", "item": "a\x00b", "type": "view", "timestamp": NOW}])
    with PgEventStore.open(pg_url, data_dir=data_dir) as store:
        with pytest.raises(StoreError, match="item holds a NUL character"):
            store.append(
                pd.concat(
                    [gate.process_records(_records(2, offset=200)).accepted, nul.accepted],
                    ignore_index=True,
                )
            )
        assert store.count() == 50
    # An id repeated inside one frame: the first row with it is stored, once.
    more = gate.process_records(_records(3, offset=100)).accepted
    twice = pd.concat([more, more.assign(item="sku-other")], ignore_index=True).iloc[::-1]
    with PgEventStore.open(pg_url, data_dir=data_dir) as store:
        assert store.append(twice.reset_index(drop=True)) == (3, 3)
        ev = store.events()
        assert list(ev.loc[ev["event_id"].isin(more["event_id"]), "item"]) == ["sku-other"] * 3
        assert store.count() == 53


def test_concurrent_writers_store_each_event_once(pg_url: str, data_dir: Path, gate: Gate) -> None:
    acc = gate.process_records(_records(400)).accepted
    halves = [acc.iloc[:300], acc.iloc[100:]]  # 200 events in both
    stores = [PgEventStore.open(pg_url, data_dir=data_dir) for _ in halves]
    results: list[tuple[int, int]] = []
    threads = [
        threading.Thread(target=lambda s=s, h=h: results.append(s.append(h)))
        for s, h in zip(stores, halves, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(i for i, _ in results) == 400 and sum(d for _, d in results) == 200
    assert stores[0].count() == 400
    for s in stores:
        s.close()


def test_a_staged_rekey_rolled_back_changes_nothing(
    pg_url: str, data_dir: Path, gate: Gate
) -> None:
    p0 = gate.pseudonymiser
    with PgEventStore.open(pg_url, data_dir=data_dir) as store:
        store.bind_generation(p0.generation)
        store.append(gate.process_records(_records(50)).accepted)
        before = store.events()
        p1 = p0.rotate()
        staged = store.stage_rekey(p1)
        assert staged.count == 50
        # Another connection sees the old rows while the re-keying waits for its commit.
        other = PgEventStore.open(pg_url, data_dir=data_dir)
        staged.rollback()
        pd.testing.assert_frame_equal(store.events(), before)
        assert store.pseudonym_generation == 0
        assert store.rekey(p1) == 50
        after = other.events()
        assert after["user"].tolist() == [p1.rekey(u) for u in before["user"]]
        assert set(after["event_id"]).isdisjoint(before["event_id"])
        other.close()
        # the ledger of ids moved too: the old batch re-keyed by the gate is all duplicates
        assert store.append(Gate(p1).process_records(_records(50)).accepted) == (0, 50)


def test_the_service_over_postgres(pg_url: str, tmp_path: Path) -> None:
    d = tmp_path / "d"
    settings = Settings(data_dir=d, store_url=SecretStr(pg_url))
    frame = pd.DataFrame(_records(70))
    with RecSys(settings) as rs:
        assert isinstance(rs.store, PgEventStore)
        assert rs.ingest_frame(frame).accepted == 70
        for name in ("popularity", "ease"):
            rs.train(name)
        gone = rs.ctx.pseudonymise("shopper-3")
        receipt = rs.forget("shopper-3")
        assert receipt["events_deleted"] == 10
        # the erasure reaches the models trained from the PostgreSQL store
        assert set(receipt["models_updated_exactly"]) == {"popularity", "ease"}
        rs.wait_for_erasures()
        assert rs.store.events(user=gone).empty and rs.store.count() == 60
        assert rs.rotate_key() == 60
        assert rs.store.pseudonym_generation == 1
        report = rs.ingest_frame(frame[frame["user"] != "shopper-3"])
        assert (report.accepted, report.duplicates) == (0, 60)
    assert not (d / "events.duckdb").exists()  # the embedded store was never opened
    with RecSys(settings) as rs:  # after a restart
        assert rs.store.count() == 60 and rs.store.pseudonym_generation == 1


def test_a_bad_store_url_names_the_setting(data_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"store_url.*'mysql'"):
        open_store(data_dir, store_url="mysql://u:secret@h/db")
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL") as err:
        open_store(data_dir, store_url="postgresql://u:pw-9931@/db?host=/nonexistent-dir")
    assert "pw-9931" not in str(err.value)


def test_no_postgres_binaries_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_local, "pg_bindir", lambda: None)
    with pytest.raises(ConfigError, match=r"no server binaries.*install the Debian package"):
        pg_local.LocalPostgres()


def test_a_dropped_connection_fails_one_call_then_reconnects(
    pg_url: str, data_dir: Path, gate: Gate
) -> None:
    acc = gate.process_records(_records(20)).accepted
    with PgEventStore.open(pg_url, data_dir=data_dir) as store:
        store.append(acc.iloc[:10])
        with psycopg.connect(pg_url, autocommit=True) as admin:  # a server restart, in small
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                "current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(StoreError, match=r"rolled back|query failed"):
            store.append(acc)
        assert store.count() == 10  # a fresh session; nothing of the failed batch stored
        assert store.append(acc) == (10, 10)


def test_binary_copy_rows_round_trip_through_postgres(pg_url: str) -> None:
    """`pg_io.binary_rows`: every supported type, nulls, and more rows than one chunk holds."""
    import numpy as np
    import pyarrow as pa

    from privrec.events import pg_io

    n = pg_io._ROWS_PER_CHUNK + 7
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    text = pa.array([None if i % 5 == 0 else f"é{i}☕" for i in range(n)], pa.string())
    num = pa.array([None if i % 7 == 0 else i * 0.5 for i in range(n)], pa.float64())
    big = pa.array([None if i % 3 == 0 else 2**40 + i for i in range(n)], pa.int64())
    uid = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(ids)])
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("CREATE TABLE t (u uuid, s text, f double precision, b bigint)")
        with con.cursor() as cur:
            pg_io.copy_binary(cur, "t (u, s, f, b)", pg_io.binary_rows([uid, text, num, big]))
        rows = con.execute("SELECT u, s, f, b FROM t").fetchall()
        assert len(rows) == n
        got = {r[0].bytes: r[1:] for r in rows}
        for i in (0, 1, 5, 21, n - 1):
            assert got[ids[i].tobytes()] == (text[i].as_py(), num[i].as_py(), big[i].as_py())
        sql = "SELECT u FROM t ORDER BY u"
        with con.cursor() as cur:
            back = pg_io.copy_out_uuids(cur, sql)
    assert np.array_equal(back, ids[np.lexsort(ids.T[::-1])])
    with pytest.raises(TypeError, match="no encoding"):
        list(pg_io.binary_rows([pa.array([True])]))


def test_ingest_writes_batches_on_two_connections_and_stores_each_event_once(
    pg_url: str, data_dir: Path, gate: Gate, monkeypatch: pytest.MonkeyPatch
) -> None:
    from privrec.events.ingest import ingest_records

    opened: list[int] = []
    real = PgEventStore.extra_writers

    def counting(self: PgEventStore, n: int) -> list[PgEventStore]:
        out = real(self, n)
        opened.append(len(out))
        return out

    monkeypatch.setattr(PgEventStore, "extra_writers", counting)
    recs = _records(90)
    recs += recs[10:40]  # repeated in later batches (some of them in flight at the same time)
    with PgEventStore.open(pg_url, data_dir=data_dir) as store:
        report = ingest_records(recs, gate, store, batch_size=8)
        assert opened == [1]  # a second writer joined once a second batch came
        assert (report.read, report.accepted, report.duplicates) == (120, 90, 30)
        ev = store.events()
        assert len(ev) == 90 and ev["event_id"].is_unique
        one = ingest_records(recs[:5], gate, store, batch_size=8)  # one batch: no second writer
        assert opened == [1] and (one.accepted, one.duplicates) == (0, 5)
