"""At rest: no file in the data directory (outside the key directory) holds personal plaintext.

A small shop is ingested (with rejects), trained (item-kNN, EASE and a DP model), a shopper
lowers their consent and another is erased; then every file's bytes are searched for what would
identify shoppers or their behaviour: pseudonyms, item keys they touched, consent level names
and the exact arrays of the models (co-occurrence counts, Gram-derived weights).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from privrec.core.settings import Settings
from privrec.core.types import UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.data.synthetic import generate_shop
from privrec.models.base import Recommender
from privrec.models.itemknn import ItemKNN
from privrec.privacy.sealed import SealedDataError
from privrec.service import RecSys
from privrec.service.registry import TrainingRecord

KEY = bytes(range(32))
Shop = tuple[RecSys, Path, dict[str, list[str]]]

# files that hold public data only, with the reason
PUBLIC = {
    "items.json": "the model's item vocabulary: public catalogue ids",
}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    root = tmp_path_factory.mktemp("at-rest")
    d, keys = root / "data", root / "keys"
    events, catalogue = generate_shop(n_items=80, n_users=40, seed=5)
    bad = root / "bad.csv"
    bad.write_text(
        "user,item,type,timestamp\n"
        f"shopper-00001,{events['item'].iloc[0]},view,1700000000\n"
        "shopper-00002,,view,1700000000\n"
        "shopper-00003,item-x,teleport,1700000000\n"
    )
    rs = RecSys(Settings(data_dir=d, key_dir=keys))
    rs.add_items(catalogue)
    rs.ingest_frame(events)
    report = rs.ingest_file(bad)
    assert report.rejected == 2
    rs.set_consent("shopper-00004", "purchases_only")
    rs.set_consent("shopper-00005", "anonymous")
    for name, params in (
        ("itemknn", {}),
        ("ease", {}),
        ("dp_popularity", {"epsilon": 1.0}),
    ):
        rs.train(name, params=params)
    rs.forget("shopper-00006")
    rs.wait_for_erasures()
    users = sorted(set(events["user"]))
    known = {
        "pseudonyms": [rs.ctx.pseudonymise(u) for u in users],
        "items": sorted(set(events["item"])),
    }
    try:
        yield rs, d, known
    finally:
        rs.close()


def _files(d: Path) -> list[Path]:
    return [f for f in d.rglob("*") if f.is_file()]


def _holding(d: Path, needles: list[bytes], skip: frozenset[str] = frozenset()) -> dict[str, int]:
    out = {}
    for f in _files(d):
        if f.name in skip:
            continue
        blob = f.read_bytes()
        n = sum(1 for x in needles if x in blob)
        if n:
            out[str(f.relative_to(d))] = n
    return out


def test_the_keys_live_outside_the_data_directory(shop: Shop) -> None:
    rs, d, _ = shop
    assert rs.ctx.key_dir != d / "keys"
    assert (rs.ctx.key_dir / "sidecar.key").exists()
    assert os.stat(rs.ctx.key_dir / "sidecar.key").st_mode & 0o777 == 0o600


def test_no_file_holds_a_pseudonym(shop: Shop) -> None:
    _, d, known = shop
    needles = [p.encode() for p in known["pseudonyms"]]
    assert _holding(d, needles) == {}


def test_no_file_holds_a_consent_level_name(shop: Shop) -> None:
    _, d, _ = shop
    assert _holding(d, [b"purchases_only", b"anonymous"]) == {}


def test_only_the_public_vocabulary_names_items_shoppers_touched(
    shop: Shop,
) -> None:
    _, d, known = shop
    # "item-1" is a prefix of "item-10": search for the quoted keys as they appear in JSON
    needles = [f'"{i}"'.encode() for i in known["items"]]
    assert _holding(d, needles, skip=frozenset(PUBLIC)) == {}


def test_no_file_holds_the_models_exact_arrays(shop: Shop) -> None:
    rs, d, _ = shop
    needles: list[bytes] = []
    for name in ("itemknn", "ease"):
        model, _ = rs.registry.load(name, rs.registry.require_active(name))
        arrays = {**model._state(), **model._derived()}
        for arr in arrays.values():
            raw = np.ascontiguousarray(arr).tobytes()
            nz = np.flatnonzero(np.frombuffer(raw, np.uint8))
            if len(nz) >= 32:  # a 32-byte run from the first non-zero bytes: the exact counts
                start = int(nz[0])
                needles.append(raw[start : start + 32])
    assert needles
    assert _holding(d, needles) == {}


def test_every_model_file_is_sealed_and_loads_back(shop: Shop) -> None:
    rs, _, _ = shop
    for name in ("itemknn", "ease", "dp_popularity"):
        version = rs.registry.require_active(name)
        folder = rs.registry.path(name, version)
        names = {f.name for f in folder.iterdir()}
        assert "config.json.sealed" in names and "state.safetensors.sealed" in names
        assert not names & {"config.json", "state.safetensors", "derived.safetensors"}
        assert not names & {"training.json", "trained_events.npy"}
        with pytest.raises(Exception, match="sealed"):
            Recommender.load(folder)  # no key: refused with a clear message
        assert rs.registry.training_record(name, version) is not None
        assert rs.registry.config_of(name, version)["model"] == name


def test_sealed_files_still_read_through_the_service(shop: Shop) -> None:
    rs, _, _ = shop
    summary = rs.privacy_budget()
    assert summary["ledger"]["releases"] >= 1
    log = rs.ctx.audit_log()
    assert log.verify() == (True, None)
    assert "erase" in {e["action"] for e in log.entries()}
    export = rs.export_user("shopper-00002")
    assert len(export["rejected_rows"]) == 1
    assert rs.consent("shopper-00004") == "purchases_only"


def test_a_changed_training_record_is_refused(tmp_path: Path) -> None:
    key = KEY
    rec = TrainingRecord(np.array([1, 2, 3], np.uint64), 0, {"view": 1.0})
    rec.write(tmp_path, key=key)
    got = TrainingRecord.read(tmp_path, key=key)
    assert got is not None and got.event_ids.tolist() == [1, 2, 3]
    f = tmp_path / "trained_events.npy.sealed"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 1
    f.write_bytes(bytes(raw))
    with pytest.raises(SealedDataError, match="trained_events"):
        TrainingRecord.read(tmp_path, key=key)


def test_plaintext_artifacts_of_older_versions_still_load(tmp_path: Path) -> None:
    events, _ = generate_shop(n_items=60, n_users=20, seed=3)
    frame = events[["user", "item", "type", "timestamp"]].rename(columns={"timestamp": "ts"})
    model = ItemKNN().fit(InteractionDataset.from_events(frame))
    history = UserHistory.of([0, 1])
    model.save(tmp_path / "old")
    again = Recommender.load(tmp_path / "old", key=KEY)
    assert np.allclose(again.score(history), model.score(history))
    model.save(tmp_path / "new", key=KEY)
    assert not (tmp_path / "new" / "config.json").exists()
    sealed = Recommender.load(tmp_path / "new", key=KEY)
    assert np.allclose(sealed.score(history), model.score(history))
