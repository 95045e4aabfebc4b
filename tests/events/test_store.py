"""The event store: nothing readable on disk, erasure, retention, re-keying, atomicity.

Tests taking `open_event_store` run against both implementations (embedded DuckDB and
PostgreSQL, see conftest.py); the others test the encrypted DuckDB file itself.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from privrec.core.errors import StoreError, ValidationError
from privrec.events import store as store_mod
from privrec.events import store_file
from privrec.events.gate import Gate
from privrec.events.ingest import ingest_file, ingest_records
from privrec.events.store import EventStore
from privrec.events.store_api import EventStoreAPI
from privrec.privacy.pseudonym import Pseudonymiser

RAW_USERS = ("alice.secret-7781@example.com", "bob.private-5520@example.org")
ITEM = "SKU-PLAINTEXT-ITEM-424242"
QUERY = "unmistakable query text 9931"
DAY = 86_400.0
NOW = 1_700_000_000.0


def _records(n: int = 40) -> list[dict]:
    out = []
    for i in range(n):
        user = RAW_USERS[i % 2]
        out.append(
            {
                "user": user,
                "item": ITEM if i % 5 == 0 else f"sku-{i}",
                "type": "view",
                "timestamp": NOW - i * DAY,
                "session": f"{user}/s{i // 4}",
            }
        )
    out.append(
        {"user": RAW_USERS[0], "item": ITEM, "type": "search", "timestamp": NOW, "query": QUERY}
    )
    out.append(
        {
            "user": RAW_USERS[1],
            "item": "sku-r",
            "type": "rating",
            "rating": 4,
            "timestamp": NOW - 400 * DAY,
        }
    )
    return out


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def _assert_no_plaintext(root: Path, needles: list[str]) -> None:
    files = _files(root)
    assert files
    for f in files:
        data = f.read_bytes()
        for needle in needles:
            assert needle.encode() not in data, f"{needle!r} readable in {f.relative_to(root)}"


def _plain_duckdb_holds(tmp: Path, frame: pd.DataFrame, needles: list[str]) -> None:
    """Control: the same rows in an unencrypted DuckDB file are readable: the grep can see them."""
    path = tmp / "control.duckdb"
    con = duckdb.connect(str(path))
    con.register("f", frame)
    con.execute("CREATE TABLE events AS SELECT * FROM f")
    con.close()
    data = path.read_bytes()
    assert all(n.encode() in data for n in needles)


@pytest.fixture()
def gate(data_dir: Path) -> Gate:
    return Gate(Pseudonymiser.from_data_dir(data_dir), keep_query_text=True)


def test_nothing_readable_in_the_data_directory(data_dir: Path, gate: Gate, tmp_path: Path) -> None:
    src = tmp_path / "events.jsonl"
    src.write_text(
        "".join(json.dumps(r) + "\n" for r in _records())
        + json.dumps({"user": RAW_USERS[0], "type": "bogus"})
        + "\n"
    )
    with EventStore.open(data_dir) as store:
        report = ingest_file(src, gate, store, rejects_path=data_dir / "rejects" / "r.jsonl")
        assert report.accepted == 42 and report.rejected == 1
        stored = store.events()
        assert (
            stored["query"] == QUERY
        ).sum() == 1  # the query text is stored (keep_query_text)...
        # ...and while the store is open (write-ahead log present), no file shows a raw value.
        _assert_no_plaintext(data_dir, [*RAW_USERS, ITEM, QUERY])
    _assert_no_plaintext(data_dir, [*RAW_USERS, ITEM, QUERY, "bob.private"])
    _plain_duckdb_holds(tmp_path, stored, [ITEM, QUERY])
    assert not (data_dir / "events.duckdb.wal").exists()  # checkpointed on close
    assert stat.S_IMODE((data_dir / "keys").stat().st_mode) == 0o700
    for key in (data_dir / "keys").iterdir():
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert {k.name for k in (data_dir / "keys").iterdir()} == {"pseudonym.keys", "store.key"}
    assert stat.S_IMODE((data_dir / "rejects" / "r.jsonl").stat().st_mode) == 0o600


def test_spilled_temp_files_are_encrypted(data_dir: Path, tmp_path: Path) -> None:
    marker = "SPILLED-PLAINTEXT-MARKER"
    big = (
        f"CREATE TEMP TABLE big AS SELECT '{marker}-' || i::VARCHAR || md5(i::VARCHAR) AS x "
        "FROM range(600000) t(i)"
    )
    with EventStore.open(data_dir, threads=1) as store:
        con = store._conn()
        con.execute("SET memory_limit = '40MB'")
        con.execute(big)  # larger than memory: written to temp_directory (inside data_dir)
        assert _files(data_dir / "tmp"), "nothing was spilled; the test would prove nothing"
        _assert_no_plaintext(data_dir / "tmp", [marker])
    # Control: the same spill without temp-file encryption is readable.
    con = duckdb.connect(config={"memory_limit": "40MB", "threads": 1})
    con.execute(f"SET temp_directory = '{tmp_path / 'plain-tmp'}'")
    con.execute(big)
    assert any(marker.encode() in f.read_bytes() for f in _files(tmp_path / "plain-tmp"))
    con.close()


def test_key_handling(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with EventStore.open(data_dir) as store:
        assert store.meta()["format_version"] == str(store_mod.STORE_FORMAT_VERSION)
    with pytest.raises(StoreError, match="wrong store key"):
        EventStore.open(data_dir, key="ab" * 32)
    monkeypatch.setenv("PRIVREC_STORE_KEY", "cd" * 32)
    with pytest.raises(StoreError, match="wrong store key"):
        EventStore.open(data_dir)
    other = data_dir.parent / "other"
    EventStore.open(other).close()  # the environment's key creates no key file
    assert not (other / "keys" / "store.key").exists()
    EventStore.open(other, key=bytes.fromhex("cd" * 32)).close()
    with pytest.raises(StoreError, match="not a hex string"):
        EventStore.open(other, key="not hex")


def test_store_in_use_and_missing_extension(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with EventStore.open(data_dir) as store:
        with pytest.raises(StoreError, match="open in another"):
            EventStore.open(data_dir)
        assert store.count() == 0
    with pytest.raises(StoreError, match="closed"):
        store.count()
    monkeypatch.setattr(store_file.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(StoreError, match="duckdb-ext-httpfs"):
        EventStore.open(data_dir)


def test_erase_user_leaves_no_row(
    open_event_store: Callable[[], EventStoreAPI], data_dir: Path, gate: Gate
) -> None:
    p = gate.pseudonymiser
    alice, bob = (p.pseudonymise(u) for u in RAW_USERS)
    with open_event_store() as store:
        ingest_records(_records(), gate, store)
        assert set(store.users()) == {alice, bob}
        n_bob = len(store.events(user=bob))
        before = os.stat(store.path).st_ino if isinstance(store, EventStore) else None
        assert store.erase_user(alice) == 21
        if isinstance(store, EventStore):
            assert os.stat(store.path).st_ino != before  # compacted into a fresh file
        assert (
            store.events(user=alice).empty
            and store.users() == [bob]
            and len(store.events(user=bob)) == n_bob
        )
        assert store.erase_user(alice) == 0
        with pytest.raises(StoreError, match="32 hex"):
            store.erase_user(RAW_USERS[1])
    with open_event_store() as store:  # still gone after reopening
        assert store.events(user=alice).empty and store.count() == n_bob


def test_retention_all_types_and_per_type(
    open_event_store: Callable[[], EventStoreAPI], data_dir: Path, gate: Gate
) -> None:
    with open_event_store() as store:
        ingest_records(_records(), gate, store)
        assert store.retention({"rating": 365}, now=NOW) == 1
        assert (store.events()["type"] == "rating").sum() == 0
        assert store.retention({"view": None, "search": 1}, now=NOW) == 0
        assert store.retention(30, now=NOW) == 9  # views of days 31..39
        ev = store.events()
        assert ev["ts"].min() >= NOW - 30 * DAY and len(ev) == 32
        assert ev["ts"].is_monotonic_increasing
        with pytest.raises(StoreError, match="not an event type"):
            store.retention({"clicks": 3})
        with pytest.raises(StoreError, match="days"):
            store.retention(-1)


def test_append_is_idempotent_and_atomic(
    open_event_store: Callable[[], EventStoreAPI],
    data_dir: Path,
    gate: Gate,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    acc = gate.process_records(_records()).accepted
    with open_event_store() as store:
        assert store.append(acc) == (42, 0)
        assert store.append(acc) == (0, 42)
        assert store.append(pd.concat([acc.iloc[:2], acc.iloc[:2]])) == (0, 4)
        before = store.events()
        bad = acc.copy()
        bad.loc[0, "user"] = RAW_USERS[0]
        with pytest.raises(StoreError, match="not pseudonyms"):
            store.append(bad)
        with pytest.raises(StoreError, match="lacks column"):
            store.append(acc.drop(columns=["ts"]))
        # A failure inside the transaction (a NULL in a NOT NULL column, past the frame checks)
        # rolls everything back: nothing of the batch is stored, nothing stored is lost.
        fresh = gate.process_records(
            [{**r, "item": r["item"] + "-new"} for r in _records()]
        ).accepted
        real = store_mod._events_table

        def sneaky(frame: pd.DataFrame):
            t = real(frame)
            col = t["item"].to_pylist()
            col[-1] = None
            return t.set_column(
                t.schema.get_field_index("item"),
                "item",
                store_mod.pa.array(col, store_mod.pa.string()),
            )

        monkeypatch.setattr(store_mod, "_events_table", sneaky)
        with pytest.raises(StoreError, match="rolled back"):
            store.append(fresh)
        pd.testing.assert_frame_equal(store.events(), before)


def test_rotate_key_rekeys_everything(
    open_event_store: Callable[[], EventStoreAPI], data_dir: Path, tmp_path: Path
) -> None:
    p0 = Pseudonymiser.from_data_dir(data_dir)
    src = tmp_path / "events.csv"
    pd.DataFrame(_records()).to_csv(src, index=False)
    with open_event_store() as store:
        ingest_file(src, Gate(p0), store)
        old = store.events()
        p1 = p0.rotate()
        with pytest.raises(StoreError, match="generation 0"):
            ingest_file(src, Gate(p1), store)  # mixing generations would split users in two
        assert store.rekey(p1) == 42
        new = store.events()
        assert store.pseudonym_generation == 1
        assert set(new["user"]) == {p1.pseudonymise(u) for u in RAW_USERS}
        assert not set(new["user"]) & set(old["user"]) and not set(new["event_id"]) & set(
            old["event_id"]
        )
        assert new["user"].tolist() == [p1.rekey(u) for u in old["user"]]
        assert new["session"].tolist() == [
            None if s is None else p1.rekey(s) for s in old["session"]
        ]
        # Re-ingesting the old file after rotation: only duplicates.
        again = ingest_file(src, Gate(p1), store)
        assert (again.accepted, again.duplicates) == (0, 42)
        # A new event of the same raw user lands on the re-keyed pseudonym.
        ingest_records(
            [{"user": RAW_USERS[0], "item": "sku-new", "type": "cart", "timestamp": NOW}],
            Gate(p1),
            store,
        )
        assert len(store.events(user=p1.pseudonymise(RAW_USERS[0]))) == 22
        with pytest.raises(StoreError, match="one rotation at a time"):
            store.rekey(p1)


def test_items_catalogue_and_parquet_export(
    open_event_store: Callable[[], EventStoreAPI], data_dir: Path, gate: Gate, tmp_path: Path
) -> None:
    with open_event_store() as store:
        assert (
            store.upsert_items(
                pd.DataFrame({"item": ["a", "b"], "title": ["Tea", "Cup"], "price": [3.5, None]})
            )
            == 2
        )
        assert (
            store.upsert_items(
                pd.DataFrame(
                    {"item": ["b", "c"], "title": ["Mug", None], "in_stock": [True, False]}
                )
            )
            == 2
        )
        items = store.items()
        assert items["item"].tolist() == ["a", "b", "c"] and items["title"].tolist() == [
            "Tea",
            "Mug",
            None,
        ]
        assert bool(items["in_stock"].iloc[2]) is False and np.isnan(items["price"].iloc[1])
        with pytest.raises(StoreError, match="unknown column"):
            store.upsert_items(pd.DataFrame({"item": ["x"], "colour": ["red"]}))
        ingest_records(_records(), gate, store)
        out = tmp_path / "export" / "events.parquet"
        assert store.export_parquet(out) == 42
        exported = pd.read_parquet(out)
        assert len(exported) == 42 and set(exported["user"]) == set(store.users())


@pytest.mark.parametrize("rule", [30, {"rating": 365}, {"view": 35, "purchase": None}])
def test_expired_lists_exactly_what_retention_deletes(
    open_event_store: Callable[[], EventStoreAPI],
    data_dir: Path,
    gate: Gate,
    rule: int | dict[str, int | None],
) -> None:
    with open_event_store() as store:
        ingest_records(_records(), gate, store)
        before = set(store.events()["event_id"])
        listed = set(store.expired(rule, now=NOW)["event_id"])
        assert store.retention(rule, now=NOW) == len(listed)
        assert before - set(store.events()["event_id"]) == listed


def test_daily_counts_is_a_per_day_aggregate(
    open_event_store: Callable[[], EventStoreAPI], data_dir: Path, gate: Gate
) -> None:
    with open_event_store() as store:
        assert store.daily_counts(7).empty  # no events: no rows (not an error)
        ingest_records(_records(), gate, store)
        ev = store.events()
        days = pd.to_datetime(ev["ts"], unit="s", utc=True).dt.strftime("%Y-%m-%d")
        want = (
            pd.DataFrame({"date": days, "type": ev["type"]})
            .groupby(["date", "type"])
            .size()
            .reset_index(name="count")
        )
        for n in (1, 3, 30, 500):
            got = store.daily_counts(n)
            last = pd.Timestamp(want["date"].max())
            cut = (last - pd.Timedelta(days=n - 1)).strftime("%Y-%m-%d")
            expect = want[want["date"] >= cut].reset_index(drop=True)
            assert got["date"].tolist() == expect["date"].tolist()
            assert got["type"].tolist() == expect["type"].tolist()
            assert got["count"].tolist() == expect["count"].tolist()
        assert store.daily_counts(1)["count"].sum() == 2  # the last day: a view and a search
        with pytest.raises(ValidationError, match="days"):
            store.daily_counts(0)
