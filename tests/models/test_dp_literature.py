"""Issue 16's methods from the literature: contribution caps and frequency-aware rows for DP EASE,
DP-ALS, DP EASE shrunk towards a text prior. Each test would fail if the accounting were wrong:
one shopper moves each release by at most its stated sensitivity, the noise is the calibrated
Gaussian of dp-accounting's PLD, and the ledger is charged before any noise."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pytest
import scipy.sparse as sp

from privrec.core.errors import BudgetExceededError, ConfigError
from privrec.data.dataset import InteractionDataset
from privrec.data.synthetic import generate_shop_dataset
from privrec.models.dp.als import ALS_SENSITIVITY, DPALS, item_statistics, solve_users
from privrec.models.dp.ease import DPEASE
from privrec.models.dp.prior import DPEASEPrior, ease_towards_prior, text_prior
from privrec.models.dp.release import LocalGramStatistics
from privrec.models.dp.weighted import (
    RowBound,
    cap_rows,
    frequency_scales,
    max_row_norm,
    scale_rows,
)
from privrec.models.ease import ease_weights
from privrec.models.zoo import create_model
from privrec.privacy import dp as dp_module
from privrec.privacy.ledger import Budget, PrivacyLedger

DELTA = 1e-6

BOUNDS = [
    RowBound(),
    RowBound(max_user_items=6),
    RowBound(max_user_items=6, row_scale="uniform"),
    RowBound(frequency_exponent=0.5),
    RowBound(max_user_items=4, row_scale="uniform", frequency_exponent=1.0),
]


@pytest.fixture(scope="module")
def shop() -> InteractionDataset:
    return generate_shop_dataset(n_items=80, n_users=160, seed=7)


def pld_epsilon(zs: list[float], delta: float) -> float:
    acc = dp_accounting.pld.PLDAccountant()
    event = dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(z) for z in zs])
    return float(acc.compose(event).get_epsilon(delta))


def upper(m: np.ndarray) -> np.ndarray:
    """The released vector of a symmetric matrix: upper triangle, diagonal over sqrt(2)."""
    return np.concatenate([m[np.triu_indices(m.shape[0], 1)], np.diag(m) / math.sqrt(2)])


def weighted_stats(
    x: sp.csr_matrix, bound: RowBound, selected: np.ndarray, d: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(selection column sums, Gram of the selected) as `release_weighted_gram` forms them."""
    capped = cap_rows(x, bound.max_user_items, bound.seed)
    sums = np.asarray(scale_rows(capped, bound.floor()).sum(axis=0)).ravel()
    xs = scale_rows(sp.csr_matrix(capped[:, selected] @ sp.diags(d)), bound.floor())
    return sums, (xs.T @ xs).toarray()


# ---- contribution bounds ------------------------------------------------------------------------
@pytest.mark.parametrize("bound", BOUNDS, ids=lambda b: b.describe()[:40])
def test_one_shopper_moves_the_weighted_release_by_at_most_its_sensitivity(
    shop: InteractionDataset, bound: RowBound
) -> None:
    x = shop.matrix(binary=True).astype(np.float64)
    sel = np.arange(0, shop.n_items, 2)
    # d comes from released (noisy) counts: any fixed positive scales, public at that point
    d = frequency_scales(
        np.random.default_rng(0).uniform(1, 50, sel.size), bound.frequency_exponent
    )
    full_sums, full_gram = weighted_stats(x, bound, sel, d)
    worst_sel = worst_gram = 0.0
    for u in range(x.shape[0]):
        keep = np.ones(x.shape[0], dtype=bool)
        keep[u] = False
        sums, gram = weighted_stats(sp.csr_matrix(x[keep]), bound, sel, d)
        worst_sel = max(worst_sel, float(np.linalg.norm(full_sums - sums)))
        worst_gram = max(worst_gram, float(np.linalg.norm(upper(full_gram - gram))))
    assert worst_sel <= 1.0 + 1e-9
    assert worst_gram <= 1 / math.sqrt(2) + 1e-9
    # tight for unit rows: some shopper uses the whole bound (so the check above can fail)
    if bound.row_scale == "unit":
        assert worst_sel == pytest.approx(1.0)
    rows = scale_rows(cap_rows(x, bound.max_user_items, bound.seed), bound.floor())
    assert max_row_norm(rows) <= 1.0 + 1e-12


