"""The main job's search measure: labelled leaf queries and their ranking metrics."""

from __future__ import annotations

import math

import pytest

from privrec.evaluation.showcase_report import leaf_queries, misspelt, search_metrics


def test_leaf_queries_name_each_leaf_and_a_typo_of_it() -> None:
    qs = dict(
        leaf_queries(
            ["Pets > Cat Supplies", "Grocery > Tea", None, "Pets > Cat Supplies"],
            ["a", "b", "c", "d"],
        )
    )
    assert qs == {"cat supplies": {"a", "d"}, "cat suppies": {"a", "d"}, "tea": {"b"}}
    assert misspelt("board games") == "bord games" and misspelt("") == ""


def test_search_metrics_by_hand() -> None:
    got = search_metrics([["a", "x", "b"], ["y"]], [{"a", "b"}, {"z"}], k=3)
    ideal = 1 + 1 / math.log2(3)
    assert got["ndcg@3"] == pytest.approx((1 + 1 / math.log2(4)) / ideal / 2)
    assert got["recall@3"] == pytest.approx(0.5) and got["precision@3"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="one result list per query"):
        search_metrics([], [])
