"""The hybrid with a SASRec sequential component (the configuration benchmarks/sequential_beauty.py
reports as the best Beauty model): it fits, blends, and its sequential part reads the order."""

from __future__ import annotations

import os

import numpy as np
import pytest

from privrec.core.types import UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models import sasrec  # noqa: F401  (registers "sasrec" for the component)
from privrec.models.hybrid import HybridRecommender

from .test_content import make_shop

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_SASREC = {
    "embedding_size": 16,
    "num_blocks": 1,
    "num_heads": 1,
    "max_len": 8,
    "epochs": 3,
    "batch_size": 8,
    "num_threads": 1,
}


@pytest.fixture(scope="module")
def shop() -> InteractionDataset:
    return make_shop()


@pytest.fixture(scope="module")
def model(shop: InteractionDataset) -> HybridRecommender:
    return HybridRecommender(
        cf_params={"reg": 5.0},
        sequential="sasrec",
        sequential_params=TINY_SASREC,
        content_params={"cache": False, "device": "cpu"},
    ).fit(shop, rng=3)


def test_sasrec_is_a_fitted_blended_component(model: HybridRecommender) -> None:
    assert list(model.components) == ["cf", "sequential", "content", "popularity"]
    assert model.components["sequential"].name == "sasrec"
    assert abs(sum(model.weights.values()) - 1) < 1e-9
    assert "sequential" in model.tuning["warm"]["alone"]


def test_the_order_of_the_history_reaches_sasrec(
    model: HybridRecommender, shop: InteractionDataset
) -> None:
    # fixed weights: the sequential part alone, so the hybrid's scores are SASRec's z-scores
    only_seq = HybridRecommender(
        cf_params={"reg": 5.0},
        sequential="sasrec",
        sequential_params=TINY_SASREC,
        content_params={"cache": False, "device": "cpu"},
        weights={"sequential": 1.0},
        cold_weights={"content": 1.0},
        cold_item_boost=0.0,
    ).fit(shop, rng=3)
    a = only_seq.score_histories([UserHistory.of([3, 4, 5]), UserHistory.of([5, 4, 3])])
    assert a.shape == (2, shop.n_items) and np.isfinite(a).all()
    assert not np.allclose(a[0], a[1])  # same items, other order: other scores
    # and a warm-route score of the fitted blend is finite for an ordered history
    s = model.score(UserHistory.of([3, 4, 5]))
    assert s.shape == (shop.n_items,) and np.isfinite(s).all()
