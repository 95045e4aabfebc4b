"""Grid search: deterministic, picks the best validation score, never looks at a test set."""

from __future__ import annotations

import numpy as np
import pytest

from privrec.evaluation import protocol as P
from privrec.evaluation.tuning import grid_search, iter_grid
from tests.evaluation.conftest import Cooc, FixedRanking, make_dataset, split_by


def test_iter_grid_order_and_validation():
    assert iter_grid({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 2, "b": "x"},
        {"a": 2, "b": "y"},
    ]
    with pytest.raises(ValueError, match="empty"):
        iter_grid({"a": []})
    with pytest.raises(ValueError, match="list"):
        iter_grid({"a": 3})
    with pytest.raises(ValueError, match="list"):
        iter_grid({"a": "abc"})


def test_grid_search_picks_best_and_is_deterministic(small_random):
    train, valid = small_random
    grid = {"beta": [0.0, 0.5, 50.0]}
    best, table = grid_search(Cooc, grid, train, valid, metric="ndcg@10", metrics=("recall@10",))
    assert list(table["beta"]) == [0.0, 0.5, 50.0]
    assert {"ndcg@10", "recall@10", "fit_seconds", "eval_seconds", "rank", "n_users"} <= set(
        table.columns
    )
    i = int(np.argmax(table["ndcg@10"].to_numpy()))
    assert best == {"beta": grid["beta"][i]}
    assert table["rank"].iloc[i] == 1
    # the table's numbers are what evaluate_ranking gives for that configuration
    ref = P.evaluate_ranking(
        Cooc(beta=best["beta"]).fit(train), train, valid, k=10, metrics=("ndcg@10",)
    )
    assert table["ndcg@10"].iloc[i] == ref["ndcg@10"]
    best2, table2 = grid_search(Cooc, grid, train, valid, metric="ndcg@10", metrics=("recall@10",))
    assert best2 == best
    cols = ["beta", "ndcg@10", "recall@10", "rank"]
    assert table2[cols].equals(table[cols])


def test_ties_go_to_the_earlier_grid_point(tiny):
    train, valid = tiny
    # the fixed ranking ignores beta-like parameters: every point scores the same
    grid = {"scores": [(6.0, 5.0, 4.0, 3.0, 2.0, 1.0), (6.0, 5.0, 4.0, 3.0, 2.0, 1.0)]}
    best, table = grid_search(FixedRanking, grid, train, valid, metric="map", k=3)
    assert best == {"scores": grid["scores"][0]}
    assert list(table["rank"]) == [1, 2]
    assert "map@3" in table.columns


def test_fixed_parameters_and_clashes(small_random):
    train, valid = small_random
    with pytest.raises(ValueError, match="fixed"):
        grid_search(Cooc, {"beta": [0.0]}, train, valid, fixed={"beta": 1.0})
    with pytest.raises(ValueError, match="protocol"):
        grid_search(Cooc, {"beta": [0.0]}, train, valid, protocol="test")


def test_rating_protocol_minimises_rmse():
    ds = make_dataset(
        [("u", "a"), ("u", "b"), ("v", "a"), ("v", "c")],
        items=["a", "b", "c"],
        ratings=[4, 2, 5, 1],
    )
    train, valid = split_by(ds, np.array([False, True, False, True]))
    # valid ratings: (u, b) = 2 and (v, c) = 1 -> constant predictions of 1.5 beat 3 and 5
    grid = {"scores": [(3.0, 3.0, 3.0), (1.5, 1.5, 1.5), (5.0, 5.0, 5.0)]}
    best, table = grid_search(FixedRanking, grid, train, valid, metric="rmse", protocol="rating")
    assert best == {"scores": (1.5, 1.5, 1.5)}
    assert list(table["rank"]) == [2, 1, 3]
    assert table["rmse"].iloc[1] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="rating protocol"):
        grid_search(FixedRanking, grid, train, valid, metric="ndcg@10", protocol="rating")


def test_loo_protocol(tiny):
    train, valid = tiny
    one = valid.subset(valid.user_idx == 1)
    best, table = grid_search(
        FixedRanking,
        {"scores": [(1.0, 2.0, 3.0, 4.0, 5.0, 6.0), (6.0, 5.0, 4.0, 3.0, 2.0, 1.0)]},
        train,
        one,
        metric="hr@2",
        protocol="loo",
    )
    # u1 (i1 i2 masked), held-out i4: ascending scores rank i5 i4 ... -> hit@2; descending i0 i3 ->
    # miss
    assert best == {"scores": (1.0, 2.0, 3.0, 4.0, 5.0, 6.0)}
    assert list(table["hr@2"]) == [1.0, 0.0]
