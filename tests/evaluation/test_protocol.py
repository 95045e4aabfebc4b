"""The full-ranking protocol: known rankings give known metrics, masking, batching, LOO, CV."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from privrec.evaluation import protocol as P
from privrec.evaluation.full_ranking import _full_rank_rr
from tests.evaluation.conftest import Cooc, FixedRanking, make_dataset, random_split, split_by

ln = math.log
# item j scores 6 - j: the global ranking is i0 > i1 > ... > i5
DESCENDING = (6.0, 5.0, 4.0, 3.0, 2.0, 1.0)


def fixed(scores=DESCENDING, n_items=6) -> FixedRanking:
    m = FixedRanking(scores=tuple(scores))
    m._mark_fitted(n_items)
    return m


def test_known_ranking_gives_known_metrics(tiny):
    train, test = tiny
    res = P.evaluate_ranking(
        fixed(),
        train,
        test,
        k=3,
        metrics=("precision@3", "recall@3", "ndcg@3", "map", "map_min", "hr@3", "mrr", "mrr@1"),
    )
    # u0: train {i0} masked -> ranking i1 i2 i3 | i4 i5 ; relevant {i1, i3} -> hits [1, 0, 1]
    #     P = 2/3, R = 1, AP = (1/1 + 2/3)/2 = 5/6, NDCG = (1/ln2 + 1/ln4) / (1/ln2 + 1/ln3), RR = 1
    # u1: train {i1, i2} masked -> ranking i0 i3 i4 | i5 ; relevant {i4} -> hits [0, 0, 1]
    #     P = 1/3, R = 1, AP = 1/3, NDCG = (1/ln4)/(1/ln2) = 0.5, RR = 1/3
    # u2: no test items -> not evaluated
    ndcg_u0 = (1 / ln(2) + 1 / ln(4)) / (1 / ln(2) + 1 / ln(3))
    assert res["n_users"] == 2
    assert res["precision@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert res["recall@3"] == pytest.approx(1.0)
    assert res["ndcg@3"] == pytest.approx((ndcg_u0 + 0.5) / 2)
    assert res["map@3"] == pytest.approx((5 / 6 + 1 / 3) / 2)
    assert res["map_min@3"] == pytest.approx((5 / 6 + 1 / 3) / 2)  # min(n_rel, 3) = n_rel here
    assert res["hr@3"] == 1.0
    assert res["mrr"] == pytest.approx((1 + 1 / 3) / 2)
    assert res["mrr@1"] == pytest.approx(0.5)  # only u0 has its first hit at rank 1


def test_default_metrics_are_microsoft_recommenders_four(tiny):
    train, test = tiny
    res = P.evaluate_ranking(fixed(), train, test, k=3)
    assert {"map@3", "ndcg@3", "precision@3", "recall@3", "n_users", "k", "eval_seconds"} <= set(
        res
    )


def test_training_items_are_masked(tiny):
    train, test = tiny
    users, top = P.recommend_top_k(fixed(), train, k=6)
    assert users.tolist() == [0, 1, 2]
    # u0 lost i0, u1 lost i1 and i2, u2 lost i5; the tail is padded with -1
    assert top.tolist() == [[1, 2, 3, 4, 5, -1], [0, 3, 4, 5, -1, -1], [0, 1, 2, 3, 4, -1]]
    train_sets = [set(train.item_idx[train.user_idx == u].tolist()) for u in users]
    for row, seen in zip(top, train_sets, strict=True):
        assert not (set(row.tolist()) & seen)
    # without masking u0's top 3 is i0 i1 i2: one hit (i1 at rank 2)
    res = P.evaluate_ranking(
        fixed(), train, test, k=3, metrics=("precision@3",), exclude_train=False, per_user=True
    )
    assert res["per_user"]["precision@3"][0] == pytest.approx(1 / 3)


def test_masked_relevant_item_is_never_a_hit():
    # u0 bought i0 in train and again in test: the item is masked, so it can never be hit
    ds = make_dataset([("u0", "i0"), ("u0", "i0"), ("u0", "i1")], items=["i0", "i1"])
    train, test = split_by(ds, np.array([False, True, False]))
    # only one item (i1) is rankable; top 2 = [i1, (masked i0)] -> 0 hits, but 1 relevant
    res = P.evaluate_ranking(
        fixed((5.0, 1.0), 2), train, test, k=2, metrics=("precision@2", "recall@2", "hr@2", "mrr")
    )
    assert res["n_users"] == 1
    assert (
        res["precision@2"] == 0.0
        and res["recall@2"] == 0.0
        and res["hr@2"] == 0.0
        and res["mrr"] == 0.0
    )


def test_ties_broken_by_lower_index():
    s = np.array([[1.0, 3.0, 3.0, 3.0, 0.0], [3.0, 3.0, 3.0, 3.0, 3.0], [0.0, 1.0, 2.0, 3.0, 4.0]])
    assert P.top_k_rows(s, 2).tolist() == [[1, 2], [0, 1], [4, 3]]
    assert P.top_k_rows(s, 5).tolist() == [[1, 2, 3, 0, 4], [0, 1, 2, 3, 4], [4, 3, 2, 1, 0]]
    assert P.top_k_rows(np.array([[-np.inf, 1.0, -np.inf]]), 2).tolist() == [[1, 0]]


def test_top_k_rows_matches_sorting_on_random_scores():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 6, size=(40, 30)).astype(np.float32)  # many ties
    want = np.lexsort((np.broadcast_to(np.arange(30), s.shape), -s), axis=1)[:, :7]
    assert np.array_equal(P.top_k_rows(s, 7), want)


def test_full_ranking_mrr_with_ties():
    # scores with a tie: items 0 and 2 share the top score; relevant item 2 ranks after item 0
    m = fixed((5.0, 1.0, 5.0, 0.0), 4)
    ds = make_dataset([("u0", "i3"), ("u0", "i2")], items=["i0", "i1", "i2", "i3"])
    train, test = split_by(ds, np.array([False, True]))
    res = P.evaluate_ranking(m, train, test, k=1, metrics=("mrr", "hr@1"))
    assert res["mrr"] == pytest.approx(0.5)
    assert res["hr@1"] == 0.0


def test_batching_gives_identical_results(small_random):
    train, test = small_random
    model = Cooc(beta=0.01).fit(train)
    feats = np.random.default_rng(1).normal(size=(train.n_items, 8))
    mets = (
        "map",
        "ndcg@10",
        "precision@5",
        "recall@20",
        "hr@10",
        "mrr",
        "coverage@10",
        "novelty@10",
        "diversity@10",
    )
    runs = [
        P.evaluate_ranking(
            model, train, test, k=10, metrics=mets, batch_size=b, per_user=True, item_features=feats
        )
        for b in (1, 7, 10_000)
    ]
    for other in runs[1:]:
        assert np.array_equal(other["users"], runs[0]["users"])
        for key in mets:
            key = P.parse_metric(key, 10).key
            assert other[key] == runs[0][key]
            if key in runs[0]["per_user"]:
                assert np.array_equal(other["per_user"][key], runs[0]["per_user"][key])
    assert runs[0]["n_users"] > 50


def test_protocol_agrees_with_list_metrics(small_random):
    from privrec.evaluation import metrics as M

    train, test = small_random
    model = Cooc(beta=0.05).fit(train)
    res = P.evaluate_ranking(
        model, train, test, k=10, metrics=("map", "ndcg@10", "precision@10", "recall@10")
    )
    users, top = P.recommend_top_k(model, train, k=10, users=np.arange(train.n_users))
    lists, rels = [], []
    hist_rows = np.diff(train.matrix().indptr)
    for u, row in zip(users, top, strict=True):
        rel = set(test.item_idx[test.user_idx == u].tolist())
        if rel and hist_rows[u] > 0:
            lists.append(row[row >= 0])
            rels.append(rel)
    ref = M.mean_ranking_metrics(lists, rels, 10)
    assert res["n_users"] == ref["n_users"]
    assert res["map@10"] == pytest.approx(ref["map"])
    assert res["ndcg@10"] == pytest.approx(ref["ndcg"])
    assert res["precision@10"] == pytest.approx(ref["precision"])
    assert res["recall@10"] == pytest.approx(ref["recall"])


def test_cold_users_and_user_subset():
    # give u2 a test item but remove its history: a cold user
    ds = make_dataset(
        [("u0", "i0"), ("u0", "i1"), ("u1", "i2"), ("u1", "i4"), ("u2", "i3")],
        items=[f"i{j}" for j in range(6)],
    )
    tr, te = split_by(ds, np.array([False, True, False, True, True]))
    assert P.evaluate_ranking(fixed(), tr, te, k=3)["n_users"] == 2
    assert P.evaluate_ranking(fixed(), tr, te, k=3, skip_cold_users=False)["n_users"] == 3
    assert P.evaluate_ranking(fixed(), tr, te, k=3, users=[1])["n_users"] == 1


def test_history_matrix_and_scorer_hooks(tiny):
    train, test = tiny
    calls = []

    def scorer(rows: np.ndarray) -> np.ndarray:
        calls.append(rows.copy())
        return np.tile(np.array(DESCENDING), (rows.shape[0], 1))

    a = P.evaluate_ranking(None, train, test, k=3, scorer=scorer, batch_size=1)
    b = P.evaluate_ranking(fixed(), train, test, k=3)
    assert [c.tolist() for c in calls] == [[0], [1]]
    assert {k: a[k] for k in ("map@3", "ndcg@3")} == {k: b[k] for k in ("map@3", "ndcg@3")}
    with pytest.raises(ValueError, match="history_matrix"):
        P.evaluate_ranking(fixed(), train, test, history_matrix=train.matrix()[:2])


def test_errors_name_the_problem(tiny):
    train, test = tiny
    with pytest.raises(ValueError, match="unknown metric"):
        P.evaluate_ranking(fixed(), train, test, metrics=("auc",))
    with pytest.raises(ValueError, match="item_features"):
        P.evaluate_ranking(fixed(), train, test, metrics=("diversity@3",))
    with pytest.raises(ValueError, match="shape"):
        P.evaluate_ranking(fixed(DESCENDING[:5], 6), train, test)
    other = make_dataset([("x", "y")])
    with pytest.raises(ValueError, match="vocabularies"):
        P.evaluate_ranking(fixed(), train, other)


def test_parse_metric():
    assert P.parse_metric("NDCG@20") == P.MetricSpec("ndcg@20", "ndcg", 20)
    assert P.parse_metric("map", 5).key == "map@5"
    assert P.parse_metric("mrr").k is None
    assert P.parse_metric("hit@10").key == "hr@10"
    with pytest.raises(ValueError):
        P.parse_metric("ndcg@x")
    with pytest.raises(ValueError):
        P.parse_metric("ndcg@0")


def test_beyond_accuracy_metrics_in_protocol(tiny):
    train, test = tiny
    res = P.evaluate_ranking(fixed(), train, test, k=2, metrics=("coverage@2", "novelty@2"))
    # top 2: u0 -> i1 i2 ; u1 -> i0 i3 => distinct {0,1,2,3} over 4 items seen in training (i0 i1 i2
    # i5)
    assert res["coverage@2"] == pytest.approx(4 / 4)
    # training counts: i0 1, i1 1, i2 1, i5 1 (4 records) -> i0 i1 i2 carry 2 bits; i3 unseen is
    # left out
    assert res["novelty@2"] == pytest.approx(2.0)


# ---- leave-one-out -----------------------------------------------------------------------------
def test_evaluate_loo(tiny):
    train, test = tiny
    # u1 holds out i4 alone; u0 holds two items, which is not leave-one-out
    with pytest.raises(ValueError, match="more than one"):
        P.evaluate_loo(fixed(), train, test, k=3)
    one = test.subset(test.user_idx == 1)
    res = P.evaluate_loo(fixed(), train, one, k=3)
    # u1: ranking i0 i3 i4 i5, held out i4 at rank 3: HR@3 = 1, NDCG@3 = ln2/ln4 = 0.5, MRR = 1/3
    assert set(res) >= {"hr@3", "ndcg@3", "mrr"}
    assert res["hr@3"] == 1.0
    assert res["ndcg@3"] == pytest.approx(0.5)
    assert res["mrr"] == pytest.approx(1 / 3)
    assert P.evaluate_loo(fixed(), train, one, k=2)["hr@2"] == 0.0


# ---- rating prediction -------------------------------------------------------------------------
def test_evaluate_rating():
    items = ["a", "b", "c"]
    ds = make_dataset(
        [("u", "a"), ("u", "b"), ("v", "a"), ("v", "c")], items=items, ratings=[4, 2, 5, 1]
    )
    train, test = split_by(ds, np.array([False, True, False, True]))
    # the model predicts 3, 3.5, 4 for items a, b, c. test: (u, b, 2) -> err 1.5 ; (v, c, 1) -> err
    # 3
    m = fixed((3.0, 3.5, 4.0), 3)
    res = P.evaluate_rating(m, train, test, batch_size=1)
    assert res["n_ratings"] == 2 and res["n_users"] == 2
    assert res["rmse"] == pytest.approx(math.sqrt((1.5**2 + 3**2) / 2))
    assert res["mae"] == pytest.approx((1.5 + 3) / 2)


# ---- user k-fold -------------------------------------------------------------------------------
def test_cross_validate_runs_and_aggregates(small_random):
    train, _ = small_random
    res = P.cross_validate(
        lambda: Cooc(beta=0.01), train, 3, k=5, metrics=("ndcg@5", "recall@5"), seed=1
    )
    assert res["n_folds"] == 3 and len(res["folds"]) == 3
    # every user with at least two events is evaluated in exactly one fold
    n_multi = int((np.bincount(train.user_idx, minlength=train.n_users) >= 2).sum())
    assert sum(f["n_users"] for f in res["folds"]) == n_multi
    assert set(res["mean"]) == {"ndcg@5", "recall@5"}
    assert all(0.0 <= v <= 1.0 for v in res["mean"].values())
    assert res["mean"]["ndcg@5"] == pytest.approx(np.mean([f["ndcg@5"] for f in res["folds"]]))
    again = P.cross_validate(
        lambda: Cooc(beta=0.01), train, 3, k=5, metrics=("ndcg@5", "recall@5"), seed=1
    )
    assert again["mean"] == res["mean"]
    rnd = P.cross_validate(
        lambda: Cooc(beta=0.01), train, 3, k=5, metrics=("ndcg@5",), seed=1, order="random"
    )
    assert rnd["mean"]["ndcg@5"] != res["mean"]["ndcg@5"]


# ---- speed -------------------------------------------------------------------------------------
def test_movielens_sized_evaluation_is_fast():
    # 943 users x 1682 items, ~100 events per user, as ML-100K
    train, test = random_split(943, 1682, 100, seed=11)
    model = Cooc().fit(train)
    t0 = time.perf_counter()
    res = P.evaluate_ranking(model, train, test, k=10)
    elapsed = time.perf_counter() - t0
    assert res["n_users"] > 900
    assert elapsed < 2.0, (
        f"evaluation took {elapsed:.2f}s"
    )  # < 1 s on an idle core; slack for shared CI


def test_full_rank_rr_matches_brute_force():
    rng = np.random.default_rng(5)
    s = rng.integers(0, 4, size=(30, 12)).astype(np.float32)
    s[rng.random(s.shape) < 0.1] = -np.inf
    rel = rng.random(s.shape) < 0.2
    rows, cols = np.nonzero(rel)
    got = _full_rank_rr(s, rows, cols)
    for r in range(30):
        order = np.lexsort((np.arange(12), -s[r]))  # best first, ties: lower index first
        want = 0.0
        for pos, item in enumerate(order):
            if rel[r, item] and np.isfinite(s[r, item]):
                want = 1.0 / (pos + 1)
                break
        assert got[r] == pytest.approx(want), r
