"""Small datasets and toy models with known behaviour for the evaluation tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary
from privrec.models.base import ModelConfig, Recommender


class FixedConfig(ModelConfig):
    scores: tuple[float, ...] = ()


class FixedRanking(Recommender):
    """Every user gets the same item scores, given in the config (a known global ranking)."""

    name = "test-fixed"
    Config = FixedConfig

    def fit(self, dataset: InteractionDataset, *, rng: Any = None) -> FixedRanking:
        self._mark_fitted(dataset.n_items)
        return self

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        s = np.asarray(self.config.scores, dtype=np.float64)
        return np.broadcast_to(s, (histories.shape[0], s.shape[0]))  # read-only view on purpose

    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        pass


class CoocConfig(ModelConfig):
    beta: float = 0.0


class Cooc(Recommender):
    """Item co-occurrence scores plus beta x popularity: deterministic, history-dependent."""

    name = "test-cooc"
    Config = CoocConfig

    def fit(self, dataset: InteractionDataset, *, rng: Any = None) -> Cooc:
        x = dataset.matrix(binary=True)
        c = (x.T @ x).toarray().astype(np.float32)
        np.fill_diagonal(c, 0.0)
        self.c = c
        self.pop = np.asarray(x.sum(axis=0)).ravel().astype(np.float32)
        self._mark_fitted(dataset.n_items)
        return self

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        h = sp.csr_matrix(histories)
        h.data[:] = 1.0
        return np.asarray(h @ self.c) + np.float32(self.config.beta) * self.pop[None, :]

    def _state(self) -> dict[str, np.ndarray]:
        return {"c": self.c, "pop": self.pop}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.c, self.pop = arrays["c"], arrays["pop"]


def make_dataset(
    pairs: list[tuple[str, str]],
    *,
    items: list[str] | None = None,
    ratings: list[float] | None = None,
) -> InteractionDataset:
    """A dataset of purchase events (user, item), one second apart, in list order."""
    ev = pd.DataFrame(
        {
            "user": [u for u, _ in pairs],
            "item": [i for _, i in pairs],
            "type": "purchase" if ratings is None else "rating",
            "ts": np.arange(len(pairs), dtype=np.float64),
        }
    )
    if ratings is not None:
        ev["rating"] = ratings
    vocab = Vocabulary(items) if items is not None else None
    return InteractionDataset.from_events(ev, items=vocab)


def split_by(
    ds: InteractionDataset, test_mask: np.ndarray
) -> tuple[InteractionDataset, InteractionDataset]:
    return ds.subset(~test_mask, name="train"), ds.subset(test_mask, name="test")


@pytest.fixture()
def tiny() -> tuple[InteractionDataset, InteractionDataset]:
    """3 users, 6 items i0..i5 (index = number), train/test hand-made.

    train: u0 {i0}, u1 {i1, i2}, u2 {i5};  test: u0 {i1, i3}, u1 {i4}; u2 has no test items.
    """
    items = [f"i{j}" for j in range(6)]
    train_pairs = [("u0", "i0"), ("u1", "i1"), ("u1", "i2"), ("u2", "i5")]
    test_pairs = [("u0", "i1"), ("u0", "i3"), ("u1", "i4")]
    ds = make_dataset(train_pairs + test_pairs, items=items)
    assert ds.items.keys == items and ds.users.keys == ["u0", "u1", "u2"]
    is_test = np.zeros(ds.n_events, dtype=bool)
    # events are sorted by (user, ts): mark the test pairs by key
    keys = set(test_pairs)
    for e in range(ds.n_events):
        if (ds.users.key(ds.user_idx[e]), ds.items.key(ds.item_idx[e])) in keys:
            is_test[e] = True
    return split_by(ds, is_test)


def random_split(
    n_users: int, n_items: int, per_user: int, seed: int, test_frac: float = 0.25
) -> tuple[InteractionDataset, InteractionDataset]:
    """A random implicit dataset with a per-event random train/test split (shared vocabularies)."""
    rng = np.random.default_rng(seed)
    pop = rng.zipf(1.6, size=n_items).astype(float)
    p = pop / pop.sum()
    pairs = []
    for u in range(n_users):
        its = rng.choice(n_items, size=per_user, replace=False, p=p)
        pairs += [(f"u{u}", f"i{j}") for j in its]
    ds = make_dataset(pairs, items=[f"i{j}" for j in range(n_items)])
    return split_by(ds, rng.random(ds.n_events) < test_frac)


@pytest.fixture()
def small_random() -> tuple[InteractionDataset, InteractionDataset]:
    return random_split(80, 50, 12, seed=7)
