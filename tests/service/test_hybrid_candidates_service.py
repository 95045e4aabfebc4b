"""The hybrid trained with `candidates` is served through the one serving path (RecSys.recommend,
list cache off): the lists match full scoring's, and an item in both gets the same explanation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from privrec.core.settings import Settings
from privrec.core.types import UserHistory
from privrec.data.synthetic import generate_shop
from privrec.service import RecSys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PARAMS = {
    "cf_params": {"reg": 20.0},
    "sequential": "sasrec",
    "sequential_params": {
        "embedding_size": 16,
        "num_blocks": 1,
        "num_heads": 1,
        "max_len": 10,
        "epochs": 2,
        "batch_size": 32,
    },
    "weights": {"cf": 0.2, "sequential": 0.3, "content": 0.3, "popularity": 0.2},
    "cold_weights": {"content": 0.8, "popularity": 0.2},
    "cold_item_boost": 0.5,
    "candidates": 30,
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("hybrid-candidates") / "data"
    events, catalogue = generate_shop(n_items=200, n_users=80, seed=5)
    with RecSys(Settings(data_dir=d)) as rs:
        rs.add_items(catalogue)
        rs.ingest_frame(events)
        rs.train("hybrid", params=PARAMS)
    return d


def test_candidate_lists_match_full_scoring_through_the_service(data_dir: Path) -> None:
    users = [f"shopper-{i:05d}" for i in range(1, 41)]
    with RecSys(Settings(data_dir=data_dir)) as rs:
        rs.serving.configure(cache_entries=0)
        model = rs.serving.model("hybrid").model
        assert model.config.candidates == 30
        with_cands = {u: rs.recommend(u, 5, model="hybrid").items for u in users}
        # the candidate path was taken: fewer items scored exactly than the catalogue holds
        scored = [v.candidates for v in [model.serve_view(h) for h in _histories(rs, users[:5])]]
        assert all(c is not None and 0 < len(c) < model.n_items for c in scored)
        model.config = model.config.model_copy(update={"candidates": None})
        full = {u: rs.recommend(u, 5, model="hybrid").items for u in users}
    overlap = []
    for u in users:
        a = {it["item"]: it for it in with_cands[u]}
        b = {it["item"]: it for it in full[u]}
        overlap.append(len(a.keys() & b.keys()) / max(len(b), 1))
        for key in a.keys() & b.keys():
            assert a[key]["explanation"] == b[key]["explanation"]
            assert a[key]["score"] == pytest.approx(b[key]["score"], abs=1e-4)
    assert float(np.mean(overlap)) >= 0.9


def _histories(rs: RecSys, users: list[str]) -> list[UserHistory]:
    loaded = rs.serving.model("hybrid")
    out = []
    for u in users:
        p = rs.ctx.pseudonymise(u)
        out.append(rs.serving.history_for(loaded, p, rs.consent_book.level(p)))
    return out
