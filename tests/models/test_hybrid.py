"""The hybrid: fitted weights, explicit cold-start routes, optional components, save/load."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from privrec.core.errors import ConfigError
from privrec.core.types import UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.base import Recommender
from privrec.models.hybrid import HybridRecommender
from privrec.models.hybrid_blend import zscore

from .test_content import GROUPS, NEW_ITEM, make_shop

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

FAST = {"cf_params": {"reg": 5.0}, "content_params": {"cache": False, "device": "cpu"}}


@pytest.fixture(scope="module")
def shop() -> InteractionDataset:
    return make_shop()


@pytest.fixture(scope="module")
def hybrid(shop: InteractionDataset) -> HybridRecommender:
    return HybridRecommender(**FAST).fit(shop, rng=1)


def test_weights_are_fitted_on_validation(hybrid: HybridRecommender) -> None:
    assert set(hybrid.weights) == {"cf", "content", "popularity"}
    assert set(hybrid.cold_weights) == {"content", "popularity"}
    assert (
        abs(sum(hybrid.weights.values()) - 1) < 1e-9
        and abs(sum(hybrid.cold_weights.values()) - 1) < 1e-9
    )
    warm, cold = hybrid.tuning["warm"], hybrid.tuning["cold"]
    assert warm["users"] > 0 and cold["users"] > 0
    assert set(cold["alone"]) == {"cf", "content", "popularity"}  # CF reported on new users too
    # the search starts from equal weights and only keeps improvements; on this shop it does at
    # least as well as popularity alone
    assert warm["ndcg@10"] >= warm["alone"]["popularity"]
    assert cold["ndcg@10"] >= cold["alone"]["popularity"]


def test_the_new_item_boost_is_fitted_on_pseudo_new_items(hybrid: HybridRecommender) -> None:
    info = hybrid.tuning["warm"]["new_item_boost"]
    assert (
        info["boost"] == hybrid.item_boost and info["boost"] in hybrid.config.cold_item_boost_grid
    )
    assert info["ndcg@10"] >= info["ndcg@10_no_boost"] and info["pseudo_new_items"] >= 1


@pytest.mark.parametrize("n", [0, 1, 2])
def test_new_users_take_the_cold_route(hybrid: HybridRecommender, n: int) -> None:
    h = UserHistory.of(GROUPS[1][:n])
    assert hybrid.route_for(h) == "cold_user"
    res = hybrid.recommend_with_route(h, k=3)
    assert res.route == "cold_user" and set(res.item_routes) == {"cold_user"}
    assert res.weights == hybrid.cold_weights
    e = hybrid.explain(h, int(res.items[0]))
    assert e.kind == "cold_user" and e.text.startswith("new here")


def test_cold_route_uses_only_content_and_popularity(
    hybrid: HybridRecommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("the CF component was consulted for a new user")

    h = UserHistory.of([3, 4])
    rows = hybrid.history_matrix([h])
    content = zscore(hybrid.components["content"].score_matrix(rows))
    popularity = zscore(np.log1p(1000 * hybrid.components["popularity"].score_matrix(rows)))
    popularity[:, hybrid.item_events == 0] = 0.0  # popularity is neutral on new items
    expected = (
        hybrid.cold_weights["content"] * content + hybrid.cold_weights["popularity"] * popularity
    )
    monkeypatch.setattr(hybrid.components["cf"], "score_matrix", refuse)
    got = hybrid.score(h)
    np.testing.assert_allclose(got, expected[0], rtol=1e-5, atol=1e-5)
    assert set(hybrid.recommend(h, k=2)[0].tolist()) <= set(GROUPS[1]) | {NEW_ITEM}


def test_warm_users_use_every_component(hybrid: HybridRecommender) -> None:
    h = UserHistory.of([6, 7, 6, 7])
    assert hybrid.route_for(h) == "cold_user"  # four events, two distinct items
    warm = UserHistory.of([0, 1, 2, 10])
    assert hybrid.route_for(warm) == "warm"
    res = hybrid.recommend_with_route(warm, k=2, exclude_history=False)
    assert res.route == "warm" and res.weights == hybrid.weights


def test_new_items_are_routed_and_explained(
    hybrid: HybridRecommender, shop: InteractionDataset
) -> None:
    warm = UserHistory.of([0, 1, 2, 10])
    assert hybrid.is_new_item(NEW_ITEM) and not hybrid.is_new_item(0)
    assert hybrid.route_for(warm, NEW_ITEM) == "cold_item-boost"
    e = hybrid.explain(warm, NEW_ITEM)
    assert e.kind == "cold_item" and e.text.startswith("new in the shop")
    assert {c for c, _ in e.contributors} <= set(warm.items.tolist())
    boosted = HybridRecommender(
        **FAST, weights=hybrid.weights, cold_weights=hybrid.cold_weights, cold_item_boost=10.0
    ).fit(shop)
    res = boosted.recommend_with_route(warm, k=1)
    assert res.items[0] == NEW_ITEM and res.item_routes == ["cold_item-boost"]


def test_fixed_weights_skip_the_search(shop: InteractionDataset) -> None:
    m = HybridRecommender(
        **FAST, weights={"cf": 3.0, "content": 1.0}, cold_weights={"popularity": 1.0}
    ).fit(shop)
    assert m.weights == {"cf": 0.75, "content": 0.25, "popularity": 0.0}
    assert m.cold_weights == {"content": 0.0, "popularity": 1.0}
    assert m.tuning["fixed"] is True and m.item_boost == 0.0


def test_an_optional_sequential_component_sees_the_order(shop: InteractionDataset) -> None:
    m = HybridRecommender(**FAST, sequential="itemknn", sequential_params={"k": 5}).fit(shop)
    assert list(m.components) == ["cf", "sequential", "content", "popularity"]
    assert "sequential" in m.weights
    s = m.score(UserHistory.of([3, 4, 5]))
    assert s.shape == (shop.n_items,) and np.isfinite(s).all()


def test_the_cold_route_can_include_cf(shop: InteractionDataset) -> None:
    m = HybridRecommender(**FAST, cold_components=("cf", "content", "popularity")).fit(shop)
    assert set(m.cold_weights) == {"cf", "content", "popularity"}
    assert m.recommend_with_route(UserHistory.of([3]), k=2).weights == m.cold_weights


def test_bad_component_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="no_such_model"):
        HybridRecommender(cf="no_such_model")
    with pytest.raises(ConfigError, match="sequential"):
        HybridRecommender(weights={"sequential": 1.0})
    with pytest.raises(ConfigError, match="cold route"):
        HybridRecommender(cold_weights={"cf": 1.0})
    with pytest.raises(ConfigError, match="cold_components"):
        HybridRecommender(cf=None, cold_components=("cf", "content"))


def test_save_load_round_trip(
    hybrid: HybridRecommender, shop: InteractionDataset, tmp_path: Path
) -> None:
    hybrid.save(tmp_path / "h")
    derived = ["derived.safetensors"] if hybrid._derived() else []  # an EASE component's B
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == [
        "config.json",
        *derived,
        "state.safetensors",
    ]
    loaded = Recommender.load(tmp_path / "h")
    assert isinstance(loaded, HybridRecommender)
    assert loaded.weights == hybrid.weights and loaded.cold_weights == hybrid.cold_weights
    assert loaded.item_boost == hybrid.item_boost
    assert list(loaded.components) == list(hybrid.components)
    x = hybrid.input_matrix(shop)
    np.testing.assert_array_equal(loaded.score_matrix(x), hybrid.score_matrix(x))
    for h in (UserHistory.of([3]), UserHistory.of([0, 1, 2, 10])):
        assert loaded.route_for(h) == hybrid.route_for(h)
        assert loaded.explain(h, NEW_ITEM).text == hybrid.explain(h, NEW_ITEM).text
    np.testing.assert_array_equal(loaded.item_events, hybrid.item_events)
