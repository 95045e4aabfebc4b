"""At rest: experiments.sqlite names no shown item, recommendation id or unit id in plaintext.

A shop runs an experiment: known shoppers are shown lists and click and buy from them (through
the HTTP ingestion path). The file's bytes (with its WAL) are then searched for every item key
shown, every recommendation id and every shopper's unit id; export, erasure and a pseudonym key
rotation must still find the shoppers' rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from privrec.core.settings import Settings
from privrec.data.synthetic import generate_shop
from privrec.experiments.assignment import unit_id
from privrec.service import RecSys
from privrec.service.experiments import EXPERIMENTS_FILE

SHOPPERS = [f"shopper-{i:05d}" for i in range(1, 13)]


@pytest.fixture()
def shop(tmp_path: Path) -> Iterator[tuple[RecSys, Path, dict[str, str]]]:
    d = tmp_path / "data"
    events, catalogue = generate_shop(n_items=60, n_users=30, seed=7)
    with RecSys(Settings(data_dir=d, key_dir=tmp_path / "keys")) as rs:
        rs.add_items(catalogue)
        rs.ingest_frame(events)
        rs.train("popularity")
        rs.experiments.create(
            {"name": "ab", "variants": [{"name": "a"}, {"name": "b", "params": {"diversity": 0.5}}]}
        )
        shown: dict[str, str] = {}
        outcomes = []
        for u in SHOPPERS:
            rec = rs.recommend(u, 5, experiment="ab")
            shown[u] = rec.recommendation_id
            first = rec.items[0]["item"]
            outcomes += [
                {"user": u, "item": first, "type": "view", "timestamp": 1_700_000_000,
                 "recommendation_id": rec.recommendation_id},
                {"user": u, "item": first, "type": "purchase", "timestamp": 1_700_000_100,
                 "recommendation_id": rec.recommendation_id, "value": 9.5},
            ]  # fmt: skip
        assert rs.ingestion.batch(outcomes)["accepted"] >= len(SHOPPERS)
        rs.experiments.flush()
        yield rs, d, shown


def _needles(rs: RecSys, shown: dict[str, str]) -> list[str]:
    salt = rs.experiments.store.get("ab").salt
    items = {
        i
        for u in SHOPPERS
        for row in rs.experiments.records_of(rs.ctx.pseudonymise(u))
        for i in json.loads(row["items"])
    }
    units = [unit_id(salt, rs.ctx.pseudonymise(u)) for u in SHOPPERS]
    return sorted(items) + list(shown.values()) + units


def _holding(d: Path, needles: list[str]) -> list[str]:
    data = b"".join(p.read_bytes() for p in d.glob(EXPERIMENTS_FILE + "*"))
    return [n for n in needles if n.encode() in data]


def test_experiment_rows_are_sealed_and_still_found(
    shop: tuple[RecSys, Path, dict[str, str]],
) -> None:
    rs, d, shown = shop
    report = rs.experiments.report("ab")
    assert sum(v["impressions"] for v in report["variants"]) == len(SHOPPERS)
    needles = _needles(rs, shown)
    assert len(needles) > 2 * len(SHOPPERS)
    assert _holding(d, needles) == []

    # export finds each shopper's list, with the outcomes attributed to it
    doc = rs.export_user(SHOPPERS[0])
    (row,) = doc["experiments"]
    assert row["recommendation_id"] == shown[SHOPPERS[0]]
    assert {o["type"] for o in row["outcomes"]} == {"click", "purchase"}

    # rotation keeps every shopper's rows, and the file still names none of them
    rs.rotate_key()
    for u in SHOPPERS:
        rows = rs.export_user(u)["experiments"]
        assert [r["recommendation_id"] for r in rows] == [shown[u]]
    rs.experiments.flush()
    assert _holding(d, _needles(rs, shown)) == []

    # erasure finds them under the new pseudonyms
    rs.forget(SHOPPERS[1])
    rs.wait_for_erasures()
    assert rs.export_user(SHOPPERS[1])["experiments"] == []
    assert len(rs.export_user(SHOPPERS[2])["experiments"]) == 1
