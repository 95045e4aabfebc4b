"""The canary audit: the epsilon lower bound, canary making, and audits of honest and broken DP."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta

from privrec.data.dataset import InteractionDataset
from privrec.data.synthetic import generate_shop_dataset
from privrec.evaluation.canary import (
    add_canaries,
    canary_audit,
    empirical_epsilon,
    epsilon_at_threshold,
    epsilon_lower_bound,
    make_canaries,
)
from privrec.models.base import ModelConfig, Recommender
from privrec.models.popularity import Popularity
from privrec.privacy.guarantee import PrivacyGuarantee


class _Constant(Recommender):
    """Scores every item 1.0 whatever it was trained on."""

    name = "test-canary-constant"
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


class _ClaimsDP(Popularity):
    """Exact counts that claim (0.1, 1e-6)-DP: a broken guarantee (no noise at all)."""

    name = "test-claims-dp"

    def fit(self, dataset: InteractionDataset, *, rng: Any = None, ledger: Any = None) -> Any:
        super().fit(dataset, rng=rng)
        self.privacy = PrivacyGuarantee(epsilon=0.1, delta=1e-6, mechanism="none")
        return self


@pytest.fixture(scope="module")
def shop() -> InteractionDataset:
    return generate_shop_dataset(n_items=150, n_users=300, seed=21)


def _plug_in(tpr: float, fpr: float, delta: float = 0.0) -> float:
    """The bound (TPR, FPR) themselves allow, without confidence intervals."""
    e1 = math.log((tpr - delta) / fpr) if tpr > delta and fpr > 0 else -math.inf
    e1 = math.inf if tpr > delta and fpr == 0 else e1
    e2 = math.log((1 - fpr - delta) / (1 - tpr)) if 1 - fpr > delta and tpr < 1 else -math.inf
    e2 = math.inf if 1 - fpr > delta and tpr == 1 else e2
    return max(e1, e2, 0.0)


def test_the_bound_is_the_formula_on_known_counts() -> None:
    # 50 IN trials all above every one of 50 OUT trials: TP = 50, FP = 0 at the best threshold
    y = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    s = np.r_[np.arange(50) + 100.0, np.arange(50.0)]
    b = epsilon_lower_bound(y, s, delta=1e-5)
    tpr_low = beta.ppf(0.025, 50, 1)
    fpr_high = beta.ppf(0.975, 1, 50)
    want = max(
        math.log((tpr_low - 1e-5) / fpr_high), math.log((1 - fpr_high - 1e-5) / (1 - tpr_low))
    )
    assert b.epsilon_lb == pytest.approx(want) and b.tpr == 1.0 and b.fpr == 0.0
    assert b.threshold == 100.0 and b.n_positives == b.n_negatives == 50


def test_no_evidence_no_bound() -> None:
    y = np.r_[np.ones(40, bool), np.zeros(40, bool)]
    assert epsilon_lower_bound(y, np.zeros(80)).epsilon_lb == 0.0
    assert epsilon_lower_bound(y, np.r_[np.zeros(40), np.ones(40)]).direction == "none"
    with pytest.raises(ValueError):
        epsilon_lower_bound(np.ones(3), np.zeros(3))


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 6)), min_size=2, max_size=80),
    st.sampled_from([0.0, 1e-5, 0.05]),
)
def test_the_bound_never_exceeds_what_tpr_and_fpr_allow(
    trials: list[tuple[bool, int]], delta: float
) -> None:
    y = np.array([t[0] for t in trials])
    s = np.array([t[1] for t in trials], dtype=float)
    if y.all() or not y.any():
        return
    b = epsilon_lower_bound(y, s, delta=delta)
    assert b.epsilon_lb >= 0.0
    assert b.tpr_low <= b.tpr and b.fpr_high >= b.fpr
    # below the plug-in bound at its own threshold, and at every threshold's best
    assert b.epsilon_lb <= _plug_in(b.tpr, b.fpr, delta) + 1e-12
    best = max(_plug_in((s[y] >= t).mean(), (s[~y] >= t).mean(), delta) for t in np.unique(s))
    assert b.epsilon_lb <= best + 1e-12
    fixed = epsilon_at_threshold(y, s, b.threshold, delta=delta)
    assert fixed.epsilon_lb == pytest.approx(b.epsilon_lb) and fixed.tpr == b.tpr


def test_canaries_are_rare_disjoint_and_appended(shop: InteractionDataset) -> None:
    items = make_canaries(shop, 10, 5, seed=0)
    flat = np.concatenate(items)
    assert len(items) == 10 and np.unique(flat).size == 50  # disjoint
    counts = np.bincount(shop.item_idx, minlength=shop.n_items)
    assert counts[flat].max() <= np.sort(counts)[49]  # the 50 least popular
    full, users = add_canaries(shop, items)
    assert full.items is shop.items and users.tolist() == list(range(300, 310))
    assert full.n_events == shop.n_events + 50
    x = full.matrix(binary=True)
    assert x[users[3]].indices.tolist() == items[3].tolist()
    with pytest.raises(ValueError):
        make_canaries(shop, 4, 100)


def test_an_undefended_memorising_model_gets_a_positive_bound(shop: InteractionDataset) -> None:
    res = empirical_epsilon("ease", {"reg": 1.0}, shop, canaries=16, runs=4, seed=1)
    assert res.epsilon_lb > 1.0 and res.auc > 0.9
    assert res.claimed_epsilon == math.inf and not res.exceeds_claim
    assert res.bound.n_positives == res.bound.n_negatives == 32
    assert res.to_dict()["claimed_epsilon"] == "inf"


def test_a_model_that_ignores_the_data_gets_none(shop: InteractionDataset) -> None:
    res = canary_audit(_Constant, shop, canaries=16, runs=4, seed=1, claimed_epsilon=0.1)
    assert res.epsilon_lb == 0.0 and not res.exceeds_claim


def test_a_strongly_private_model_stays_within_its_claim(shop: InteractionDataset) -> None:
    # fresh noise in every run, seeded so the test is repeatable
    res = empirical_epsilon(
        "dp_popularity",
        {"epsilon": 0.1},
        shop,
        canaries=16,
        runs=6,
        seed=2,
        fit_kwargs=lambda r: {"noise_seed": 1000 + r},
    )
    assert res.claimed_epsilon == 0.1 and res.epsilon_lb <= 0.1 and not res.exceeds_claim


def test_the_audit_flags_a_guarantee_without_noise(shop: InteractionDataset) -> None:
    res = canary_audit(_ClaimsDP, shop, canaries=16, runs=4, seed=3)
    assert res.claimed_epsilon == 0.1 and res.delta == 1e-6
    assert res.exceeds_claim and res.epsilon_lb > 1.0
    held = canary_audit(_ClaimsDP, shop, canaries=16, runs=4, seed=3, select="holdout")
    assert held.exceeds_claim  # on the odd runs alone:
    assert held.bound.n_positives + held.bound.n_negatives == 2 * 16


def test_the_audit_flags_noise_that_replays(shop: InteractionDataset) -> None:
    # The same noise seed in every run: each canary's signal moves by a fixed shift, which the
    # per-canary calibration sees and a global threshold does not.
    opts: dict[str, Any] = {"canaries": 16, "runs": 8, "seed": 1, "fit_kwargs": {"noise_seed": 5}}
    res = empirical_epsilon("dp_popularity", {"epsilon": 1.0}, shop, **opts)
    assert res.exceeds_claim and res.epsilon_lb > 1.0
    blind = empirical_epsilon("dp_popularity", {"epsilon": 1.0}, shop, calibrate="global", **opts)
    assert blind.epsilon_lb < res.epsilon_lb


def test_a_small_audit_says_it_cannot_refute_a_large_claim(shop: InteractionDataset) -> None:
    res = canary_audit(_Constant, shop, canaries=8, runs=4, seed=1, claimed_epsilon=8.0)
    assert res.notes and "cannot refute" in res.notes[0]
    with pytest.raises(ValueError, match="4 runs"):
        canary_audit(_Constant, shop, runs=2)
