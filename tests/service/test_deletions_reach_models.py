"""Retention and consent downgrades delete at once and reach the models like an erasure."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from privrec.core.settings import Settings
from privrec.core.types import UserHistory
from privrec.data.synthetic import generate_shop
from privrec.models.zoo import create_model
from privrec.service import RecSys


def _shop(d: Path, **settings: object) -> RecSys:
    events, catalogue = generate_shop(n_items=100, n_users=70, seed=9)
    rs = RecSys(Settings(data_dir=d, **settings))  # type: ignore[arg-type]
    rs.add_items(catalogue)
    rs.ingest_frame(events)
    return rs


def _same_as_retrain(rs: RecSys, name: str) -> None:
    """The served model equals one trained from scratch on what the store holds now."""
    version = rs.registry.require_active(name)
    served, items = rs.registry.load(name, version)
    fresh = create_model(name, **rs.registry.config_of(name, version)["config"])
    ds = rs.dataset()
    fresh.fit(ds)
    assert ds.items.keys == items.keys
    x = ds.matrix()[:20].toarray()
    for row in x:
        history = np.flatnonzero(row)
        h = UserHistory(items=history, weights=row[history].astype(np.float32))
        np.testing.assert_allclose(served.score(h), fresh.score(h), rtol=1e-5, atol=1e-6)


def test_a_consent_downgrade_deletes_at_once_and_updates_the_models(tmp_path: Path) -> None:
    with _shop(tmp_path / "d") as rs:
        rs.train("itemknn", params={"k": 30})
        rs.train("als", params={"epochs": 2, "embedding_size": 8})
        p = rs.ctx.pseudonymise("shopper-00005")
        before = rs.store.events(user=p)
        assert (before["type"] != "purchase").any()
        change = rs.set_consent("shopper-00005", "purchases_only")
        after = rs.store.events(user=p)
        assert set(after["type"]) <= {"purchase"}  # deleted now, not at the next retrain
        assert change.events_deleted == int((before["type"] != "purchase").sum())
        assert change.models_pending_retrain == ["als"]  # cannot unlearn: owes a retrain
        assert "als" in rs.rights.pending.read()
        _same_as_retrain(rs, "itemknn")  # updated exactly
        change = rs.set_consent("shopper-00005", "anonymous")
        assert len(rs.store.events(user=p)) == 0  # anonymous: nothing stays stored
        purchases = int((before["type"] == "purchase").sum())
        assert change.events_deleted == purchases
        actions = [e["action"] for e in rs.ctx.audit_log().entries()]
        assert actions.count("consent-lowered") == 1 + (purchases > 0)


def test_retention_of_whole_shoppers_updates_the_models_exactly(tmp_path: Path) -> None:
    with _shop(tmp_path / "d") as rs:
        oldest = float(rs.store.events()["ts"].min())
        then = oldest - 100 * 86_400
        rs.ingest_events(
            [
                {"user": "long-gone", "item": item, "type": "purchase", "timestamp": then + k}
                for k, item in enumerate(["sku-000001", "sku-000002", "sku-000003"])
            ]
        )
        rs.train("itemknn", params={"k": 30})
        days = int((time.time() - (oldest - 50 * 86_400)) / 86_400)
        done = rs.retention(days)
        assert done["deleted"] == 3
        assert {m["model"]: m["status"] for m in done["models"]} == {"itemknn": "exact"}
        _same_as_retrain(rs, "itemknn")


def test_retention_of_part_of_histories_owes_a_retrain(tmp_path: Path) -> None:
    with _shop(tmp_path / "d") as rs:
        rs.train("itemknn", params={"k": 30})
        ts = rs.store.events()["ts"].to_numpy()
        days = int((time.time() - np.median(ts)) / 86_400) + 1  # about half the events expire
        done = rs.retention(days)
        assert 0 < done["deleted"] < len(ts)
        assert done["events_deleted"] == done["deleted"]
        # shoppers keep some events: the exact update (whole shoppers) does not apply
        assert {m["model"]: m["status"] for m in done["models"]} == {"itemknn": "retrain"}
        assert done["models_pending_retrain"] == ["itemknn"]
        info = rs.registry.models()["itemknn"]
        assert info.quarantined == [info.active]
        rs.train("itemknn", params={"k": 30})
        assert "itemknn" not in rs.rights.pending.read()
