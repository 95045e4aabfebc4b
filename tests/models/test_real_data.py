"""Real-data sanity: on MovieLens-100K, EASE beats popularity on a random split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from privrec.data.dataset import InteractionDataset
from privrec.models.base import Recommender, top_k_rows
from privrec.models.ease import EASE
from privrec.models.popularity import Popularity
from tests.conftest import need


def movielens(shared_data: Path) -> InteractionDataset:
    path = need(shared_data / "movielens-100k" / "u.data")
    df = pd.read_csv(path, sep="\t", names=["user", "item", "rating", "ts"])
    df["type"] = "rating"
    return InteractionDataset.from_events(df, name="ml-100k")


def recall_at(
    model: Recommender, train: InteractionDataset, test: InteractionDataset, k: int = 10
) -> float:
    truth = test.matrix(binary=True)
    users = np.nonzero(np.diff(truth.indptr))[0]
    hist = model.input_matrix(train)[users]
    scores = model.score_matrix(hist)
    scores[hist.nonzero()] = -np.inf
    top = top_k_rows(scores, k)
    t = truth[users]
    hits = np.asarray(t[np.arange(len(users))[:, None], top].sum(axis=1)).ravel()
    return float(np.mean(hits / np.minimum(k, np.diff(t.indptr))))


@pytest.mark.slow
def test_ease_beats_popularity_on_movielens(shared_data: Path) -> None:
    data = movielens(shared_data)
    test_mask = np.random.default_rng(0).random(data.n_events) < 0.2
    train, test = data.subset(~test_mask), data.subset(test_mask)
    pop = recall_at(Popularity(binary=True).fit(train), train, test)
    ease = recall_at(EASE().fit(train), train, test)
    assert 0.05 < pop < ease
    assert ease > 1.3 * pop
