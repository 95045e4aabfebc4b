"""The experiment store with a key: ids hashed, rows and pins sealed, older rows moved in."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from privrec.experiments.assignment import Experiment, Variant, unit_id
from privrec.experiments.store import ExperimentStore
from privrec.privacy.sealed import SealedDataError

KEY = bytes(range(32))
SECRETS = [b"rec-alpha", b"rec-beta", b"item-shown-1", b"item-shown-2", b"unit-aaaa", b"unit-bbbb"]


def _exp() -> Experiment:
    return Experiment(name="e1", variants=(Variant("v0"), Variant("v1")), salt="s1")


def _fill(s: ExperimentStore) -> None:
    s.create(_exp())
    s.record_exposure("rec-alpha", "e1", "v0", "unit-aaaa", ["item-shown-1", "item-shown-2"])
    s.record_exposure("rec-beta", "e1", "v1", "unit-bbbb", ["item-shown-2"])
    outcomes = [
        {"rec_id": "rec-alpha", "type": "purchase", "item": "item-shown-1", "value": 12.5},
        {"rec_id": "rec-alpha", "type": "purchase", "item": "item-shown-1", "value": 12.5},
        {"rec_id": "rec-beta", "type": "click", "item": "item-shown-2"},
        {"rec_id": "rec-beta", "type": "click", "item": "item-elsewhere"},
    ]
    assert s.record_outcomes(outcomes) == 2


def _bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_sealed_store_works_and_holds_no_plaintext(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    s = ExperimentStore(path, key=KEY)
    _fill(s)
    ex, oc = s.records("e1")
    assert sorted(e["variant"] for e in ex) == ["v0", "v1"]
    assert sorted((o["type"], o["item"], o["value"]) for o in oc) == [
        ("click", "item-shown-2", 0.0),
        ("purchase", "item-shown-1", 12.5),
    ]
    # outcomes join their exposures through the hashed ids
    assert {o["rec_id"] for o in oc} <= {e["rec_id"] for e in ex}
    s.close()
    found = [x for x in SECRETS if x in _bytes(path)]
    assert found == []

    s = ExperimentStore(path, key=KEY)
    (row,) = s.unit_records({"e1": "unit-aaaa"})
    assert row["recommendation_id"] == "rec-alpha"
    assert json.loads(row["items"]) == ["item-shown-1", "item-shown-2"]
    assert [(o["type"], o["item"], o["value"]) for o in row["outcomes"]] == [
        ("purchase", "item-shown-1", 12.5)
    ]
    assert s.erase_units({"e1": "unit-aaaa"}) == 2
    assert s.unit_records({"e1": "unit-aaaa"}) == []
    assert len(s.unit_records({"e1": "unit-bbbb"})) == 1
    s.close()


def test_sealed_store_refuses_no_key_and_another_key(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    s = ExperimentStore(path, key=KEY)
    _fill(s)
    s.close()
    with pytest.raises(SealedDataError, match="sidecar key"):
        ExperimentStore(path)
    with pytest.raises(SealedDataError, match="does not decrypt"):
        ExperimentStore(path, key=bytes(32))


def _legacy(path: Path) -> None:
    """A file as versions before sealing wrote it (plaintext tables and pins)."""
    con = sqlite3.connect(path)
    doc = {**_exp().to_dict(), "pins": {"unit-bbbb": "v0"}}
    con.executescript(
        "CREATE TABLE experiments (name TEXT PRIMARY KEY, doc TEXT NOT NULL);"
        "CREATE TABLE exposures (rec_id TEXT PRIMARY KEY, experiment TEXT NOT NULL, "
        "variant TEXT NOT NULL, unit TEXT NOT NULL, ts REAL NOT NULL, items TEXT NOT NULL);"
        "CREATE TABLE outcomes (rec_id TEXT NOT NULL, type TEXT NOT NULL, item TEXT NOT NULL, "
        "value REAL, ts REAL NOT NULL, PRIMARY KEY (rec_id, type, item));"
    )
    con.execute("INSERT INTO experiments VALUES ('e1', ?)", [json.dumps(doc)])
    con.execute(
        "INSERT INTO exposures VALUES ('rec-alpha', 'e1', 'v0', 'unit-aaaa', 1.0, ?)",
        [json.dumps(["item-shown-1", "item-shown-2"])],
    )
    con.execute("INSERT INTO outcomes VALUES ('rec-alpha', 'click', 'item-shown-1', 0.0, 2.0)")
    con.commit()
    con.close()


@pytest.mark.parametrize("key", [None, KEY], ids=["plain", "sealed"])
def test_plaintext_rows_of_older_versions_are_read(tmp_path: Path, key: bytes | None) -> None:
    path = tmp_path / "x.sqlite"
    _legacy(path)
    s = ExperimentStore(path, key=key)
    assert s.get("e1").pins == {"unit-bbbb": "v0"}
    (row,) = s.unit_records({"e1": "unit-aaaa"})
    assert (row["recommendation_id"], row["ts"]) == ("rec-alpha", 1.0)
    assert [(o["type"], o["item"]) for o in row["outcomes"]] == [("click", "item-shown-1")]
    s.close()
    if key is not None:
        assert [x for x in SECRETS if x in _bytes(path)] == []
        assert ExperimentStore(path, key=key).get("e1").pins == {"unit-bbbb": "v0"}


def test_a_keyless_store_is_sealed_when_opened_with_the_key(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    s = ExperimentStore(path)
    _fill(s)
    s.close()
    assert b"rec-alpha" in _bytes(path)
    s = ExperimentStore(path, key=KEY)
    assert len(s.unit_records({"e1": "unit-aaaa"})[0]["outcomes"]) == 1
    s.close()
    assert [x for x in SECRETS if x in _bytes(path)] == []


def test_rekey_moves_hashed_units_and_seals_pins(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite"
    s = ExperimentStore(path, key=KEY)
    exp = s.create(_exp())
    olds = [f"old-{i}" for i in range(40)]
    for i, p in enumerate(olds):
        s.record_exposure(f"rec-{i}", "e1", exp.variant_of(p).name, unit_id("s1", p), ["it"])
    staged = s.stage_rekey({p: p.replace("old", "new") for p in olds[:30]}, 1)
    assert (staged.count, staged.unmatched) == (30, 10)
    staged.commit()
    pins = dict(s.get("e1").pins)
    assert pins  # with 30 shoppers some land in another variant under the new pseudonym
    for i, p in enumerate(olds[:30]):
        new = p.replace("old", "new")
        assert s.get("e1").variant_of(new).name == exp.variant_of(p).name
        (row,) = s.unit_records({"e1": unit_id("s1", new)})
        assert row["recommendation_id"] == f"rec-{i}"
    s.close()
    assert all(u.encode() not in _bytes(path) for u in pins)
    assert ExperimentStore(path, key=KEY).get("e1").pins == pins
