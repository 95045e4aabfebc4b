"""The LiRA audit: Clopper-Pearson intervals, the likelihood ratio, and the audit end to end."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import beta

from privrec.data.dataset import InteractionDataset
from privrec.data.synthetic import generate_shop_dataset
from privrec.evaluation.lira import (
    LowPowerWarning,
    balanced_membership,
    clopper_pearson,
    clopper_pearson_bounds,
    lira_audit,
    lira_scores,
    membership_signal,
    operating_point,
)
from privrec.models.base import ModelConfig, Recommender
from privrec.models.zoo import create_model


class _Constant(Recommender):
    """Scores every item 1.0 whatever it was trained on: it cannot leak membership."""

    name = "test-lira-constant"
    Config = ModelConfig

    def fit(self, dataset: InteractionDataset, *, rng: Any = None, ledger: Any = None) -> Any:
        self._mark_fitted(dataset.n_items)
        return self

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        return np.ones((histories.shape[0], self.n_items))

    def _state(self) -> dict[str, np.ndarray]:
        return {}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        pass


@pytest.fixture(scope="module")
def shop() -> InteractionDataset:
    return generate_shop_dataset(n_items=150, n_users=400, seed=21)


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (1, 1000), (500, 1000)])
def test_clopper_pearson_is_the_beta_quantiles(k: int, n: int) -> None:
    lo, hi = clopper_pearson(k, n, 0.95)
    assert lo == (0.0 if k == 0 else pytest.approx(beta.ppf(0.025, k, n - k + 1)))
    assert hi == (1.0 if k == n else pytest.approx(beta.ppf(0.975, k + 1, n - k)))
    assert lo <= k / n <= hi
    vlo, vhi = clopper_pearson_bounds(np.array([k]), n, 0.95)
    assert vlo[0] == pytest.approx(lo) and vhi[0] == pytest.approx(hi)


def test_clopper_pearson_known_value() -> None:
    # 0 successes in n: the upper end is 1 - (alpha / 2)^(1 / n)
    assert clopper_pearson(0, 100)[1] == pytest.approx(1 - 0.025 ** (1 / 100))
    with pytest.raises(ValueError):
        clopper_pearson(11, 10)


def test_operating_point_counts_and_warns_when_underpowered() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(300, bool), np.zeros(300, bool)]
    s = np.r_[rng.normal(2, 1, 300), rng.normal(0, 1, 300)]
    with pytest.warns(LowPowerWarning, match="300 negatives"):
        p = operating_point(y, s, 0.01)
    assert p.false_positives <= 3 and p.n_negatives == 300 and not p.reliable
    assert p.tpr_low <= p.tpr <= p.tpr_high
    assert p.tpr == pytest.approx((s[:300] > np.sort(s[300:])[::-1][3]).mean())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert operating_point(y, s, 0.5).reliable  # 150 allowed false positives


def test_lira_scores_separate_a_fixed_shift() -> None:
    rng = np.random.default_rng(1)
    member = balanced_membership(8, 50, rng)
    assert (member.sum(axis=0) == 4).all()
    base = rng.normal(0, 3, size=50)  # per-example difficulty, which LiRA calibrates away
    signals = base[None, :] + 1.0 * member + rng.normal(0, 0.1, size=member.shape)
    lam = lira_scores(signals, member, 0)
    assert (lam[member[0]].min() > lam[~member[0]].max()) and np.isfinite(lam).all()


def test_signal_kinds(shop: InteractionDataset) -> None:
    model = create_model("ease", reg=1.0).fit(shop, rng=0)
    x = model.input_matrix(shop)[:20]
    a = membership_signal(model, x, signal="halves", seed=3)
    b = membership_signal(model, x, signal="halves", seed=3)
    c = membership_signal(model, x, signal="reconstruction")
    assert a.shape == c.shape == (20,) and np.array_equal(a, b)
    assert np.isfinite(a).all() and (c > 0).mean() > 0.9  # members' own items score high
    with pytest.raises(ValueError):
        membership_signal(model, x, signal="loss")  # type: ignore[arg-type]


def test_lira_attacks_a_memorising_model(shop: InteractionDataset) -> None:
    with pytest.warns(LowPowerWarning):  # ~2,000 negatives are too few for 1% FPR
        res = lira_audit(lambda: create_model("ease", reg=1.0), shop, shadows=8, seed=1)
    assert res.auc > 0.85 and min(res.auc_per_target) > 0.75
    p = res.point(0.01)
    assert p.tpr > 0.05 and p.tpr_low <= p.tpr <= p.tpr_high and p.fpr <= 0.01
    assert res.n_members + res.n_nonmembers == 8 * res.n_users
    assert res.warnings and not res.point(0.001).reliable
    assert res.to_dict()["points"][1]["target_fpr"] == 0.01


def test_lira_on_a_model_that_ignores_the_data_is_chance(shop: InteractionDataset) -> None:
    with pytest.warns(LowPowerWarning):
        res = lira_audit(_Constant, shop, shadows=4, max_users=100, seed=2)
    assert res.auc == pytest.approx(0.5) and res.n_users == 100
    assert res.point(0.01).tpr == 0.0


def test_lira_checks_its_settings(shop: InteractionDataset) -> None:
    with pytest.raises(ValueError, match="even"):
        lira_audit(_Constant, shop, shadows=5)
