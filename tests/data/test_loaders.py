"""Dataset loaders: small hand-made files (format edge cases) and the real shared datasets.

The real-data tests check the verified counts of each folder's PROVENANCE.md and skip with a
message when ../shared/data is absent.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from privrec.data.loaders import (
    SYNTHETIC_BASE_TS,
    benchmark_pseudonymiser,
    detect_format,
    load_dataset,
    load_movielens_100k,
    load_taobao_userbehavior,
    load_unisrec,
    load_unisrec_split,
)
from privrec.data.splitters import stratified_split
from privrec.events.gate import Gate
from privrec.privacy.pseudonym import Pseudonymiser
from tests.conftest import need

HEX32 = re.compile(r"[0-9a-f]{32}")


def _is_chronological(ds) -> bool:
    same_user = ds.user_idx[1:] == ds.user_idx[:-1]
    return bool((ds.ts[1:][same_user] > ds.ts[:-1][same_user]).all())


# ---- small files -----------------------------------------------------------------------------
def test_movielens_small(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text(
        "7\t2\t4\t881250949\n7\t1\t5\t881250950\n9\t2\t3\t891717742\n9\t3\t9\t891717743\n"
    )
    (tmp_path / "u.item").write_bytes(
        "1|Misérables, Les (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0\n"
        "2|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0\n"
        "3|Heat (1995)|01-Jan-1995||http://x|0|1|0|0|0|0|1|0|0|0|0|0|0|0|0|0|1|0|0\n".encode(
            "latin-1"
        )
    )
    ds = load_movielens_100k(tmp_path)
    assert (ds.n_users, ds.n_items, ds.n_events, ds.n_rejects) == (
        2,
        3,
        3,
        1,
    )  # rating 9 is off the scale
    assert ds.items.keys == ["1", "2", "3"]
    meta = ds.item_meta.set_index("item")
    assert (
        meta.loc["1", "title"] == "Misérables, Les (1995)" and meta.loc["1", "category"] == "Drama"
    )
    assert meta.loc["2", "category"] == "Animation|Children's|Comedy"
    assert meta.loc["2", "text"] == "Toy Story (1995). Animation, Children's, Comedy"
    assert all(HEX32.fullmatch(u) for u in ds.users.keys) and "7" not in ds.users
    assert sorted(ds.rating.tolist()) == [3.0, 4.0, 5.0]


def test_taobao_truncated_and_unknown_lines_are_counted_rejects(tmp_path: Path) -> None:
    f = tmp_path / "UserBehavior.csv"
    f.write_text(
        "1,10,100,pv,1511658000\n1,11,100,buy,1511658001\n2,10,100,fav,1511658002\n"
        "2,12,101,click,1511658003\n3,13,102,cart,1511658004\n301780,543546,4181361,pv,15\n301780,5435"
    )
    ds = load_taobao_userbehavior(tmp_path)
    assert ds.n_events == 4 and ds.n_rejects == 3
    assert (
        ds.n_items == 3
    )  # items 12 and 543546 appear only on rejected lines: not in the vocabulary
    types = sorted(ds.to_frame()["type"].tolist())
    from privrec.core.types import EVENT_CODE

    assert types == sorted(EVENT_CODE[t] for t in ("view", "purchase", "favorite", "cart"))
    assert ds.item_meta.set_index("item").loc["13", "category"] == "102"


def test_s3rec_small(tmp_path: Path) -> None:
    (tmp_path / "Toys.txt").write_text("1 3 1 2\n2 2 3\n")
    (tmp_path / "toys_items.jsonl").write_text(
        "\n".join(
            json.dumps(
                {
                    "s3rec_item_id": k,
                    "asin": f"A{k}",
                    "title": f"Toy {k}",
                    "categories": [["Toys", "Games"], ["Toys", "Puzzles"]],
                }
            )
            for k in (1, 2, 3, 4)
        )
    )
    (tmp_path / "Toys_item2attributes.json").write_text(
        json.dumps({"1": [5, 6], "2": [5], "3": [7], "4": [8]})
    )
    ds = load_dataset(tmp_path)
    assert (ds.n_users, ds.n_items, ds.n_events) == (2, 4, 5)
    assert ds.items.keys == ["1", "2", "3", "4"]  # item 4 has no events but is in the catalogue
    assert ds.sequences()[0].tolist() == [2, 0, 1]  # user 1: items 3, 1, 2 in order
    assert ds.ts[0] == SYNTHETIC_BASE_TS and _is_chronological(ds)
    meta = ds.item_meta.set_index("item")
    assert meta.loc["1", "category"] == "Toys > Games" and meta.loc["1", "asin"] == "A1"
    assert meta.loc["1", "text"] == "Toy 1. Toys > Games. Toys > Puzzles" and meta.loc[
        "1", "attributes"
    ] == (5, 6)


def _write_unisrec(folder: Path, seqs: dict[str, list[str]], max_len: int = 50) -> None:
    items = sorted({i for s in seqs.values() for i in s})
    (folder / "Mini.item2index").write_text("".join(f"{a}\t{k}\n" for k, a in enumerate(items)))
    (folder / "Mini.user2index").write_text("".join(f"{u}\t{k}\n" for k, u in enumerate(seqs)))
    (folder / "Mini.text").write_text(
        "item_id:token\ttext:token_seq\n"
        + "".join(f"{a}\tThing {a}. Industrial & Scientific Parts. Acme Co. \n" for a in items)
    )
    idx = {a: k for k, a in enumerate(items)}
    head = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    rows = {"train": [], "valid": [], "test": []}
    for u, s in enumerate(seqs.values()):
        ids = [idx[a] for a in s]
        n = len(ids)
        for p in range(n - 3, 0, -1):  # descending, as in the real files
            rows["train"].append((u, ids[:p][-max_len:], ids[p]))
        rows["valid"].append((u, ids[: n - 2][-max_len:], ids[n - 2]))
        rows["test"].append((u, ids[: n - 1][-max_len:], ids[n - 1]))
    for part, rs in rows.items():
        (folder / f"Mini.{part}.inter").write_text(
            head + "".join(f"{u}\t{' '.join(map(str, h))}\t{t}\n" for u, h, t in rs)
        )


def test_unisrec_rebuilds_long_truncated_sequences(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    seqs = {
        "rev-A": [f"B{int(x):03d}" for x in rng.integers(0, 90, 60)],
        "rev-B": ["B001", "B002", "B003", "B004", "B001"],
    }
    _write_unisrec(tmp_path, seqs, max_len=10)
    assert detect_format(tmp_path) == "unisrec"
    ds = load_unisrec(tmp_path)
    assert ds.n_events == 65 and ds.n_users == 2
    got = [ds.items.decode(s) for s in ds.sequences()]
    assert got == list(seqs.values())
    assert _is_chronological(ds)
    meta = ds.item_meta.set_index("item")
    assert meta.loc["B001", "title"] == "Thing B001" and meta.loc["B001", "brand"] == "Acme Co"
    train, valid, test = load_unisrec_split(tmp_path)
    assert test.items.decode(test.item_idx) == [seqs["rev-A"][-1], "B001"]
    assert valid.items.decode(valid.item_idx) == [seqs["rev-A"][-2], "B004"]
    assert train.n_events == 65 - 4


def test_unknown_layout_names_the_expected_files(tmp_path: Path) -> None:
    from privrec.core.errors import ValidationError

    (tmp_path / "notes.md").write_text("hello")
    with pytest.raises(ValidationError, match=r"u\.data"):
        load_dataset(tmp_path)


def test_benchmark_key_is_reproducible_and_keys_differ() -> None:
    a, b = benchmark_pseudonymiser(), benchmark_pseudonymiser()
    assert a.pseudonymise("196") == b.pseudonymise("196")
    assert benchmark_pseudonymiser(1).pseudonymise("196") != a.pseudonymise("196")


# ---- real data (verified counts in each PROVENANCE.md) ----------------------------------------
def _listing(folder: Path) -> list[tuple[str, int, float]]:
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime) for p in folder.iterdir())


@pytest.mark.slow
def test_real_movielens_100k(shared_data: Path) -> None:
    folder = need(shared_data / "movielens-100k")
    before = _listing(folder)
    ds = load_movielens_100k(folder)
    assert _listing(folder) == before  # nothing written next to the data
    assert (ds.n_users, ds.n_items, ds.n_events, ds.n_rejects) == (943, 1682, 100_000, 0)
    assert set(np.unique(ds.rating).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert ds.ts.min() == 874_724_710 and ds.ts.max() == 893_286_638
    assert ds.item_meta["title"].notna().all() and ds.items.index("1") == 0
    assert ds.item_meta.loc[0, "title"] == "Toy Story (1995)"
    assert ds.item_meta["title"].str.contains("Misérables").any()  # Latin-1 decoded
    assert all(HEX32.fullmatch(u) for u in ds.users.keys[:20])
    # arrival keeps u.data's row order: the first row is user 196, item 242.
    first = int(np.argmin(ds.arrival))
    assert ds.items.key(ds.item_idx[first]) == "242"
    assert ds.users.key(ds.user_idx[first]) == benchmark_pseudonymiser().pseudonymise("196")
    # The benchmark protocol: per item, round(0.75 n) ratings in train.
    train, test = stratified_split(ds, 0.75, filter_by="item", seed=42)
    n = np.bincount(ds.item_idx, minlength=ds.n_items)
    assert (
        train.n_events == sum(round(0.75 * int(m)) for m in n)
        and train.n_events + test.n_events == 100_000
    )


@pytest.mark.slow
def test_real_movielens_with_own_key(shared_data: Path) -> None:
    folder = need(shared_data / "movielens-100k")
    p = Pseudonymiser([os.urandom(32)])
    ds = load_dataset(folder, gate=Gate(p))
    assert ds.users.keys[0] == p.pseudonymise("196")
    assert ds.users.keys[0] != benchmark_pseudonymiser().pseudonymise("196")


@pytest.mark.slow
def test_real_amazon_beauty(shared_data: Path) -> None:
    folder = need(shared_data / "amazon-beauty")
    before = _listing(folder)
    ds = load_dataset(folder)
    assert _listing(folder) == before
    assert (ds.n_users, ds.n_items, ds.n_events, ds.n_rejects) == (22_363, 12_101, 198_502, 0)
    lengths = np.diff(ds.user_offsets())
    assert lengths.min() == 5 and lengths.max() == 204
    assert _is_chronological(ds)
    assert ds.items.keys[:3] == ["1", "2", "3"]
    assert (
        ds.item_meta["title"].notna().all()
        and ds.item_meta["category"].str.startswith("Beauty").all()
    )
    assert ds.item_meta.loc[0, "asin"] == "B004756YJA"
    # The first user's sequence is line 1 of Beauty.txt.
    assert ds.items.decode(ds.sequences()[0]) == ["1", "2", "3", "4", "5"]


@pytest.mark.slow
def test_real_amazon_scientific_and_its_split(shared_data: Path) -> None:
    folder = need(shared_data / "amazon-scientific-unisrec")
    train, valid, test = load_unisrec_split(folder)
    assert (train.n_users, train.n_items) == (8_442, 4_385)
    assert valid.n_events == test.n_events == 8_442
    assert train.n_events + valid.n_events + test.n_events == 59_427
    # Item index i is UniSRec's item i; user 0's valid/test targets are 12 and 13 (first rows of the
    # files).
    assert train.items.key(0) == "B00TNNWMXI"
    assert valid.item_idx[valid.user_idx == 0].tolist() == [12] and test.item_idx[
        test.user_idx == 0
    ].tolist() == [13]
    assert train.item_meta["text"].notna().all()
    assert (
        train.item_meta["category"].dropna().str.startswith("Industrial & Scientific")
    ).mean() > 0.9


@pytest.mark.slow
def test_real_taobao(shared_data: Path) -> None:
    folder = need(shared_data / "taobao-userbehavior-samples")
    ds = load_dataset(folder)
    assert (ds.n_events, ds.n_rejects) == (96_168, 1)  # the truncated last line
    assert (ds.n_users, ds.n_items) == (58_732, 75_384)
    from privrec.core.types import EVENT_CODE

    counts = np.bincount(ds.event_type, minlength=len(EVENT_CODE))
    assert counts[EVENT_CODE["view"]] == 85_773 and counts[EVENT_CODE["cart"]] == 5_292
    assert counts[EVENT_CODE["favorite"]] == 2_959 and counts[EVENT_CODE["purchase"]] == 2_144
    assert ds.item_meta.set_index("item").loc["1715", "category"] == "1464116"
    assert ds.item_meta["category"].nunique() == 3_757


def test_detect_format_on_the_real_folders(shared_data: Path) -> None:
    expect = {
        "movielens-100k": "movielens-100k",
        "amazon-beauty": "amazon-s3rec",
        "amazon-scientific-unisrec": "unisrec",
        "taobao-userbehavior-samples": "taobao",
    }
    for folder, fmt in expect.items():
        assert detect_format(need(shared_data / folder)) == fmt


def test_s3rec_sequence_file_alone_is_detected(tmp_path: Path) -> None:
    (tmp_path / "Sports.txt").write_text("1 1 2 3\n2 3 1\n")
    assert detect_format(tmp_path) == "amazon-s3rec"
    ds = load_dataset(tmp_path)
    assert (ds.n_users, ds.n_items, ds.n_events) == (2, 3, 5)


def test_unisrec_inconsistent_files_are_refused(tmp_path: Path) -> None:
    from privrec.core.errors import ValidationError

    _write_unisrec(tmp_path, {"r1": ["A", "B", "C", "D", "E"], "r2": ["C", "D", "E", "A"]})
    test_file = tmp_path / "Mini.test.inter"
    lines = test_file.read_text().splitlines()
    lines[1] = (
        lines[1].rsplit("\t", 1)[0].replace("\t0 ", "\t4 ") + "\t" + lines[1].rsplit("\t", 1)[1]
    )
    test_file.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValidationError, match="leave-one-out"):
        load_unisrec(tmp_path)
