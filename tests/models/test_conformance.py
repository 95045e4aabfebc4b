"""The model contract, checked for every registered model on a small synthetic shop.

Every registered model is fitted (`ledger=None` given explicitly) and checked for: recommending
each group's own items, serving a brand-new user from their history, scores and their batched
form, seeds, a save/load round trip with identical scores and no pickle, config validation,
refusal before fitting, `explain`, `contributions` adding up to the score they claim, and exact
forgetting (`forget` equals a retrain without the users) wherever `can_forget` is True.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from privrec.core.errors import ConfigError, NotFittedError
from privrec.core.types import Explanation, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.base import Recommender, model_class
from privrec.models.zoo import available_models, create_model

from .conftest import group_items, removed_dataset

# Small, fast settings per model for the synthetic data; models not listed use their defaults.
FAST_PARAMS: dict[str, dict[str, Any]] = {
    "popularity": {"by_category": True},
    "itemknn": {"k": 10},
    "ease": {"reg": 5.0},
    "als": {
        "embedding_size": 2,
        "reg": 1.0,
        "alpha": 5.0,
        "epochs": 10,
        "num_threads": 1,
    },  # rank 2 = the groups
    "bpr": {"embedding_size": 16, "epochs": 40, "batch_size": 32, "learning_rate": 0.02},
    "apr": {
        "embedding_size": 16,
        "epochs": 40,
        "batch_size": 32,
        "learning_rate": 0.02,
        "eps": 0.1,
        "adv_start_epoch": 10,
    },
    "sasrec": {
        "embedding_size": 16,
        "num_blocks": 1,
        "epochs": 30,
        "batch_size": 16,
        "learning_rate": 0.01,
        "num_threads": 1,
    },
    "bert4rec": {
        "embedding_size": 16,
        "num_blocks": 1,
        "epochs": 30,
        "batch_size": 16,
        "learning_rate": 0.01,
        "num_threads": 1,
    },
    "content": {"cache": False},  # no on-disk embedding cache in tests
    "hybrid": {"cf_params": {"reg": 5.0}, "content_params": {"cache": False}},
    # The contract is checked without noise here; the DP tests check the noise itself.
    "dp_popularity": {"epsilon": float("inf")},
    "dp_itemknn": {"k": 10, "epsilon": float("inf")},
    "dp_ease": {"reg": 5.0, "epsilon": float("inf")},
    "dp_ease_prior": {"reg": 5.0, "epsilon": float("inf"), "content_params": {"cache": False}},
    "dp_als": {"embedding_size": 4, "epochs": 6, "epsilon": float("inf")},
    "dp_bpr": {"epochs": 60, "sample_rate": 1.0, "epsilon": float("inf")},
    "dp_hybrid": {
        "epsilon": float("inf"),
        "cf_params": {"k": 10},
        "content_params": {"cache": False},
    },
    "dp_textknn": {"epsilon": float("inf"), "neighbours": 10, "content_params": {"cache": False}},
    "dp_sasrec": {
        "embedding_size": 16,
        "epochs": 100,
        "sample_rate": 0.5,
        "learning_rate": 0.005,
        "dropout": 0.2,
        "num_threads": 1,
        "epsilon": float("inf"),
    },
}
# Global (non-personalised) models: the per-user group tests do not apply to them.
NON_PERSONALISED = {"dp_popularity"}
# Models whose score is a sum over history entries: `contributions` must not be None for them.
ATTRIBUTABLE = {"itemknn", "ease", "als", "content", "bpr", "apr"}
# Models that unlearn exactly (in their FAST_PARAMS configuration).
FORGETTING = {"popularity", "itemknn", "ease", "content"}
MODELS = available_models()
# Users erased in the forgetting test: two of group A (one heavy, one light) and one of group B.
FORGOTTEN = [0, 7, 25]


def build(name: str, **extra: Any) -> Recommender:
    return create_model(name, **{**FAST_PARAMS.get(name, {}), **extra})


@pytest.fixture(scope="module", params=MODELS)
def fitted(request: pytest.FixtureRequest, two_groups: InteractionDataset) -> Recommender:
    return build(request.param).fit(two_groups, rng=7, ledger=None)


def test_the_zoo_has_the_classic_models() -> None:
    assert {"popularity", "itemknn", "ease", "als", "bpr"} <= set(MODELS)


@pytest.mark.parametrize("group", [0, 1])
def test_users_get_items_of_their_own_group(
    fitted: Recommender, two_groups: InteractionDataset, group: int
) -> None:
    if fitted.name in NON_PERSONALISED:
        pytest.skip(f"{fitted.name} is non-personalised by design")
    own = set(group_items(group).tolist())
    users = [u for u in range(two_groups.n_users) if two_groups.users.keys[u][1] == "ab"[group]]
    hits = 0
    for u in users:
        items, _ = fitted.recommend(two_groups.history(u), k=3)
        hits += sum(int(i) in own for i in items)
    assert hits == 3 * len(users)


@pytest.mark.parametrize("group", [0, 1])
def test_a_brand_new_user_is_served_from_their_history(fitted: Recommender, group: int) -> None:
    if fitted.name in NON_PERSONALISED:
        pytest.skip(f"{fitted.name} is non-personalised by design")
    own = group_items(group)
    history = UserHistory.of(own[[0, 2]])
    items, _ = fitted.recommend(history, k=3)
    assert len(items) == 3
    assert set(items.tolist()) <= set(own.tolist())
    assert not set(items.tolist()) & set(history.items.tolist())


def test_recommend_excludes_history_and_sorts(
    fitted: Recommender, two_groups: InteractionDataset
) -> None:
    h = two_groups.history(0)
    items, scores = fitted.recommend(h, k=5)
    assert len(items) == 5 and len(set(items.tolist())) == 5
    assert not set(items.tolist()) & set(h.items.tolist())
    assert np.all(np.diff(scores) <= 0)
    assert items.dtype == np.int64
    extra = fitted.recommend(h, k=5, exclude=items[:2])[0]
    assert not set(extra.tolist()) & set(items[:2].tolist())


def test_score_shapes_and_dtype(fitted: Recommender, two_groups: InteractionDataset) -> None:
    s = fitted.score(two_groups.history(1))
    assert s.shape == (two_groups.n_items,) and s.dtype == np.float32 and np.isfinite(s).all()
    part = fitted.score(two_groups.history(1), items=np.array([3, 1]))
    np.testing.assert_array_equal(part, s[[3, 1]])
    empty = fitted.score(UserHistory.of([]))
    assert empty.shape == (two_groups.n_items,) and np.isfinite(empty).all()


def test_score_matrix_equals_rowwise_score(
    fitted: Recommender, two_groups: InteractionDataset
) -> None:
    histories = [two_groups.history(u) for u in range(two_groups.n_users)] + [
        UserHistory.of([]),
        UserHistory.of([5]),
    ]
    batch = fitted.score_matrix(fitted.history_matrix(histories))
    assert batch.shape == (len(histories), two_groups.n_items) and batch.dtype == np.float32
    rows = np.stack([fitted.score(h) for h in histories])
    np.testing.assert_allclose(batch, rows, rtol=1e-5, atol=1e-6)


def test_input_matrix_rows_are_valid_histories(
    fitted: Recommender, two_groups: InteractionDataset
) -> None:
    x = fitted.input_matrix(two_groups)
    assert x.shape == (two_groups.n_users, two_groups.n_items)
    assert fitted.score_matrix(x[:4]).shape == (4, two_groups.n_items)


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_scores(name: str, two_groups: InteractionDataset) -> None:
    x = two_groups.matrix()[:10]
    a = build(name).fit(two_groups, rng=3).score_matrix(x)
    b = build(name).fit(two_groups, rng=3).score_matrix(x)
    np.testing.assert_array_equal(a, b)


def test_save_load_round_trip_without_pickle(
    fitted: Recommender, two_groups: InteractionDataset, tmp_path: Path
) -> None:
    x = two_groups.matrix()
    fitted.save(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == [
        "config.json",
        *(["derived.safetensors"] if fitted._derived() else []),
        "state.safetensors",
    ]
    for p in (tmp_path / "m").iterdir():
        assert not p.read_bytes().startswith(b"\x80"), f"{p.name} looks like a pickle"
    loaded = Recommender.load(tmp_path / "m")
    assert type(loaded) is type(fitted) and loaded.config == fitted.config
    np.testing.assert_array_equal(loaded.score_matrix(x), fitted.score_matrix(x))
    h = two_groups.history(2)
    np.testing.assert_array_equal(loaded.score(h), fitted.score(h))
    np.testing.assert_array_equal(loaded.recommend(h, k=5)[0], fitted.recommend(h, k=5)[0])
    assert loaded.can_forget == fitted.can_forget
    assert type(fitted).load(tmp_path / "m").n_items == fitted.n_items


@pytest.mark.parametrize("name", MODELS)
def test_config_rejects_unknown_fields(name: str) -> None:
    with pytest.raises(ConfigError, match="no_such_field"):
        create_model(name, no_such_field=1)


@pytest.mark.parametrize("name", MODELS)
def test_unfitted_model_refuses(name: str, tmp_path: Path) -> None:
    model = build(name)
    with pytest.raises(NotFittedError):
        model.score(UserHistory.of([1]))
    with pytest.raises(NotFittedError):
        model.recommend(UserHistory.of([1]))
    with pytest.raises(NotFittedError):
        model.save(tmp_path / "m")


def test_explain_names_the_item(fitted: Recommender, two_groups: InteractionDataset) -> None:
    h = two_groups.history(0)
    item = int(fitted.recommend(h, k=1)[0][0])
    e = fitted.explain(h, item)
    assert isinstance(e, Explanation) and e.item == item and e.text
    assert {c for c, _ in e.contributors} <= set(h.items.tolist())
    if e.kind == "history":
        weights = [w for _, w in e.contributors]
        assert weights == sorted(weights, reverse=True) and all(w > 0 for w in weights)


# ---- fit(..., ledger=) -------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_fit_takes_an_optional_ledger(name: str) -> None:
    """Every model's `fit` has the contract's keyword-only `ledger=None` (DP models charge it);
    the `fitted` fixture passes `ledger=None` to every model."""
    param = inspect.signature(model_class(name).fit).parameters.get("ledger")
    assert param is not None, f"{name}.fit has no ledger parameter"
    assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is None


# ---- contributions -----------------------------------------------------------------------------
def _histories(ds: InteractionDataset) -> list[UserHistory]:
    """Histories that exercise attribution: typed and weighted, with a repeated item (a stronger
    event later), an unknown item index, and a single item."""
    h = ds.history(3)
    rep = UserHistory(
        items=np.concatenate([h.items, h.items[:1], [ds.n_items + 5]]),
        weights=np.concatenate([h.weights, [9.0], [1.0]]).astype(np.float32),
        event_types=np.concatenate([h.event_types, h.event_types[:1], [0]]).astype(np.int8),
    )
    return [ds.history(0), ds.history(30), rep, UserHistory.of([14])]


def test_contributions_add_up_to_the_score_they_claim(
    fitted: Recommender, two_groups: InteractionDataset
) -> None:
    """Each row sums to score(history) - score(empty history) for that item."""
    items = np.arange(two_groups.n_items)
    base = fitted.score(UserHistory.of([])).astype(np.float64)
    shares = [(h, fitted.contributions(h, items)) for h in _histories(two_groups)]
    if fitted.name in ATTRIBUTABLE:
        assert all(c is not None for _, c in shares), f"{fitted.name} stopped attributing"
    if all(c is None for _, c in shares):
        pytest.skip(f"{fitted.name}: its score is no sum over history entries (None)")
    for h, c in shares:
        if c is None:
            continue
        assert c.shape == (len(items), len(h)) and np.isfinite(c).all()
        s = fitted.score(h).astype(np.float64)
        scale = max(float(np.abs(s).max()), 1e-3)
        np.testing.assert_allclose(c.sum(axis=1), s - base, rtol=1e-4, atol=1e-5 * scale)
        # asking for some items gives their rows
        np.testing.assert_allclose(fitted.contributions(h, items[[6, 2]]), c[[6, 2]], atol=1e-9)
        # an out-of-catalogue entry gets no share
        unknown = (h.items < 0) | (h.items >= two_groups.n_items)
        assert not c[:, unknown].any()
        # explain shows the largest positive shares, summed per history item
        item = int(np.argmax(np.where(np.isin(items, h.items), -np.inf, s)))
        e = fitted.explain(h, item)
        per_item: dict[int, float] = {}
        for j, v in zip(h.items.tolist(), c[item].tolist(), strict=True):
            per_item[j] = per_item.get(j, 0.0) + v
        for j, w in e.contributors:
            np.testing.assert_allclose(w, per_item[j], rtol=1e-4, atol=1e-6)


# ---- exact forgetting --------------------------------------------------------------------------
def _assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray], what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        assert a[key].shape == b[key].shape, f"{what} {key}: shape {a[key].shape} != {b[key].shape}"
        np.testing.assert_allclose(
            a[key].astype(np.float64),
            b[key].astype(np.float64),
            rtol=1e-5,
            atol=1e-5,
            err_msg=f"{what} {key}",
        )


@pytest.mark.parametrize("name", MODELS)
def test_forget_equals_a_retrain_without_the_users(
    name: str, two_groups: InteractionDataset
) -> None:
    model = build(name)
    assert model.can_forget == (name in FORGETTING), f"{name}.can_forget changed"
    if not model.can_forget:
        model.fit(two_groups, rng=7)
        with pytest.raises(ConfigError, match=name):
            model.forget(removed_dataset(two_groups, FORGOTTEN))
        return
    model.fit(two_groups, rng=7)
    before = {k: v.copy() for k, v in model._state().items()}
    res = model.forget(removed_dataset(two_groups, FORGOTTEN))
    assert res.model == name and res.method.startswith("exact")
    assert res.users == len(FORGOTTEN)
    keep = ~np.isin(two_groups.user_idx, FORGOTTEN)
    retrained = build(name).fit(two_groups.subset(keep), rng=7)
    _assert_same_arrays(model._state(), retrained._state(), f"{name} state")
    _assert_same_arrays(model._derived(), retrained._derived(), f"{name} derived")
    assert model._meta() == retrained._meta()
    if res.items_touched:  # not vacuous: the users were in the model before
        changed = any(
            before[k].shape != v.shape or not np.allclose(before[k], v)
            for k, v in retrained._state().items()
        )
        assert changed, f"{name}: the erased users left no trace to remove"
    x = retrained.input_matrix(two_groups)
    np.testing.assert_allclose(model.score_matrix(x), retrained.score_matrix(x), atol=1e-5)
    for u in range(two_groups.n_users):  # the erased users' own histories included
        h = two_groups.history(u)
        np.testing.assert_array_equal(model.recommend(h, k=5)[0], retrained.recommend(h, k=5)[0])
