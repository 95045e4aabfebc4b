"""ALS: the request-time user vector is implicit's exact least-squares solution."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from privrec.core.types import UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.als import ALS

implicit_als = pytest.importorskip("implicit.cpu.als")


@pytest.fixture(scope="module")
def model(two_groups: InteractionDataset) -> ALS:
    return ALS(embedding_size=6, reg=0.5, alpha=3.0, epochs=8, num_threads=1, binary=False).fit(
        two_groups, rng=5
    )


def test_training_is_implicit_on_the_same_matrix(
    model: ALS, two_groups: InteractionDataset
) -> None:
    x = model.input_matrix(two_groups)
    with threadpool_limits(1, "blas"):
        ref = implicit_als.AlternatingLeastSquares(
            factors=6, regularization=0.5, alpha=3.0, iterations=8, num_threads=1, random_state=5
        )
        ref.fit(x, show_progress=False)
    np.testing.assert_array_equal(model.item_factors, ref.item_factors)


def test_user_vectors_match_implicit_recalculate_user(
    model: ALS, two_groups: InteractionDataset
) -> None:
    x = model.input_matrix(two_groups)
    ref = implicit_als.AlternatingLeastSquares(
        factors=6, regularization=0.5, alpha=3.0, num_threads=1
    )
    ref.item_factors = model.item_factors.copy()
    ref.user_factors = np.zeros((x.shape[0], 6), np.float32)
    expected = ref.recalculate_user(np.arange(x.shape[0]), x)
    got = model.user_vectors(x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_user_vector_solves_the_normal_equations(model: ALS) -> None:
    h = UserHistory.of([0, 3, 5], weights=[1.0, 5.0, 1.0])
    y = model.item_factors.astype(np.float64)
    c = 3.0 * np.array([1.0, 5.0, 1.0])
    yh = y[[0, 3, 5]]
    a = y.T @ y + 0.5 * np.eye(6) + (yh.T * (c - 1)) @ yh
    x_u = np.linalg.solve(a, yh.T @ c)
    np.testing.assert_allclose(
        model.user_vectors(model.history_matrix([h]))[0], x_u, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(model.score(h), y @ x_u, rtol=1e-4, atol=1e-5)


def test_empty_history_scores_zero(model: ALS) -> None:
    np.testing.assert_array_equal(model.score(UserHistory.of([])), 0.0)


def test_explain_contributions_add_up_to_the_score(model: ALS) -> None:
    h = UserHistory.of([0, 1, 2, 3])
    s = model.score(h)
    item = 5
    e = model.explain(h, item)
    # all contributions (positive and negative) sum to the score; explain shows the top positive
    items = np.array([0, 1, 2, 3])
    weighted = np.linalg.solve(
        model._systems(model.history_matrix([h]))[0][0], model.item_factors[item].astype(np.float64)
    )
    contrib = model.item_factors[items].astype(np.float64) @ weighted * model.config.alpha
    np.testing.assert_allclose(contrib.sum(), s[item], rtol=1e-4, atol=1e-6)
    assert e.contributors == sorted(e.contributors, key=lambda c: -c[1])
    per_entry = model.contributions(h, np.array([item]))[0]
    np.testing.assert_allclose(per_entry, contrib, rtol=1e-6, atol=1e-9)
