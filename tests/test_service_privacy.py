"""Privacy through the service: consent on every ingestion path, the ledger, exact erasure, export.

A small synthetic shop (a few seconds); every test works in its own data directory.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from privrec.core.errors import BudgetExceededError
from privrec.core.settings import Settings
from privrec.data.dataset import InteractionDataset
from privrec.data.synthetic import generate_shop
from privrec.data.vocab import Vocabulary
from privrec.models.base import Recommender
from privrec.models.zoo import create_model
from privrec.service import RecSys
from tests.conftest import assert_no_raw_ids

NOW = 1_719_700_000
EXACT = {"popularity": {}, "itemknn": {"k": 20, "shrink": 2.0}, "ease": {"reg": 50.0}}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PRIVREC_PSEUDONYM_KEY", "PRIVREC_STORE_KEY", "PRIVREC_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(scope="module")
def shop_events() -> tuple[pd.DataFrame, pd.DataFrame]:
    return generate_shop(n_items=150, n_users=120, seed=11)


@pytest.fixture(scope="module")
def trained_template(
    tmp_path_factory: pytest.TempPathFactory, shop_events: tuple[pd.DataFrame, pd.DataFrame]
) -> Path:
    """A data directory with the shop ingested and popularity, item-kNN and EASE trained."""
    events, catalogue = shop_events
    d = tmp_path_factory.mktemp("privacy-shop") / "data"
    with RecSys(Settings(data_dir=d)) as rs:
        rs.add_items(catalogue)
        rs.ingest_frame(events)
        for name, params in EXACT.items():
            rs.train(name, params=params)
        rs.set_default_model("itemknn")
    return d


@pytest.fixture()
def data_dir(trained_template: Path, tmp_path: Path) -> Path:
    d = tmp_path / "data"
    shutil.copytree(trained_template, d)
    return d


def _ev(user: str, item: str, typ: str, i: int = 0) -> dict[str, Any]:
    return {"user": user, "item": item, "type": typ, "timestamp": NOW + i}


def _active(rs: RecSys, name: str) -> tuple[Recommender, Vocabulary]:
    version = rs.registry.models()[name].active
    path = rs.models_dir / name / version
    model = Recommender.load(path, key=rs.ctx.sidecar_key)
    return model, Vocabulary(json.loads((path / "items.json").read_text()))


def _retrained(rs: RecSys, name: str, items: Vocabulary) -> tuple[Recommender, InteractionDataset]:
    """The same model trained from scratch on what the store holds now (same item vocabulary)."""
    ds = InteractionDataset.from_events(
        rs.store.events(), items=items, event_weights=rs.settings.event_weights
    )
    return create_model(name, **EXACT[name]).fit(ds, rng=42), ds


# ---- consent -------------------------------------------------------------------------------------
def test_consent_applies_to_every_ingestion_path(tmp_path: Path, store_url: str | None) -> None:
    with RecSys(Settings(data_dir=tmp_path / "d", store_url=store_url)) as rs:
        rs.set_consent("anon", "anonymous")
        rs.set_consent("buyer", "purchases_only")
        rows = [
            _ev(u, "sku-1", t, i)
            for i, (u, t) in enumerate(
                [
                    ("anon", "view"),
                    ("anon", "purchase"),
                    ("buyer", "view"),
                    ("buyer", "cart"),
                    ("buyer", "purchase"),
                    ("fan", "view"),
                ]
            )
        ]
        rep = rs.ingest_events(rows)
        assert (rep.accepted, rep.consent_dropped) == (2, 4)
        assert rep.read == rep.accepted + rep.rejected + rep.duplicates + rep.consent_dropped
        # the file path (what `privrec ingest` runs) and the frame path filter the same way
        f = tmp_path / "more.jsonl"
        f.write_text(
            "".join(
                json.dumps(_ev(u, "sku-2", t, 100 + i)) + "\n"
                for i, (u, t) in enumerate([("anon", "cart"), ("buyer", "view"), ("fan", "cart")])
            )
        )
        assert rs.ingest_file(f).to_dict()["consent_dropped"] == 2
        fr = rs.ingest_frame(
            pd.DataFrame(
                [_ev("anon", "sku-3", "purchase", 200), _ev("buyer", "sku-3", "purchase", 201)]
            )
        )
        assert (fr.accepted, fr.consent_dropped) == (1, 1)
        # the HTTP path looks up all senders of a batch at once: each must still get their own level
        api = rs.ingestion.batch(
            [
                _ev(u, "sku-5", t, 400 + i)
                for i, (u, t) in enumerate(
                    [
                        ("anon", "purchase"),
                        ("buyer", "view"),
                        ("fan", "view"),
                        ("buyer", "purchase"),
                        ("new", "cart"),
                    ]
                )
            ]
        )
        assert (api["accepted"], api["consent_dropped"]) == (3, 2)
        anon = rs.ctx.pseudonymise("anon")
        buyer = rs.ctx.pseudonymise("buyer")
        assert (
            len(rs.store.events(user=anon)) == 0
        )  # an anonymous shopper's events are never stored
        assert set(rs.store.events(user=buyer)["type"]) == {"purchase"}
        # a change applies to the next ingestion
        rs.set_consent("anon", "personalized")
        assert rs.ingest_events([_ev("anon", "sku-4", "view", 300)]).accepted == 1


def test_anonymous_is_served_the_dp_popularity(data_dir: Path) -> None:
    with RecSys(Settings(data_dir=data_dir)) as rs:
        rs.train("dp_popularity", params={"epsilon": 1.0})
        rs.set_consent("shopper-00003", "anonymous")
        out = rs.recommend("shopper-00003", 5)
        assert out.model == "dp_popularity" and not out.personalized
        assert all(i["explanation"]["kind"] == "popular" for i in out.items)
        noisy = rs.serving.model("dp_popularity").model.popularity
        served = [i["item"] for i in out.items]
        keys = rs.serving.model("dp_popularity").items.keys
        top = [keys[j] for j in np.argsort(-noisy, kind="stable")[:5]]
        assert served == top  # the DP release's ranking, nothing from the user's history
        assert rs.recommend("shopper-00004", 5).personalized


# ---- ledger --------------------------------------------------------------------------------------
def test_ledger_charged_by_training_and_refuses_over_budget(data_dir: Path) -> None:
    # composed by the accountant at the budget's delta (1 / (10 x expected shoppers)): two
    # epsilon-2 releases cost about 2.9, more than 2.5; an epsilon-2 and an epsilon-1 about 2.3
    settings = Settings(data_dir=data_dir, privacy_budget_epsilon=2.5)
    with RecSys(settings) as rs:
        rs.train("dp_popularity", params={"epsilon": 2.0})
        before = rs.registry.models()["dp_popularity"]
        budget = rs.privacy_budget()["ledger"]
        assert budget["releases"] == 1
        assert 1.5 < budget["epsilon_spent"] <= 2.0 + 1e-9
        ledger_bytes = rs.ctx.ledger.path.read_bytes()
        with pytest.raises(BudgetExceededError):
            rs.train("dp_popularity", params={"epsilon": 2.0})
        # nothing stored changed: no new version, the ledger holds the one release
        assert rs.registry.models()["dp_popularity"] == before
        assert rs.ctx.ledger.path.read_bytes() == ledger_bytes
        assert not list((rs.models_dir / "dp_popularity").glob(".tmp-*"))
        rs.train("dp_popularity", params={"epsilon": 1.0})  # what is left still fits
        spent = rs.privacy_budget()["ledger"]
        assert spent["releases"] == 2 and spent["epsilon_spent"] <= 2.5
        assert spent["epsilon_spent"] < spent["epsilon_spent_basic"]  # tighter than the sum


# ---- erasure -------------------------------------------------------------------------------------
@pytest.mark.parametrize("batch", [False, True], ids=["one-by-one", "forget_many"])
def test_forget_downdates_exact_models_like_a_retrain(data_dir: Path, batch: bool) -> None:
    with RecSys(Settings(data_dir=data_dir)) as rs:
        before = {n: _active(rs, n)[0] for n in EXACT}
        users = ["shopper-00007", "shopper-00019", "shopper-00044"]
        receipts = rs.forget_many(users) if batch else [rs.forget(u) for u in users]
        assert len(receipts) == 3 and len({r["pseudonym"] for r in receipts}) == 3
        assert (
            rs.ctx.audit_log().verify() == (True, None)
            and len(rs.ctx.audit_log().entries("erase")) == 3
        )
        r = receipts[-1]
        assert r["events_deleted"] > 0 and r["deleted"]["events"] == r["events_deleted"]
        assert set(r["models_updated_exactly"]) == set(EXACT) and r["models_pending_retrain"] == []
        assert r["retrain_deadline"] is None
        for name in EXACT:
            model, items = _active(rs, name)
            fresh, ds = _retrained(rs, name, items)
            x = fresh.input_matrix(ds)
            diff = np.abs(model.score_matrix(x) - fresh.score_matrix(x)).max()
            assert diff < 1e-6, (name, diff)
            # ...and the forgotten users did change the model (the test would notice a no-op)
            assert np.abs(before[name].score_matrix(x) - fresh.score_matrix(x)).max() > 1e-4, name
            assert len(rs.registry.models()[name].versions) == 1  # older versions held the users
        # EASE's B is written after forget returns; then the version is complete
        rs.wait_for_erasures()
        ease_dir = rs.models_dir / "ease" / rs.registry.models()["ease"].active
        assert (ease_dir / "derived.safetensors.sealed").exists() and not (
            ease_dir / "derived.pending"
        ).exists()


def test_background_forget_returns_first_and_finishes_exactly(data_dir: Path) -> None:
    with RecSys(Settings(data_dir=data_dir)) as rs:
        rs.train("als", params={"epochs": 2, "embedding_size": 8})
        r = rs.forget("shopper-00011", background=True)
        p = r["pseudonym"]
        assert (
            len(rs.store.events(user=p)) == 0 and r["events_deleted"] > 0
        )  # the data is gone at once
        assert sorted(r["models_updating_exactly"]) == sorted(EXACT)
        # until the worker is done, every affected model carries the deadline
        assert set(r["models_pending_retrain"]) == {*EXACT, "als"} and r["retrain_deadline"]
        rs.wait_for_erasures()
        assert set(rs.rights.pending.read()) == {"als"}  # the exact ones were settled
        for name in EXACT:
            model, items = _active(rs, name)
            fresh, ds = _retrained(rs, name, items)
            x = fresh.input_matrix(ds)
            assert np.abs(model.score_matrix(x) - fresh.score_matrix(x)).max() < 1e-6, name
        log = rs.ctx.audit_log()
        assert log.verify() == (True, None)
        done = log.entries("erase-models")[-1]
        assert (
            done["pseudonyms"] == [p]
            and done["store_compacted"]
            and {m["status"] for m in done["models"]} == {"exact"}
        )
        assert [e["action"] for e in rs.export_user("shopper-00011")["audit_log"]] == [
            "erase",
            "erase-models",
        ]


def test_forget_in_a_new_process_and_of_unknown_users(data_dir: Path) -> None:
    """A fresh process loads the models from their artifacts (EASE: G, B, diag(P); no inverse).

    Unknown users change nothing.
    """
    with RecSys(Settings(data_dir=data_dir)) as rs:
        r = rs.forget("nobody-at-all")
        assert r["events_deleted"] == 0 and {m["status"] for m in r["models"]} == {"unaffected"}
        rs.forget("shopper-00021")
        model, items = _active(rs, "ease")
        fresh, ds = _retrained(rs, "ease", items)
        x = fresh.input_matrix(ds)
        assert np.abs(model.score_matrix(x) - fresh.score_matrix(x)).max() < 1e-6


def test_forget_records_pending_retrains_and_audits(data_dir: Path) -> None:
    with RecSys(Settings(data_dir=data_dir, retrain_deadline_days=7)) as rs:
        rs.train("als", params={"epochs": 2, "embedding_size": 8})
        r = rs.forget("shopper-00030")
        assert r["models_pending_retrain"] == ["als"] and r["retrain_deadline"]
        pending = rs.privacy_budget()["pending_retrains"]
        assert pending["als"]["deadline"] == r["retrain_deadline"]
        log = rs.ctx.audit_log()
        assert log.verify() == (True, None)
        entry = log.entries("erase")[-1]
        assert entry["pseudonym"] == r["pseudonym"] and entry["models_pending_retrain"] == ["als"]
        rs.train("als", params={"epochs": 2, "embedding_size": 8})  # the retrain clears it
        assert "als" not in rs.rights.pending.read()


def test_events_of_a_user_who_arrived_after_training_are_not_subtracted(data_dir: Path) -> None:
    """Exactness needs the trained events only: a late event must not be taken out of the model."""
    with RecSys(Settings(data_dir=data_dir)) as rs:
        rs.ingest_events(
            [
                _ev("late-user", "sku-000001", "purchase", 5),
                _ev("shopper-00009", "sku-000002", "purchase", 6),
            ]
        )
        rs.forget("late-user")
        rs.forget("shopper-00009")
        pop, items = _active(rs, "popularity")
        # retrain on the store without the late events of shopper-00009 (the model never saw them)
        ev = rs.store.events()
        ds = InteractionDataset.from_events(
            ev, items=items, event_weights=rs.settings.event_weights
        )
        fresh = create_model("popularity").fit(ds, rng=42)
        assert np.abs(pop.popularity - fresh.popularity).max() < 1e-6


# ---- export --------------------------------------------------------------------------------------
def test_export_holds_everything_stored_about_the_user(data_dir: Path) -> None:
    with RecSys(Settings(data_dir=data_dir)) as rs:
        buyers = [
            u
            for u in (f"shopper-{i:05d}" for i in range(1, 40))
            if "purchase" in set(rs.store.events(user=rs.ctx.pseudonymise(u))["type"])
        ]
        user = buyers[0]
        rs.set_consent(user, "purchases_only")
        rs.experiments.create(
            {
                "name": "exp1",
                "variants": [{"name": "a", "model": "itemknn"}, {"name": "b", "model": "ease"}],
            }
        )
        rec = rs.recommend(user, 3, experiment="exp1")
        rs.experiments.flush()
        doc = rs.export_user(user)
        p = rs.ctx.pseudonymise(user)
        assert doc["n_events"] == len(rs.store.events(user=p)) > 0
        assert doc["consent_record"]["level"] == "purchases_only"
        assert [e["recommendation_id"] for e in doc["experiments"]] == [rec.recommendation_id]
        rs.forget(user)
        after = rs.export_user(user)
        assert (
            after["n_events"] == 0
            and after["consent_record"] is None
            and after["experiments"] == []
        )
        # the audit entries about them: the downgrade's deletion and the erasure receipt
        assert [e["action"] for e in after["audit_log"]] == ["consent-lowered", "erase"]
        assert user not in json.dumps(after)


# ---- nothing raw on disk -------------------------------------------------------------------------
def test_no_raw_user_id_anywhere_in_the_data_dir(
    tmp_path: Path, shop_events: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    events, catalogue = shop_events
    d = tmp_path / "d"
    users = sorted(set(events["user"].astype(str)))
    with RecSys(Settings(data_dir=d)) as rs:
        rs.add_items(catalogue)
        rs.ingest_frame(events)
        bad = tmp_path / "bad.jsonl"
        bad.write_text(
            json.dumps({"user": users[0], "item": "x", "type": "bogus", "timestamp": NOW}) + "\n"
        )
        rs.ingest_file(bad)  # a reject file is written
        rs.train("popularity")
        rs.train("ease", params={"reg": 50.0})
        rs.train("dp_popularity", params={"epsilon": 1.0})
        rs.set_consent(users[1], "purchases_only")
        rs.experiments.create(
            {
                "name": "e",
                "variants": [{"name": "a", "model": "ease"}, {"name": "b", "model": "popularity"}],
            }
        )
        for u in users[:20]:
            rs.recommend(u, 5, experiment="e")
        rs.experiments.flush()
        rs.export_user(users[2])
        rs.forget(users[3])
    assert_no_raw_ids(d, users)


def test_settings_retention_per_event_type(tmp_path: Path, store_url: str | None) -> None:
    s = Settings(
        data_dir=tmp_path / "d",
        retention_days={"view": 30, "purchase": None},
        store_url=store_url,
    )
    with RecSys(s) as rs:
        day = 86400
        import time

        now = time.time()
        rs.ingest_events(
            [
                _ev("u1", "a", "view", 0) | {"timestamp": now - 40 * day},
                _ev("u1", "b", "view", 0) | {"timestamp": now - day},
                _ev("u1", "c", "purchase", 0) | {"timestamp": now - 400 * day},
            ]
        )
        assert rs.retention()["deleted"] == 1
        assert sorted(rs.store.events()["item"]) == ["b", "c"]


def test_search_query_text_is_not_stored_by_default(tmp_path: Path) -> None:
    q = "very private query text 5531"
    for keep, stored in ((False, None), (True, q)):
        d = tmp_path / f"d{keep}"
        with RecSys(Settings(data_dir=d, keep_query_text=keep)) as rs:
            rs.ingest_events([_ev("u1", "sku-1", "search", 0) | {"query": q}])
            assert rs.store.events()["query"].tolist() == [stored]
        if not keep:
            assert not any(q.encode() in f.read_bytes() for f in d.rglob("*") if f.is_file())


def test_consent_of_an_older_version_moves_into_the_store(tmp_path: Path) -> None:
    d = tmp_path / "d"
    with RecSys(Settings(data_dir=d)) as rs:
        p = rs.ctx.pseudonymise("old-anon")
    (d / "consent.json").write_text(
        json.dumps({p: {"level": "anonymous", "updated_at": "2025-01-01T00:00:00Z"}})
    )
    with RecSys(Settings(data_dir=d)) as rs:
        assert rs.ingest_events([_ev("old-anon", "sku-1", "view")]).consent_dropped == 1
    assert not (d / "consent.json").exists()


def test_an_unreadable_consent_store_is_an_error_not_personalised(tmp_path: Path) -> None:
    d = tmp_path / "d"
    with RecSys(Settings(data_dir=d)) as rs:
        rs.set_consent("anon", "anonymous")
    (d / "consent.sqlite").unlink()
    (d / "consent.sqlite").mkdir()  # the store cannot be opened
    with RecSys(Settings(data_dir=d)) as rs:
        with pytest.raises(sqlite3.Error):
            rs.ingest_events([_ev("anon", "sku-1", "view")])
        (d / "consent.sqlite").rmdir()
        assert (
            len(rs.store.events(user=rs.ctx.pseudonymise("anon"))) == 0
        )  # nothing stored meanwhile
