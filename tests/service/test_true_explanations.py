"""Explanations tell the truth: every history item an explanation names raised that item's score."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from privrec.core.settings import Settings
from privrec.data.synthetic import generate_shop
from privrec.service import RecSys


@pytest.mark.parametrize("model", ["itemknn", "ease", "als"])
def test_named_evidence_has_a_positive_share(tmp_path: Path, model: str) -> None:
    events, catalogue = generate_shop(n_items=150, n_users=90, seed=12)
    params = {"itemknn": {"k": 30}, "ease": {"reg": 50.0}, "als": {"epochs": 3}}[model]
    with RecSys(Settings(data_dir=tmp_path / "d")) as rs:
        rs.add_items(catalogue)
        rs.ingest_frame(events)
        rs.train(model, params=params)
        loaded = rs.serving.model(model)
        checked = 0
        for n in range(1, 25):
            user = f"shopper-{n:05d}"
            served = rs.recommend(user, 10, model=model)
            p = rs.ctx.pseudonymise(user)
            history = rs.serving.history_for(loaded, p, rs.consent_book.level(p))
            for it in served.items:
                exp = it["explanation"]
                if exp["kind"] != "history":
                    continue
                i = loaded.index[it["item"]]
                shares = loaded.model.contributions(history, np.array([i]))
                assert shares is not None
                for named in exp["because"]:
                    j = loaded.index[named["item"]]
                    entries = np.flatnonzero(history.items == j)
                    # the entry that carries the item's weight has a positive share of the score
                    assert shares[0, entries].max() > 0, (user, it["item"], named["item"])
                    checked += 1
        assert checked > 20
