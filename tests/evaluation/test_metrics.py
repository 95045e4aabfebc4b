"""Metrics against hand-computed answers (each worked out in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privrec.evaluation import metrics as M

ln = math.log


# ---- one user, worked example -----------------------------------------------------------------
# ranked = [1, 2, 3, 4, 5], relevant = {2, 4, 9}, k = 5
# hits at ranks 2 and 4 -> [0, 1, 0, 1, 0]
RANKED = [1, 2, 3, 4, 5]
REL = {2, 4, 9}


def test_precision_recall_worked_example():
    # precision@5 = 2 hits / 5 ; recall@5 = 2 hits / 3 relevant
    assert M.precision_at_k(RANKED, REL, 5) == pytest.approx(2 / 5)
    assert M.recall_at_k(RANKED, REL, 5) == pytest.approx(2 / 3)
    # top 1 = [1]: no hit
    assert M.precision_at_k(RANKED, REL, 1) == 0.0
    assert M.recall_at_k(RANKED, REL, 1) == 0.0


def test_ndcg_worked_example_natural_log():
    # DCG = 1/ln(1+2) + 1/ln(1+4); ideal: min(3, 5) = 3 hits on top = 1/ln2 + 1/ln3 + 1/ln4
    dcg = 1 / ln(3) + 1 / ln(5)
    idcg = 1 / ln(2) + 1 / ln(3) + 1 / ln(4)
    assert M.ndcg_at_k(RANKED, REL, 5) == pytest.approx(dcg / idcg)  # = 0.498190...
    assert M.ndcg_at_k(RANKED, REL, 5) == pytest.approx(0.4981901, abs=1e-6)
    # the ratio does not depend on the log base: the same with log2
    l2 = math.log2
    assert M.ndcg_at_k(RANKED, REL, 5) == pytest.approx(
        (1 / l2(3) + 1 / l2(5)) / (1 / l2(2) + 1 / l2(3) + 1 / l2(4))
    )


def test_average_precision_worked_example():
    # precision at hit ranks: rank 2 -> 1/2, rank 4 -> 2/4 ; sum = 1.0 ; / 3 relevant = 1/3
    assert M.average_precision_at_k(RANKED, REL, 5) == pytest.approx(1 / 3)
    # min(3, 5) = 3 -> same here
    assert M.average_precision_at_k(RANKED, REL, 5, normalize="min_k") == pytest.approx(1 / 3)


def test_map_normalisations_differ_when_relevant_exceeds_k():
    # ranked [1,2,3,4,5], relevant {2,4,9,10,11}, k = 3: one hit at rank 2 -> sum = 1/2
    rel = {2, 4, 9, 10, 11}
    assert M.average_precision_at_k(RANKED, rel, 3) == pytest.approx(
        0.5 / 5
    )  # MS `map` (old map_at_k)
    assert M.average_precision_at_k(RANKED, rel, 3, normalize="min_k") == pytest.approx(
        0.5 / 3
    )  # MS new map_at_k
    with pytest.raises(ValueError):
        M.average_precision_at_k(RANKED, rel, 3, normalize="k")


def test_hit_rate_and_reciprocal_rank():
    assert M.hit_rate_at_k(RANKED, REL, 5) == 1.0
    assert M.hit_rate_at_k(RANKED, REL, 1) == 0.0
    # first hit at rank 2
    assert M.reciprocal_rank(RANKED, REL) == pytest.approx(0.5)
    assert M.reciprocal_rank(RANKED, REL, k=1) == 0.0
    assert M.reciprocal_rank(RANKED, {5}) == pytest.approx(1 / 5)


# ---- edge cases --------------------------------------------------------------------------------
def test_k_larger_than_list():
    # ranked [7, 3], relevant {3}, k = 5: one hit at rank 2
    r = [7, 3]
    assert M.precision_at_k(r, {3}, 5) == pytest.approx(
        1 / 5
    )  # divided by k, not by the list length
    assert M.recall_at_k(r, {3}, 5) == 1.0
    assert M.ndcg_at_k(r, {3}, 5) == pytest.approx((1 / ln(3)) / (1 / ln(2)))  # = ln2/ln3 = 0.6309
    assert M.average_precision_at_k(r, {3}, 5) == pytest.approx(0.5)
    assert M.hit_rate_at_k(r, {3}, 5) == 1.0


def test_empty_list_and_no_relevant_items():
    assert M.precision_at_k([], {1}, 3) == 0.0
    assert M.recall_at_k([], {1}, 3) == 0.0
    for f in (
        M.precision_at_k,
        M.recall_at_k,
        M.ndcg_at_k,
        M.average_precision_at_k,
        M.hit_rate_at_k,
    ):
        assert f([1, 2, 3], set(), 3) == 0.0
    assert M.reciprocal_rank([1, 2, 3], []) == 0.0


def test_duplicates_count_once():
    # ranked [3, 3, 5], relevant given as [3, 3, 5] (a set {3, 5})
    # hits: rank1 (3) yes, rank2 (3 again) no, rank3 (5) yes -> [1, 0, 1]
    r, rel = [3, 3, 5], [3, 3, 5]
    assert M.hits_vector(r, rel).tolist() == [True, False, True]
    assert M.precision_at_k(r, rel, 3) == pytest.approx(2 / 3)
    assert M.recall_at_k(r, rel, 3) == 1.0  # 2 hits / 2 distinct relevant
    # AP = (1/1 + 2/3) / 2
    assert M.average_precision_at_k(r, rel, 3) == pytest.approx((1 + 2 / 3) / 2)
    # NDCG = (1/ln2 + 1/ln4) / (1/ln2 + 1/ln3)
    assert M.ndcg_at_k(r, rel, 3) == pytest.approx(
        (1 / ln(2) + 1 / ln(4)) / (1 / ln(2) + 1 / ln(3))
    )


def test_perfect_list_scores_one():
    assert M.ndcg_at_k([4, 2, 9], {2, 4, 9}, 3) == pytest.approx(1.0)
    assert M.average_precision_at_k([4, 2, 9], {2, 4, 9}, 3) == pytest.approx(1.0)
    # more relevant than k: ideal DCG uses only k positions, so a full top-k is still 1
    assert M.ndcg_at_k([1, 2], {1, 2, 3, 4}, 2) == pytest.approx(1.0)


def test_k_must_be_positive():
    with pytest.raises(ValueError):
        M.precision_at_k([1], {1}, 0)


# ---- averaging, checked against Microsoft Recommenders' own unit-test fixture -----------------
def test_mean_over_users_matches_microsoft_recommenders_fixture():
    # rating_true / rating_pred of recommenders' tests/unit/recommenders/evaluation/conftest.py,
    # predictions ordered by score. Their expected values at k=10: precision 0.26666,
    # recall 0.37777, ndcg 0.38172, map 0.23613.
    ranked = {
        1: [3, 10, 12],
        2: [10, 3, 5, 11, 13],
        3: [4, 10, 7, 13, 1, 3, 5, 2, 11, 14],
    }
    relevant = {1: {3, 1, 2}, 2: {1, 4, 5, 6, 7}, 3: {2, 5, 6, 8, 9, 10, 11, 12, 13, 14}}
    users = [1, 2, 3]
    out = M.mean_ranking_metrics([ranked[u] for u in users], [relevant[u] for u in users], 10)
    assert out["n_users"] == 3
    # precision: (1 + 1 + 6) hits / 10 / 3 users
    assert out["precision"] == pytest.approx(8 / 30)
    assert out["precision"] == pytest.approx(0.26666, abs=1e-5)
    # recall: (1/3 + 1/5 + 6/10) / 3
    assert out["recall"] == pytest.approx((1 / 3 + 1 / 5 + 6 / 10) / 3)
    assert out["recall"] == pytest.approx(0.37777, abs=1e-5)
    assert out["ndcg"] == pytest.approx(0.38172, abs=1e-5)
    assert out["map"] == pytest.approx(0.23613, abs=1e-5)


def test_mean_skips_users_without_relevant_items():
    out = M.mean_ranking_metrics([[1, 2], [3, 4]], [{1}, set()], 2, names=("precision", "recall"))
    assert out["n_users"] == 1
    assert out["precision"] == pytest.approx(0.5)
    assert out["recall"] == 1.0
    assert M.mean_ranking_metrics([[1]], [[]], 1)["n_users"] == 0


def test_vectorised_core_matches_list_functions():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 12))
        ranked = rng.permutation(20)[:n]
        rel = set(rng.choice(20, size=int(rng.integers(0, 6)), replace=False).tolist())
        k = int(rng.integers(1, 15))
        h = M.hits_vector(ranked, rel, k)[None, :]
        per = M.ranking_metrics_from_hits(h, np.array([len(rel)]), k)
        assert per["precision"][0] == pytest.approx(M.precision_at_k(ranked, rel, k))
        assert per["ndcg"][0] == pytest.approx(M.ndcg_at_k(ranked, rel, k))
        assert per["map"][0] == pytest.approx(M.average_precision_at_k(ranked, rel, k))
        # independent brute-force NDCG and AP
        dcg = sum(1 / ln(j + 2) for j, it in enumerate(ranked[:k]) if it in rel)
        idcg = sum(1 / ln(j + 2) for j in range(min(len(rel), k)))
        assert per["ndcg"][0] == pytest.approx(dcg / idcg if idcg else 0.0)
        hits, ap = 0, 0.0
        for j, it in enumerate(ranked[:k]):
            if it in rel:
                hits += 1
                ap += hits / (j + 1)
        assert per["map"][0] == pytest.approx(ap / len(rel) if rel else 0.0)


# ---- beyond accuracy ---------------------------------------------------------------------------
# Microsoft Recommenders' diversity fixture: train (user, item) = (1,1) (1,2) (1,4) (2,3) (2,4)
# (3,3) (3,4) (3,5); recommendations: user1 [3, 5], user2 [2, 5], user3 [1, 2].
TRAIN_COUNTS = np.array([0, 1, 1, 2, 3, 1])  # index = item id; item 0 unused
RECS = [[3, 5], [2, 5], [1, 2]]


def test_catalogue_coverage():
    # distinct recommended {1, 2, 3, 5} = 4 / 5 distinct training items = 0.8 (their expected value)
    assert M.catalogue_coverage(RECS, 5) == pytest.approx(0.8)
    assert M.catalogue_coverage([[1, 1], [1]], 4) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        M.catalogue_coverage(RECS, 0)


def test_novelty():
    # p(i) = count / 8 records: item3 -> 2/8 (2 bits), items 1, 2, 5 -> 1/8 (3 bits)
    # recommendations 3,5,2,5,1,2 -> (2 + 3 + 3 + 3 + 3 + 3) / 6 = 17/6 = 2.8333 (their expected
    # value)
    assert M.novelty(RECS, TRAIN_COUNTS) == pytest.approx(17 / 6)
    # an item never seen in training has no p(i): left out
    assert M.novelty([[3, 0]], TRAIN_COUNTS) == pytest.approx(2.0)
    assert M.novelty([[0]], TRAIN_COUNTS) == 0.0


def test_intra_list_diversity():
    feats = np.array(
        [
            [0, 0, 0, 0, 0],
            [0, 1, 1, 0, 0],
            [0, 1, 0, 1, 0],
            [0, 0, 1, 1, 0],
            [0, 0, 1, 0, 1],
            [0, 0, 0, 1, 1],
        ],
        dtype=float,
    )
    # every pair in the fixture's lists shares one of two features: cos = 1/2 -> diversity 0.5 each
    assert M.intra_list_diversity([3, 5], feats) == pytest.approx(0.5)
    assert M.mean_intra_list_diversity(RECS, feats) == pytest.approx(0.5)
    # three items: pairs (1,2)=1/2, (1,5)=0, (2,5)=1/2 -> mean sim 1/3 -> diversity 2/3
    assert M.intra_list_diversity([1, 2, 5], feats) == pytest.approx(2 / 3)
    # identical items: similarity 1 -> diversity 0 ; one item: no pairs -> 0
    assert M.intra_list_diversity([1, 1], feats) == 0.0
    assert M.intra_list_diversity([1], feats) == 0.0
    # zero vector: similarity 0 with everything
    assert M.intra_list_diversity([0, 1], feats) == pytest.approx(1.0)
    # the batched form agrees
    unit = M._normalise_rows(feats)
    top = np.array([[1, 2, 5], [3, 5, 0]])
    valid = np.array([[True, True, True], [True, True, False]])
    got = M.batch_intra_list_diversity(top, valid, unit)
    assert got == pytest.approx([2 / 3, 0.5])


def test_rmse_mae():
    # errors: 1, -1, 2, 0 -> squares 1, 1, 4, 0 -> mean 1.5 ; abs mean 1.0
    t, p = [4, 3, 5, 1], [3, 4, 3, 1]
    assert M.rmse(t, p) == pytest.approx(math.sqrt(1.5))
    assert M.mae(t, p) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        M.rmse([1, 2], [1])
    with pytest.raises(ValueError):
        M.mae([], [])
