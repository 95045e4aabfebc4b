"""The membership-inference audit and the privacy report (small synthetic data, fast)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from privrec.data.dataset import InteractionDataset
from privrec.data.splitters import leave_one_out_test
from privrec.data.synthetic import generate_shop_dataset
from privrec.evaluation.attack_bound import attack_epsilon_bound
from privrec.evaluation.membership import (
    AttackTrials,
    membership_audit,
    roc_auc,
    tpr_at_fpr,
)
from privrec.evaluation.privacy_report import run_frontier, write_privacy_report
from privrec.models.zoo import create_model
from privrec.privacy.ledger import Budget, PrivacyLedger


@pytest.fixture(scope="module")
def shop() -> InteractionDataset:
    return generate_shop_dataset(n_items=150, n_users=600, seed=21)


def test_auc_and_tpr_on_known_scores() -> None:
    y = np.array([1, 1, 1, 0, 0, 0])
    assert roc_auc(y, np.array([3, 2, 1, 0, -1, -2])) == 1.0
    assert roc_auc(y, np.array([0, 0, 0, 0, 0, 0])) == 0.5
    assert roc_auc(y, np.array([-3, -2, -1, 0, 1, 2])) == 0.0
    scores = np.r_[np.linspace(1, 2, 50), np.linspace(0, 1.5, 200)]
    labels = np.r_[np.ones(50), np.zeros(200)]
    t = tpr_at_fpr(labels, scores, 0.01)
    neg = np.sort(scores[50:])[::-1]
    assert t == pytest.approx((scores[:50] > neg[2]).mean())


def test_an_undefended_memorising_model_is_attacked(shop: InteractionDataset) -> None:
    res = membership_audit(lambda: create_model("ease", reg=1.0), shop, seed=1)
    assert res.auc > 0.75
    assert res.n_members == res.n_nonmembers > 100
    assert 0 <= res.tpr_at_1pct_fpr <= 1


def test_a_strongly_private_model_is_not(shop: InteractionDataset) -> None:
    res = membership_audit(
        lambda: create_model("dp_popularity", epsilon=0.5), shop, seed=1, repeats=2
    )
    assert res.auc < 0.62  # chance is 0.5; two repeats of ~150 vs ~150 users
    assert len(res.per_repeat) == 2


def test_the_audit_is_seeded(shop: InteractionDataset) -> None:
    a = membership_audit(lambda: create_model("itemknn", k=20), shop, seed=3, max_eval_users=60)
    b = membership_audit(lambda: create_model("itemknn", k=20), shop, seed=3, max_eval_users=60)
    assert a.auc == b.auc and a.n_members == 60


def test_frontier_and_report(shop: InteractionDataset, tmp_path: Path) -> None:
    train, test = leave_one_out_test(shop)
    ledger = PrivacyLedger(tmp_path / "ledger", Budget(100.0, 0.5))
    roster = {
        "dp_popularity": lambda e: {"epsilon": e},
        "dp_ease": lambda e: {"epsilon": e, "top_items": 60},
    }
    points = run_frontier(
        train,
        test,
        dataset_name="shop",
        protocol="loo",
        roster=roster,
        epsilons=(1.0, math.inf),
        ledger=ledger,
        audit_kwargs={"max_eval_users": 40},
        seed=0,
    )
    assert [(p.model, p.epsilon) for p in points] == [
        ("dp_popularity", 1.0),
        ("dp_popularity", math.inf),
        ("dp_ease", 1.0),
        ("dp_ease", math.inf),
    ]
    assert all(0 <= p.ndcg_at_10 <= 1 and p.attack_auc is not None for p in points)
    assert [e["model"] for e in ledger.entries()] == [
        "dp_popularity",
        "dp_ease",
    ]  # inf releases nothing
    paths = write_privacy_report(
        tmp_path / "report",
        points=points,
        ledger=ledger,
        baselines={"shop": {"model": "ease", "ndcg_at_10": 0.1, "attack_auc": 0.9}},
    )
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = paths["html"].read_text()
    assert "data:image/png;base64," in page and "http://" not in page and "https://" not in page
    assert "Privacy-budget ledger" in page
    doc = json.loads(paths["json"].read_text())
    assert len(doc["points"]) == 4 and doc["ledger"]["releases"] == 2


def test_trials_are_kept_only_when_asked(shop: InteractionDataset) -> None:
    a = membership_audit(lambda: create_model("itemknn", k=20), shop, seed=3, max_eval_users=60)
    assert a.trials is None and "trials" not in a.to_dict()  # the old result, unchanged
    b = membership_audit(
        lambda: create_model("itemknn", k=20),
        shop,
        seed=3,
        max_eval_users=60,
        keep_trials=True,
        repeats=2,
    )
    t = b.trials
    assert t is not None and b.per_repeat[0] == a.auc  # keeping them changes nothing measured
    assert len(t.labels) == len(t.scores) == len(t.repeat) == 2 * 2 * 60
    assert sum(t.labels) == 2 * 60 and sorted(set(t.repeat)) == [0, 1]
    assert len(t.shadow_labels) == len(t.shadow_scores) == 2 * 2 * 60
    first = np.asarray(t.repeat) == 0
    assert roc_auc(np.asarray(t.labels)[first], np.asarray(t.scores)[first]) == b.per_repeat[0]
    assert json.loads(json.dumps(b.to_dict()))["trials"]["labels"] == t.labels


def _trials(n: int, shift: float, seed: int) -> AttackTrials:
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n), np.zeros(n)].astype(int)
    return AttackTrials(
        labels=y.tolist(),
        scores=(rng.standard_normal(2 * n) + shift * y).tolist(),
        shadow_labels=y.tolist(),
        shadow_scores=(rng.standard_normal(2 * n) + shift * y).tolist(),
    )


def test_the_bound_is_chosen_on_other_trials_than_it_is_measured_on() -> None:
    from privrec.evaluation.canary import epsilon_at_threshold, epsilon_lower_bound

    # members and non-members indistinguishable: the best of all thresholds on the same
    # trials can still show a positive bound; a threshold chosen elsewhere is (here) 0
    null = _trials(500, 0.0, seed=5)
    naive = epsilon_lower_bound(null.labels, null.scores, delta=1e-6).epsilon_lb
    for select in ("shadow", "split"):
        b = attack_epsilon_bound(null, delta=1e-6, select=select)  # type: ignore[arg-type]
        assert b.epsilon_lb <= naive and b.epsilon_lb < 0.2
    # a strong attack: both selections find a bound well above 0, below the naive one
    strong = _trials(500, 4.0, seed=6)
    shadow = attack_epsilon_bound(strong, delta=1e-6, select="shadow")
    split = attack_epsilon_bound(strong, delta=1e-6, select="split", seed=1)
    best = epsilon_lower_bound(strong.labels, strong.scores, delta=1e-6).epsilon_lb
    assert 1.5 < shadow.epsilon_lb <= best and 1.0 < split.epsilon_lb <= best
    assert shadow.n_positives == 500 and split.n_positives == 250
    # "shadow" is the shadow trials' best threshold, evaluated once on all target trials
    thr = epsilon_lower_bound(strong.shadow_labels, strong.shadow_scores, delta=1e-6).threshold
    again = epsilon_at_threshold(strong.labels, strong.scores, thr, delta=1e-6)
    assert shadow.epsilon_lb == again.epsilon_lb and shadow.threshold == thr
    with pytest.raises(ValueError, match="select"):
        attack_epsilon_bound(strong, delta=1e-6, select="best")  # type: ignore[arg-type]
