"""Exact unlearning: after `model.forget`, a model equals the same model trained without the user.

The conformance suite checks this for every model whose `can_forget` is True on a small shop;
here the three downdating models are pushed harder (more configs, successive erasures, reloads).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file

from privrec.core.errors import ConfigError, ValidationError
from privrec.data.dataset import InteractionDataset
from privrec.data.synthetic import generate_shop_dataset
from privrec.models.als import ALS
from privrec.models.ease import EASE
from privrec.models.itemknn import ItemKNN
from privrec.models.popularity import Popularity
from privrec.models.unlearning import UnlearningResult

TOL = 1e-6


@pytest.fixture(scope="module")
def shop() -> InteractionDataset:
    return generate_shop_dataset(n_items=200, n_users=300, seed=3)


def without(ds: InteractionDataset, users: list[int]) -> InteractionDataset:
    return ds.subset(~np.isin(ds.user_idx, users))


def only(ds: InteractionDataset, users: list[int]) -> InteractionDataset:
    """The users' events in the dataset's own item vocabulary: what `forget` takes."""
    return ds.subset(np.isin(ds.user_idx, users))


def heavy_users(ds: InteractionDataset, n: int) -> list[int]:
    """Users with the most events (their erasure changes the most)."""
    counts = np.bincount(ds.user_idx, minlength=ds.n_users)
    return [int(u) for u in np.argsort(-counts, kind="stable")[:n]]


CASES: list[tuple[type, dict[str, Any]]] = [
    (Popularity, {"binary": True}),
    (Popularity, {"binary": False}),
    (Popularity, {"binary": False, "aggregate": "sum", "by_category": True}),
    (ItemKNN, {"k": 5, "shrink": 0.0}),
    (ItemKNN, {"k": 20, "shrink": 10.0}),
    (ItemKNN, {"k": 3, "binary": False}),
    (EASE, {"reg": 10.0}),
    (EASE, {"reg": 50.0, "binary": False}),
]


def _state_diff(a: Any, b: Any) -> float:
    diffs = []
    for name in ("popularity", "gram", "similarity", "weights"):
        if hasattr(a, name):
            x, y = getattr(a, name), getattr(b, name)
            x = x.toarray() if sp.issparse(x) else np.asarray(x)
            y = y.toarray() if sp.issparse(y) else np.asarray(y)
            diffs.append(
                float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64))))
                if x.size
                else 0.0
            )
    return max(diffs)


@pytest.mark.parametrize(
    ("cls", "params"), CASES, ids=[f"{c.name}-{i}" for i, (c, _) in enumerate(CASES)]
)
@pytest.mark.parametrize("n_forget", [1, 3])
def test_forget_equals_retrain_without_the_user(
    shop: InteractionDataset, cls: type, params: dict[str, Any], n_forget: int
) -> None:
    users = heavy_users(shop, n_forget)
    model = cls(**params).fit(shop)
    res = model.forget(only(shop, users))
    assert isinstance(res, UnlearningResult) and res.model == model.name
    assert res.users == n_forget and res.items_touched > 0 and res.method.startswith("exact")
    retrained = cls(**params).fit(without(shop, users))
    assert _state_diff(model, retrained) < TOL
    x = retrained.input_matrix(shop)
    np.testing.assert_allclose(model.score_matrix(x), retrained.score_matrix(x), rtol=0, atol=1e-5)
    # the forgotten user's own history no longer reaches the model: their items get the same
    # scores as in a model that never saw them
    h = shop.history(users[0])
    np.testing.assert_allclose(model.score(h), retrained.score(h), rtol=0, atol=1e-5)


def test_forgotten_user_would_change_the_model_otherwise(shop: InteractionDataset) -> None:
    """Guard against a vacuous test: without forget, the states differ a lot."""
    users = heavy_users(shop, 1)
    for cls, params in [(ItemKNN, {"k": 5}), (EASE, {"reg": 10.0}), (Popularity, {})]:
        full = cls(**params).fit(shop)
        retrained = cls(**params).fit(without(shop, users))
        assert _state_diff(full, retrained) > 1e-3


def test_successive_ease_erasures_stay_exact(shop: InteractionDataset) -> None:
    users = heavy_users(shop, 4)
    model = EASE(reg=20.0).fit(shop)
    for u in users:
        model.forget(only(shop, [u]))
    retrained = EASE(reg=20.0).fit(without(shop, users))
    assert _state_diff(model, retrained) < TOL
    np.testing.assert_allclose(model.p_diag, retrained.p_diag, rtol=1e-6)


def test_itemknn_forget_of_a_user_who_alone_had_an_item(two_groups: InteractionDataset) -> None:
    # an item only one user touched loses its whole Gram row and column
    counts = np.bincount(two_groups.item_idx, minlength=two_groups.n_items)
    users_of = {}
    for u, i in zip(two_groups.user_idx.tolist(), two_groups.item_idx.tolist(), strict=True):
        users_of.setdefault(i, set()).add(u)
    lonely = [i for i in range(two_groups.n_items) if counts[i] and len(users_of[i]) == 1]
    user = next(iter(users_of[lonely[0]])) if lonely else heavy_users(two_groups, 1)[0]
    model = ItemKNN(k=4).fit(two_groups)
    model.forget(only(two_groups, [user]))
    retrained = ItemKNN(k=4).fit(without(two_groups, [user]))
    assert _state_diff(model, retrained) < TOL


def test_unsupported_models_refuse(shop: InteractionDataset) -> None:
    pop = Popularity(half_life_days=30.0).fit(shop)
    assert not pop.can_forget
    with pytest.raises(ConfigError, match="popularity"):
        pop.forget(only(shop, [0]))
    als = ALS(embedding_size=2, epochs=1, num_threads=1)
    assert not als.can_forget  # known before fitting: a plan needs no artifact
    als._mark_fitted(shop.n_items)
    with pytest.raises(ConfigError, match=r"^als: no exact unlearning"):
        als.forget(only(shop, [0]))


def test_forget_checks_the_vocabulary_and_handles_nothing(shop: InteractionDataset) -> None:
    model = EASE(reg=10.0).fit(shop)
    before = model.weights.copy()
    res = model.forget(only(shop, []))
    assert res.items_touched == 0 and res.users == 0
    np.testing.assert_array_equal(model.weights, before)
    other = generate_shop_dataset(n_items=50, n_users=20, seed=1)
    with pytest.raises(ValidationError, match="removed"):
        model.forget(other)


def test_ease_unlearns_after_a_reload_and_from_an_old_artifact(
    shop: InteractionDataset, tmp_path: Path
) -> None:
    """diag(P) travels with B; an artifact saved before it did gets it from G and B."""
    model = EASE(reg=15.0).fit(shop)
    users = heavy_users(shop, 2)
    expect = EASE(reg=15.0).fit(without(shop, users))
    back = EASE.load(model.save(tmp_path / "new"))
    np.testing.assert_array_equal(back.p_diag, model.p_diag)
    old = tmp_path / "old"
    model.save(old)
    arrays = load_file(str(old / "derived.safetensors"))
    save_file({"weights": arrays["weights"]}, str(old / "derived.safetensors"))  # no p_diag
    legacy = EASE.load(old)
    np.testing.assert_allclose(legacy.p_diag, model.p_diag, rtol=1e-5)
    for m in (back, legacy):
        m.forget(only(shop, users))
        assert _state_diff(m, expect) < TOL
