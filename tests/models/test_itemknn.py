"""Item-kNN: cosine similarities, shrinkage, top-k pruning and Sarwar's weighted average."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from privrec.core.types import EVENT_CODE, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary
from privrec.models.itemknn import ItemKNN, cosine_topk

# users x items: u0 = {0, 1}, u1 = {0, 2}, u2 = {0, 1, 2}
X = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1]], dtype=float)


def dataset(x: np.ndarray, *, ratings: bool = False) -> InteractionDataset:
    u, i = np.nonzero(x)
    ev = pd.DataFrame(
        {
            "user": [f"u{a}" for a in u],
            "item": [f"i{b}" for b in i],
            "ts": np.arange(len(u), dtype=float),
        }
    )
    ev["type"] = "rating" if ratings else "view"
    ev["rating"] = x[u, i]
    return InteractionDataset.from_events(
        ev, items=Vocabulary([f"i{b}" for b in range(x.shape[1])])
    )


def test_cosine_by_hand() -> None:
    m = ItemKNN(k=10).fit(dataset(X))
    s = m.similarity.toarray()
    c01 = 2 / np.sqrt(3 * 2)  # co-occurrence 2, norms sqrt(3), sqrt(2)
    c12 = 1 / np.sqrt(2 * 2)
    expected = np.array([[0, c01, c01], [c01, 0, c12], [c01, c12, 0]])
    np.testing.assert_allclose(s, expected, rtol=1e-6)
    np.testing.assert_array_equal(m.gram.toarray(), X.T @ X)
    np.testing.assert_allclose(m.item_norms, np.sqrt([3, 2, 2]))
    # a history {1}: item 0 gets sim(0, 1), item 2 gets sim(2, 1)
    np.testing.assert_allclose(m.score(UserHistory.of([1])), [c01, 0, c12], rtol=1e-6)


def test_shrinkage_damps_similarities() -> None:
    m = ItemKNN(k=10, shrink=1.0).fit(dataset(X))
    np.testing.assert_allclose(m.similarity[0, 1], 2 / (np.sqrt(6) + 1), rtol=1e-6)


def test_top_k_keeps_the_most_similar_neighbours() -> None:
    m = ItemKNN(k=1).fit(dataset(X))
    s = m.similarity.toarray()
    assert (np.count_nonzero(s, axis=1) == 1).all()
    # item 1: neighbour 0 (0.816) beats 2 (0.5); item 0: a tie between 1 and 2, the lower index wins
    assert s[1].argmax() == 0 and s[0].argmax() == 1


def test_cosine_topk_on_a_random_matrix_matches_dense() -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((50, 30)) < 0.2).astype(float)
    g = x.T @ x
    top = cosine_topk(sp.csr_matrix(g), k=5, shrink=2.0).toarray()
    n = np.sqrt(np.diag(g))
    dense = g / (np.outer(n, n) + 2.0)
    np.fill_diagonal(dense, 0)
    for i in range(30):
        keep = np.nonzero(top[i])[0]
        assert len(keep) == min(5, np.count_nonzero(dense[i]))
        np.testing.assert_allclose(top[i, keep], dense[i, keep], rtol=1e-6)
        assert top[i, keep].min() >= np.sort(dense[i])[-5] - 1e-6


def test_sarwar_weighted_average_predicts_ratings() -> None:
    ratings = np.array([[5, 3, 0], [4, 0, 2], [1, 4, 4]], dtype=float)
    d = dataset(ratings, ratings=True)
    m = ItemKNN(k=10, binary=False, use_ratings=True, formula="weighted_average").fit(d)
    s = m.similarity.toarray()
    h = UserHistory.of([1, 2], weights=[4.0, 2.0])
    pred = m.score(h)
    expected0 = (s[0, 1] * 4 + s[0, 2] * 2) / (abs(s[0, 1]) + abs(s[0, 2]))
    np.testing.assert_allclose(pred[0], expected0, rtol=1e-6)
    # an item whose only neighbour the user rated is that neighbour's rating
    np.testing.assert_allclose(m.score(UserHistory.of([1], weights=[4.0]))[2], 4.0, rtol=1e-6)
    # the weighted cosine uses the ratings
    x = ratings
    np.testing.assert_allclose(
        s[0, 1], x[:, 0] @ x[:, 1] / np.linalg.norm(x[:, 0]) / np.linalg.norm(x[:, 1]), rtol=1e-6
    )


def test_explain_names_the_contributing_history_items() -> None:
    m = ItemKNN(k=10).fit(dataset(X))
    h = UserHistory(
        items=np.array([1, 2]),
        event_types=np.array([EVENT_CODE["purchase"], EVENT_CODE["view"]], dtype=np.int8),
    )
    e = m.explain(h, 0)
    assert e.kind == "history"
    assert [c for c, _ in e.contributors] == [1, 2]
    np.testing.assert_allclose(
        [w for _, w in e.contributors], [2 / np.sqrt(6), 2 / np.sqrt(6)], rtol=1e-6
    )
    assert e.actions == {1: "purchase", 2: "view"}
    np.testing.assert_allclose(sum(w for _, w in e.contributors), m.score(h)[0], rtol=1e-6)


def test_contributions_are_per_history_entry_and_add_up() -> None:
    for params in ({"k": 10}, {"k": 1}, {"k": 10, "binary": False}):
        m = ItemKNN(**params).fit(dataset(X))
        h = UserHistory.of([1, 2, 1, 7], weights=[1.0, 3.0, 4.0, 1.0])  # item 7 is unknown
        c = m.contributions(h, np.array([0, 1, 2]))
        assert c.shape == (3, 4)
        assert c[:, 0].tolist() == [0.0] * 3 and c[:, 3].tolist() == [0.0] * 3  # only the strongest
        np.testing.assert_allclose(c.sum(axis=1), m.score(h)[[0, 1, 2]], rtol=1e-6, atol=1e-7)


def test_the_one_history_score_equals_the_batched_score() -> None:
    from privrec.data.synthetic import generate_shop_dataset

    ds = generate_shop_dataset(n_items=120, n_users=80, seed=3)
    rng = np.random.default_rng(0)
    for params in ({"k": 20}, {"k": 20, "binary": False}, {"k": 5, "shrink": 3.0}):
        m = ItemKNN(**params).fit(ds)
        for _ in range(10):
            n = int(rng.integers(0, 12))
            h = UserHistory.of(rng.integers(-1, 121, n), weights=rng.choice([1.0, 3.0, 5.0], n))
            batched = m.score_matrix(m.history_matrix([h]))[0]
            np.testing.assert_allclose(m.score(h), batched, rtol=1e-5, atol=1e-6)