def test_uniform_rows_give_every_kept_item_one_over_sqrt_k(shop: InteractionDataset) -> None:
    x = shop.matrix(binary=True).astype(np.float64)
    k = 5
    rows = scale_rows(cap_rows(x, k, 1), RowBound(k, "uniform").floor())
    assert np.allclose(rows.data, 1 / math.sqrt(k))
    assert np.diff(rows.indptr).max() <= k
    unit = scale_rows(cap_rows(x, k, 1))
    light = np.flatnonzero((np.diff(x.indptr) > 0) & (np.diff(x.indptr) < k))
    if light.size:  # a light shopper keeps weight 1/sqrt(n) > 1/sqrt(k) under unit rows
        assert unit[light[0]].data.max() > 1 / math.sqrt(k)


def test_a_shopper_s_sample_depends_only_on_their_own_items(shop: InteractionDataset) -> None:
    x = shop.matrix(binary=True).astype(np.float64)
    a = cap_rows(x, 3, 11)
    b = cap_rows(sp.csr_matrix(x[5:]), 3, 11)  # other shoppers removed, positions shifted
    assert (a[5:] != b).nnz == 0
    assert (cap_rows(x, 3, 12) != a).nnz > 0  # the seed does matter


def test_bad_row_bounds_are_refused() -> None:
    with pytest.raises(ConfigError, match="row_scale"):
        RowBound(row_scale="uniform")
    with pytest.raises(ConfigError, match="max_user_items"):
        RowBound(max_user_items=0)
    with pytest.raises(ConfigError, match="frequency_exponent"):
        RowBound(frequency_exponent=-1.0)


# ---- DP EASE with the options: calibration, noise, ledger ---------------------------------------
@pytest.mark.parametrize(
    "params",
    [
        {"max_user_items": 6},
        {"max_user_items": 6, "row_scale": "uniform"},
        {"frequency_exponent": 0.5},
    ],
)
def test_weighted_dp_ease_noise_is_the_calibrated_gaussian(
    shop: InteractionDataset, params: dict[str, Any]
) -> None:
    eps = 2.0
    m = DPEASE(epsilon=eps, top_items=40, **params).fit(shop)
    det = m.release.details
    zs = [det["noise_multiplier_selection"], det["noise_multiplier_matrix"]]
    assert pld_epsilon(zs, DELTA) == pytest.approx(eps, rel=0.02)
    assert det["sensitivity_l2_matrix"] == pytest.approx(1 / math.sqrt(2))
    assert m.noise_std == pytest.approx(zs[1] / math.sqrt(2))
    bound = m.row_bound()
    x = m.input_matrix(shop).astype(np.float64)
    assert m.item_scale is not None
    _, exact = weighted_stats(x, bound, m.selected, m.item_scale)
    noise = m.noisy_gram - exact
    off = noise[np.triu_indices(m.selected.size, 1)]
    assert off.std() == pytest.approx(m.noise_std, rel=0.1)
    assert m.privacy is not None and m.privacy.epsilon == eps


def test_default_dp_ease_keeps_the_plain_release(shop: InteractionDataset) -> None:
    m = DPEASE(epsilon=2.0, top_items=40).fit(shop)
    assert m.item_scale is None and "weighted" not in m.release.name


