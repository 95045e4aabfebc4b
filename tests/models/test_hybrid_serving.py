"""Serving the hybrid per request (`models/hybrid_serving.py`): candidate scores equal full
scores, the request's explanations equal the uncached ones, the content moments are exact."""

from __future__ import annotations

import os

import numpy as np
import pytest

from privrec.core.types import EVENT_CODE, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models import sasrec  # noqa: F401  (registers "sasrec" for the component)
from privrec.models.hybrid import HybridRecommender
from privrec.models.hybrid_blend import zscore
from privrec.models.hybrid_serving import LinearScores, history_row

from .test_content import make_shop

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_SASREC = {
    "embedding_size": 16,
    "num_blocks": 1,
    "num_heads": 1,
    "max_len": 8,
    "epochs": 2,
    "batch_size": 8,
    "num_threads": 1,
}
WEIGHTS = {"cf": 0.2, "sequential": 0.3, "content": 0.3, "popularity": 0.2}


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
        weights=WEIGHTS,
        cold_weights={"content": 0.8, "popularity": 0.2},
        cold_item_boost=0.5,
    ).fit(shop, rng=3)


def histories(shop: InteractionDataset) -> list[UserHistory]:
    seqs = shop.sequences()
    out = [UserHistory.of(s) for s in seqs[:12]]
    # event types and weights, a repeat, a cold user, an empty history
    purchase, view = EVENT_CODE["purchase"], EVENT_CODE["view"]
    out.append(
        UserHistory(
            items=np.array([1, 2, 1, 5], np.int64),
            weights=np.array([1.0, 3.0, 0.5, 1.0], np.float32),
            event_types=np.array([view, purchase, view, view], np.int8),
        )
    )
    out += [UserHistory.of([4]), UserHistory.of([])]
    return out


def with_candidates(model: HybridRecommender, n: int | None) -> HybridRecommender:
    model.config = model.config.model_copy(update={"candidates": n})
    model.reset_serving()
    return model


def explained(model: HybridRecommender, h: UserHistory, items: np.ndarray) -> list[tuple]:
    out = []
    for i in items.tolist():
        e = model.explain(h, int(i))
        out.append((e.kind, e.text, [c for c, _ in e.contributors], [v for _, v in e.contributors]))
    return out


def same(a: list[tuple], b: list[tuple]) -> None:
    assert [x[:3] for x in a] == [x[:3] for x in b]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x[3], y[3], rtol=1e-4, atol=1e-6)


def test_history_row_equals_the_content_models_matrix(
    model: HybridRecommender, shop: InteractionDataset
) -> None:
    for h in histories(shop):
        a = history_row(model.content, h)
        b = model.content.history_matrix([h])
        assert (a != b).nnz == 0 and a.shape == b.shape


def test_without_candidates_the_serving_score_is_the_evaluation_score(
    model: HybridRecommender, shop: InteractionDataset
) -> None:
    with_candidates(model, None)
    for h in histories(shop):
        # what `score` returned before serving views: the one-row evaluation path
        np.testing.assert_array_equal(model.score(h), model.score_histories([h])[0])


@pytest.mark.parametrize("n", [None, 2, 4])
def test_explanations_of_a_scored_request_equal_the_uncached_ones(
    model: HybridRecommender, shop: InteractionDataset, n: int | None
) -> None:
    with_candidates(model, n)
    for h in histories(shop):
        s = model.score(h).astype(np.float64)
        top = np.argsort(-s, kind="stable")[:5]
        cached = explained(model, h, top)  # the view of `h` is this thread's latest
        assert model._views.get(h) is not None
        model._views.clear()
        same(cached, explained(model, h, top))  # each explanation scores again
    with_candidates(model, None)


def test_candidates_get_their_full_scores_and_the_rest_ranks_below(
    model: HybridRecommender, shop: InteractionDataset
) -> None:
    for h in histories(shop):
        full = with_candidates(model, None).score(h)
        s = with_candidates(model, 2).score(h)
        view = model._views.get(h)
        assert view is not None and view.candidates is not None
        cand = view.candidates
        np.testing.assert_allclose(s[cand], full[cand], rtol=1e-5, atol=1e-5)
        others = np.setdiff1d(np.arange(model.n_items), cand)
        if len(others):
            assert s[others].max() < s[cand].min()
        # every component's top-2 (over all items) is among the candidates
        assert len(cand) >= min(2, model.n_items)
    with_candidates(model, None)


def test_enough_candidates_reproduce_the_full_ranking(
    model: HybridRecommender, shop: InteractionDataset
) -> None:
    for h in histories(shop):
        full = with_candidates(model, None).score(h)
        s = with_candidates(model, model.n_items).score(h)
        np.testing.assert_allclose(s, full, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(
            np.argsort(-s, kind="stable")[:5], np.argsort(-full, kind="stable")[:5]
        )
    with_candidates(model, None)


def test_linear_scores_moments_and_graph() -> None:
    rng = np.random.default_rng(0)
    e = rng.normal(size=(600, 16)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    lin = LinearScores(e, ann=True)
    exact = LinearScores(e, ann=False)
    recall = []
    for _ in range(20):
        v = rng.normal(size=16).astype(np.float32)
        full = e @ v
        z_full = zscore(full[None, :])[0]
        items = np.arange(600)
        np.testing.assert_allclose(lin.z(v, items, lin.stats(v)), z_full, rtol=1e-4, atol=1e-4)
        want = set(np.argsort(-full)[:20].tolist())
        assert set(exact.nearest(v, 20).tolist()) == want
        recall.append(len(want & set(lin.nearest(v, 20).tolist())) / 20)
    assert lin.index() is not None and np.mean(recall) >= 0.9
    assert lin.nearest(np.zeros(16, np.float32), 5).size == 0
