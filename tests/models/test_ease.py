"""EASE against the closed form computed directly with numpy."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from privrec.core.types import UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary
from privrec.models import ease as ease_module
from privrec.models.ease import EASE, ease_weights


def dataset(x: np.ndarray) -> InteractionDataset:
    u, i = np.nonzero(x)
    ev = pd.DataFrame(
        {
            "user": [f"u{a}" for a in u],
            "item": [f"i{b}" for b in i],
            "type": "rating",
            "ts": np.arange(len(u), dtype=float),
            "rating": x[u, i],
        }
    )
    return InteractionDataset.from_events(
        ev, items=Vocabulary([f"i{b}" for b in range(x.shape[1])])
    )


def steck(x: np.ndarray, reg: float) -> np.ndarray:
    g = x.T @ x
    p = np.linalg.inv(g + reg * np.eye(len(g)))
    b = np.eye(len(g)) - p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return b


def test_ease_matches_the_closed_form() -> None:
    rng = np.random.default_rng(1)
    x = (rng.random((30, 8)) < 0.4).astype(float)
    x[0, :] = 1  # every item has an event
    m = EASE(reg=2.0).fit(dataset(x))
    b = steck(x, 2.0)
    np.testing.assert_allclose(m.weights, b, rtol=1e-5, atol=1e-6)
    assert np.all(np.diag(m.weights) == 0)
    np.testing.assert_array_equal(m.gram.toarray(), x.T @ x)
    h = UserHistory.of([0, 3])
    np.testing.assert_allclose(m.score(h), b[0] + b[3], rtol=1e-5, atol=1e-6)


def test_weighted_input_uses_the_ratings() -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 6, size=(25, 6)).astype(float)
    x[0, :] = np.maximum(x[0, :], 1)
    m = EASE(reg=10.0, binary=False, use_ratings=True).fit(dataset(x))
    np.testing.assert_allclose(m.weights, steck(x, 10.0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        m.score(UserHistory.of([1, 2], weights=[5.0, 2.0])),
        steck(x, 10.0)[[1, 2]].T @ [5.0, 2.0],
        rtol=1e-5,
        atol=1e-6,
    )


def test_in_place_inverse_over_several_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    # small blocks, so the blockwise triangle copy and scaling cross block edges
    monkeypatch.setattr(ease_module, "_BLOCK", 16)
    rng = np.random.default_rng(3)
    x = (rng.random((300, 70)) < 0.1).astype(np.float32)
    g = x.T @ x
    b = ease_weights(g, 5.0)
    p = np.linalg.inv(g.astype(np.float64) + 5.0 * np.eye(70))
    ref = -p / np.diag(p)
    np.fill_diagonal(ref, 0.0)
    np.testing.assert_allclose(b, ref, rtol=1e-4, atol=1e-6)
    assert b.dtype == np.float32
    np.testing.assert_array_equal(g, x.T @ x)  # the Gram matrix is left alone


def test_explain_splits_the_score_over_the_history() -> None:
    rng = np.random.default_rng(4)
    x = (rng.random((30, 8)) < 0.5).astype(float)
    m = EASE(reg=1.0).fit(dataset(x))
    h = UserHistory.of([1, 4, 6])
    s = m.score(h)
    item = int(np.argmax(np.where(np.isin(np.arange(8), h.items), -np.inf, s)))
    e = m.explain(h, item)
    positive = m.weights[h.items, item][m.weights[h.items, item] > 0]
    np.testing.assert_allclose(
        sorted((w for _, w in e.contributors), reverse=True),
        sorted(positive, reverse=True)[:3],
        rtol=1e-6,
    )
    c = m.contributions(h, np.arange(8))
    assert c.shape == (8, 3)
    np.testing.assert_allclose(c.sum(axis=1), s, rtol=1e-5, atol=1e-6)


def test_the_one_history_score_equals_the_batched_score() -> None:
    rng = np.random.default_rng(5)
    x = (rng.random((40, 30)) < 0.3).astype(float)
    for binary in (True, False):
        m = EASE(reg=2.0, binary=binary).fit(dataset(x))
        for _ in range(10):
            n = int(rng.integers(0, 8))
            h = UserHistory.of(rng.integers(-1, 31, n), weights=rng.choice([1.0, 3.0, 5.0], n))
            batched = m.score_matrix(m.history_matrix([h]))[0]
            np.testing.assert_allclose(m.score(h), batched, rtol=1e-5, atol=1e-6)


def test_the_gram_is_saved_as_csr_and_b_as_a_derived_file(tmp_path) -> None:
    """G (the state) is CSR, small; B lies in its own file and is recomputed from G without it."""
    rng = np.random.default_rng(3)
    x = np.zeros((60, 50))
    for u in range(60):
        x[u, rng.choice(50, size=2, replace=False)] = 1.0  # two items a user: a sparse Gram matrix
    m = EASE(reg=1.0).fit(dataset(x))
    assert (
        set(m._state()) == {"gram_data", "gram_indices", "gram_indptr"}
        and m._state()["gram_data"].size == m.gram.nnz
    )
    path = m.save(tmp_path / "ease")
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json",
        "derived.safetensors",
        "state.safetensors",
    ]
    back = EASE.load(path)
    np.testing.assert_array_equal(back.gram.toarray(), m.gram.toarray())
    np.testing.assert_array_equal(back.weights, m.weights)
    (path / "derived.safetensors").unlink()  # e.g. a crash before a deferred write
    np.testing.assert_array_equal(EASE.load(path).weights, m.weights)


def test_a_deferred_derived_file_is_waited_for(tmp_path) -> None:
    """save(derived=False) leaves a marker; load waits for save_derived instead of recomputing."""
    m = EASE(reg=1.0).fit(
        dataset(np.eye(6)[[0, 1, 2, 3, 4, 5, 0, 1]] + np.eye(6)[[1, 2, 3, 4, 5, 0, 2, 3]])
    )
    path = m.save(tmp_path / "ease", derived=False)
    assert (path / "derived.pending").exists() and not (path / "derived.safetensors").exists()
    m.weights = (
        m.weights + 1.0
    )  # what the writer holds differs from what G gives: shows which was used
    writer = threading.Timer(0.3, m.save_derived, args=(path,))
    writer.start()
    back = EASE.load(path)
    writer.join()
    np.testing.assert_array_equal(back.weights, m.weights)
    assert not (path / "derived.pending").exists()