def test_weighted_dp_ease_is_charged_before_any_noise(
    shop: InteractionDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[str] = []
    real = dp_module.GaussianMechanism.add_symmetric_noise
    monkeypatch.setattr(
        dp_module.GaussianMechanism,
        "add_symmetric_noise",
        lambda self, *a, **k: drawn.append("sym") or real(self, *a, **k),
    )
    ledger = PrivacyLedger(tmp_path, Budget(0.5, 1e-5))
    for cls, params in ((DPEASE, {"max_user_items": 5}), (DPALS, {"epochs": 1})):
        with pytest.raises(BudgetExceededError):
            cls(epsilon=1.0, top_items=30, **params).fit(shop, ledger=ledger)
    assert drawn == [] and ledger.entries() == []


def test_weighted_options_refuse_sharded_statistics(shop: InteractionDataset) -> None:
    m = DPEASE(epsilon=1.0, top_items=20, max_user_items=5)
    stats = LocalGramStatistics(shop, m.input_matrix(shop).astype(np.float64))
    with pytest.raises(ConfigError, match="sharded"):
        m.fit_from_statistics(shop, stats)


def test_weighted_options_are_reachable_by_name(shop: InteractionDataset) -> None:
    m = create_model("dp_ease", epsilon=4.0, top_items=30, max_user_items=5, row_scale="uniform")
    m.fit(shop)
    assert m.release.details["max_user_items"] == 5
    with pytest.raises(ConfigError):
        create_model("dp_ease", row_scale="cube")


# ---- DP-ALS -------------------------------------------------------------------------------------
def test_dp_als_item_statistics_move_by_at_most_sqrt_2_per_shopper(
    shop: InteractionDataset,
) -> None:
    x = sp.csr_matrix(cap_rows(shop.matrix(binary=True), 8, 0)[:, :30])
    x.data[:] = 1.0
    v = np.random.default_rng(1).normal(0, 1.0, (30, 6))  # large: many factors get clipped
    u = solve_users(x, v, 0.1, 0.01, clip=True)
    assert np.linalg.norm(u, axis=1).max() <= 1 + 1e-9
    a, b, g = item_statistics(x, u)

    def flat(a: np.ndarray, b: np.ndarray, g: np.ndarray) -> np.ndarray:
        return np.concatenate([*(upper(m) for m in a), b.ravel(), upper(g)])

    full = flat(a, b, g)
    worst = 0.0
    for r in range(x.shape[0]):
        keep = np.arange(x.shape[0]) != r
        worst = max(worst, float(np.linalg.norm(full - flat(*item_statistics(x[keep], u[keep])))))
    assert worst <= ALS_SENSITIVITY + 1e-9
    assert worst > 1.0  # the bound is used (a bound of 1 would be wrong)


def test_dp_als_composes_to_epsilon_and_noises_b_with_the_calibrated_std(
    shop: InteractionDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[float] = []
    real = dp_module.GaussianMechanism.add_noise
    monkeypatch.setattr(
        dp_module.GaussianMechanism,
        "add_noise",
        lambda self, *a, **k: seen.append(self.sigma) or real(self, *a, **k),
    )
    eps = 3.0
    m = DPALS(epsilon=eps, epochs=3, embedding_size=4, top_items=30).fit(shop)
    det = m.release.details
    zs = [e["noise_multiplier"] for e in m.release.event["events"]]
    assert len(zs) == 4  # selection + 3 item releases
    assert pld_epsilon(zs, DELTA) == pytest.approx(eps, rel=0.02)
    z = det["noise_multiplier_item_statistics"]
    assert seen[-3:] == pytest.approx([z * math.sqrt(2)] * 3)  # b's noise, each epoch
    assert m.privacy is not None and m.privacy.unit == "user"
    scores = m.score_matrix(m.input_matrix(shop)[:4])
    assert scores.shape == (4, shop.n_items) and np.isfinite(scores).all()


def test_dp_als_private_initialisation_is_one_more_charged_gaussian(
    shop: InteractionDataset,
) -> None:
    eps = 2.0
    m = DPALS(epsilon=eps, epochs=2, embedding_size=4, top_items=30, init_share=0.4).fit(shop)
    det = m.release.details
    zs = [e["noise_multiplier"] for e in m.release.event["events"]]
    assert len(zs) == 4 and det["noise_multiplier_init_gram"] in zs
    assert det["sensitivity_l2_init_gram"] == pytest.approx(1 / math.sqrt(2))
    assert pld_epsilon(zs, DELTA) == pytest.approx(eps, rel=0.02)
    # shares 0.85 x 0.4 (init) and 0.85 x 0.6 / 2 (each epoch): multipliers ~ 1/sqrt(share)
    ratio = det["noise_multiplier_item_statistics"] / det["noise_multiplier_init_gram"]
    assert ratio == pytest.approx(math.sqrt(0.4 / 0.3), rel=1e-6)


def test_dp_als_without_noise_learns_the_structure(shop: InteractionDataset) -> None:
    m = DPALS(epsilon=math.inf, epochs=4, embedding_size=8).fit(shop)
    assert m.privacy is None
    x = m.input_matrix(shop)
    s = m.score_matrix(x)
    # a shopper's own items score above the average item
    own = np.asarray([s[u, x[u].indices].mean() for u in range(40) if x[u].nnz])
    assert (own > np.asarray([s[u].mean() for u in range(40) if x[u].nnz])).mean() > 0.9


def test_dp_als_saves_and_loads(shop: InteractionDataset, tmp_path: Path) -> None:
    m = DPALS(epsilon=2.0, embedding_size=4, top_items=20).fit(shop)
    m.save(tmp_path / "m")
    back = DPALS.load(tmp_path / "m")
    h = m.input_matrix(shop)[:3]
    np.testing.assert_allclose(back.score_matrix(h), m.score_matrix(h), rtol=1e-5)


# ---- the text prior -----------------------------------------------------------------------------
def test_ease_towards_prior_is_ease_without_a_prior_and_the_prior_with_a_huge_ridge() -> None:
    rng = np.random.default_rng(3)
    x = (rng.random((200, 12)) < 0.3).astype(np.float64)
    g = x.T @ x
    np.testing.assert_allclose(
        ease_towards_prior(g, 5.0, np.zeros((12, 12))), ease_weights(g, 5.0), atol=1e-6
    )
    target = ease_weights(g, 5.0).astype(np.float64)  # a prior of the right shape
    beta = np.trace(g @ target) / np.sum(target * (g @ target))  # least-squares scale
    assert beta == pytest.approx(1.0, abs=0.1)
    b = ease_towards_prior(g, 1e7, target)
    np.testing.assert_allclose(b, beta * target, atol=1e-3)  # a huge ridge: B = beta S
    assert np.all(np.diag(b) == 0)


def test_text_prior_keeps_k_neighbours() -> None:
    e = np.random.default_rng(0).normal(size=(10, 4))
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    s = text_prior(e, 3)
    assert np.all(np.diag(s) == 0) and np.all((s > 0).sum(axis=0) <= 3)


def test_dp_ease_prior_releases_exactly_what_dp_ease_releases(shop: InteractionDataset) -> None:
    text = {"content_params": {"cache": False}}
    a = DPEASEPrior(epsilon=2.0, top_items=30, **text).fit(shop, noise_seed=4)
    b = DPEASE(epsilon=2.0, top_items=30).fit(shop, noise_seed=4)
    assert a.noisy_gram is not None and b.noisy_gram is not None
    np.testing.assert_array_equal(a.noisy_gram, b.noisy_gram)  # the prior is post-processing
    assert not np.allclose(a.weights, b.weights)
    assert a.privacy is None  # reproducible noise: no release
    secure = DPEASEPrior(epsilon=2.0, top_items=30, **text).fit(shop)
    plain = DPEASE(epsilon=2.0, top_items=30).fit(shop)
    assert secure.privacy is not None and secure.privacy.epsilon == 2.0
    assert secure.release is not None and plain.release is not None
    assert secure.release.details == plain.release.details


def test_dp_ease_prior_needs_item_text() -> None:
    import pandas as pd

    ds = generate_shop_dataset(n_items=50, n_users=40, seed=1)
    bare = InteractionDataset(
        users=ds.users,
        items=ds.items,
        user_idx=ds.user_idx,
        item_idx=ds.item_idx,
        event_type=ds.event_type,
        ts=ds.ts,
        rating=ds.rating,
        item_meta=pd.DataFrame({"item": ds.items.keys}),
        event_weights=dict(ds.event_weights),
    )
    with pytest.raises(ConfigError, match="item text"):
        DPEASEPrior(epsilon=1.0).fit(bare)
