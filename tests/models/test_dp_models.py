"""User-level DP models: noise calibrated by the accounting libraries, drawn from a secure source
(reproducible only on request, and then no DP release), and charged to the ledger before any
noise is drawn."""

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
from privrec.models.base import Recommender
from privrec.models.dp.bpr import DPBPR
from privrec.models.dp.ease import DPEASE, spectral_denoise
from privrec.models.dp.gram import PrivateGramRecommender
from privrec.models.dp.itemknn import DPItemKNN
from privrec.models.dp.popularity import DPPopularity
from privrec.models.dp.release import (
    COUNT_SHARE,
    most_recent_items,
    noisy_item_counts,
    start_private_fit,
    unit_rows,
    window_pairs,
)
from privrec.privacy import dp as dp_module
from privrec.privacy.ledger import Budget, PrivacyLedger
from privrec.privacy.noise import NoiseSource

DELTA = 1e-6  # the default: 1 / (10 x expected_users), expected_users = 100_000


@pytest.fixture(scope="module")
def shop() -> InteractionDataset:
    return generate_shop_dataset(n_items=240, n_users=500, seed=11)


def pld_epsilon(zs: list[float], delta: float) -> float:
    acc = dp_accounting.pld.PLDAccountant()
    event = dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(z) for z in zs])
    return float(acc.compose(event).get_epsilon(delta))


def clean_gram(model: Recommender, ds: InteractionDataset, selected: np.ndarray) -> np.ndarray:
    x = unit_rows(model.input_matrix(ds).astype(np.float64)[:, selected])
    return (x.T @ x).toarray()


# ---- the noise matches the calibration -----------------------------------------------------------
def test_dp_ease_gram_noise_is_the_calibrated_gaussian_of_dp_accounting(
    shop: InteractionDataset,
) -> None:
    eps = 2.0
    # every item kept: the selection counts are still released noisy (composed with the Gram)
    m = DPEASE(epsilon=eps, top_items=shop.n_items).fit(shop)
    z_sel = m.release.details["noise_multiplier_selection"]
    z = m.release.details["noise_multiplier_matrix"]
    assert pld_epsilon([z_sel, z], DELTA) == pytest.approx(eps, rel=0.02)
    assert m.noise_std == pytest.approx(
        z / math.sqrt(2), rel=1e-9
    )  # upper-triangle sensitivity 1/sqrt(2)
    assert m.selected.size == shop.n_items
    noise = m.noisy_gram - clean_gram(m, shop, m.selected)
    off = noise[np.triu_indices(shop.n_items, 1)]
    assert off.std() == pytest.approx(z / math.sqrt(2), rel=0.03)
    assert abs(off.mean()) < 0.05 * z
    assert np.diag(noise).std() == pytest.approx(z, rel=0.15)
    assert m.privacy is not None and m.privacy.epsilon == eps and m.privacy.unit == "user"
    assert m.privacy.delta == pytest.approx(DELTA)
    assert m.privacy.adjacency == "add/remove one user"


def test_composed_selection_and_gram_spend_exactly_epsilon(shop: InteractionDataset) -> None:
    eps, delta = 1.0, DELTA
    m = DPItemKNN(epsilon=eps, top_items=60, selection_share=0.2, k=10).fit(shop)
    z_sel = m.release.details["noise_multiplier_selection"]
    z_gram = m.release.details["noise_multiplier_matrix"]
    spent = pld_epsilon([z_sel, z_gram], delta)
    assert spent <= eps * 1.001 and spent >= eps * 0.98
    assert z_sel / z_gram == pytest.approx(2.0, rel=1e-6)  # shares 0.2 / 0.8
    assert m.selected.size == 60
    assert m.release.event == {
        "kind": "composed",
        "events": [
            {"kind": "gaussian", "noise_multiplier": z_sel},
            {"kind": "gaussian", "noise_multiplier": z_gram},
        ],
    }


def test_automatic_selection_size_comes_from_a_charged_noisy_count(
    shop: InteractionDataset,
) -> None:
    eps = 1.0
    m = DPEASE(epsilon=eps).fit(shop)  # top_items None: count + selection + Gram
    d = m.release.details
    zs = [
        d["noise_multiplier_count"],
        d["noise_multiplier_selection"],
        d["noise_multiplier_matrix"],
    ]
    assert all(z > 0 for z in zs) and d["count_share"] == COUNT_SHARE
    assert pld_epsilon(zs, DELTA) == pytest.approx(eps, rel=0.02)
    assert [e["noise_multiplier"] for e in m.release.event["events"]] == zs
    assert isinstance(d["top_items"], str)  # the size is not a number read from the data
    assert 1 <= m.selected.size <= shop.n_items


def test_dp_popularity_noise_and_contribution_bound(shop: InteractionDataset) -> None:
    eps, c = 1.0, 16
    m = DPPopularity(epsilon=eps, max_items=c).fit(shop, rng=5)
    assert m.sensitivity == pytest.approx(math.sqrt(c))
    z = dp_accounting.get_sigma_gaussian(eps, DELTA)
    assert m.noise_std == pytest.approx(z * math.sqrt(c), rel=1e-9)
    assert m.release.event == {"kind": "gaussian", "noise_multiplier": pytest.approx(z)}
    exact = DPPopularity(epsilon=math.inf, max_items=c).fit(shop)
    diff = m.popularity.astype(np.float64) - exact.popularity
    big = exact.popularity > 5 * m.noise_std  # away from the clipping at 0
    if big.sum() > 30:
        assert diff[big].std() == pytest.approx(m.noise_std, rel=0.35)
    # one user's influence on the exact counts is at most sqrt(c) in L2
    heavy = int(np.argmax(np.bincount(shop.user_idx)))
    without = DPPopularity(epsilon=math.inf, max_items=c).fit(shop.subset(shop.user_idx != heavy))
    assert (
        np.linalg.norm(exact.popularity.astype(np.float64) - without.popularity)
        <= math.sqrt(c) + 1e-6
    )


def test_one_user_moves_the_released_gram_by_at_most_the_sensitivity(
    shop: InteractionDataset,
) -> None:
    heavy = int(np.argmax(np.bincount(shop.user_idx)))
    sel = np.arange(shop.n_items)
    model = DPEASE(epsilon=math.inf)
    a = clean_gram(model, shop, sel)
    b = clean_gram(model, shop.subset(shop.user_idx != heavy), sel)
    d = a - b
    upper = np.concatenate([d[np.triu_indices(len(sel), 1)], np.diag(d) / math.sqrt(2)])
    assert np.linalg.norm(upper) <= 1 / math.sqrt(2) + 1e-9
    w = (
        window_pairs(shop, sel, 3).toarray()
        - window_pairs(shop.subset(shop.user_idx != heavy), sel, 3).toarray()
    )
    assert np.linalg.norm(w[np.triu_indices(len(sel), 1)]) <= 1.0 + 1e-9


# ---- noise: secure by default, reproducible only on request (and then no DP release) ----------
CASES: list[tuple[type, dict[str, Any]]] = [
    (DPPopularity, {"epsilon": 1.0}),
    (DPItemKNN, {"epsilon": 2.0, "k": 20, "top_items": 100}),
    (DPItemKNN, {"epsilon": 2.0, "k": 20, "window": 2, "similarity": "cooccurrence"}),
    (DPEASE, {"epsilon": 4.0, "top_items": 80}),
]


@pytest.mark.parametrize(
    ("cls", "params"), CASES, ids=[f"{c.name}-{i}" for i, (c, _) in enumerate(CASES)]
)
def test_secure_noise_differs_and_noise_seed_repeats_without_a_guarantee(
    shop: InteractionDataset, cls: type, params: dict[str, Any]
) -> None:
    x = shop.matrix(binary=True)[:50]
    a = cls(**params).fit(shop, rng=3)
    b = cls(**params).fit(shop, rng=3)
    assert not np.array_equal(a.score_matrix(x), b.score_matrix(x))  # the seed is not the noise
    assert a.privacy is not None and not a.reproducible_noise
    r1 = cls(**params).fit(shop, rng=3, noise_seed=7)
    r2 = cls(**params).fit(shop, rng=4, noise_seed=7)
    np.testing.assert_array_equal(r1.score_matrix(x), r2.score_matrix(x))
    r3 = cls(**params).fit(shop, noise_seed=8)
    assert not np.array_equal(r1.score_matrix(x), r3.score_matrix(x))
    for r in (r1, r2, r3):
        assert r.privacy is None and r.release is None and r.reproducible_noise


def test_dp_bpr_is_accounted_by_opacus_and_reproducible_only_on_request(
    two_groups: InteractionDataset, tmp_path: Path
) -> None:
    params = {"epsilon": 4.0, "epochs": 3, "sample_rate": 0.5, "embedding_size": 4}
    ledger = PrivacyLedger(tmp_path, Budget(10.0, 1e-2))
    a = DPBPR(**params).fit(two_groups, rng=1, ledger=ledger)
    b = DPBPR(**params).fit(two_groups, rng=1)
    assert not np.array_equal(a.target, b.target)
    r1 = DPBPR(**params).fit(two_groups, rng=1, noise_seed=5, ledger=ledger)
    r2 = DPBPR(**params).fit(two_groups, rng=1, noise_seed=5)
    np.testing.assert_array_equal(r1.target, r2.target)
    assert r1.privacy is None and r1.reproducible_noise
    (entry,) = ledger.entries()  # the reproducible fit is no release: nothing charged
    assert entry["model"] == "dp_bpr" and entry["epsilon"] == 4.0 and entry["unit"] == "user"
    d = entry["details"]
    # basic composition of the Gaussian part (count + popularity prior) and DP-SGD
    assert d["gaussian_epsilon"] + d["dpsgd_epsilon"] == pytest.approx(4.0)
    assert d["gaussian_delta"] + d["dpsgd_delta"] == pytest.approx(entry["delta"])
    assert pld_epsilon(
        [d["count_noise_multiplier"], d["popularity_noise_multiplier"]], d["gaussian_delta"]
    ) == pytest.approx(d["gaussian_epsilon"], rel=0.02)
    # the noise multiplier meets its share under Opacus' accountant
    eps = dp_module.dpsgd_epsilon(
        d["noise_multiplier"],
        d["dpsgd_delta"],
        sample_rate=d["sample_rate"],
        steps=d["steps"],
        accountant="rdp",
    )
    assert eps <= d["dpsgd_epsilon"] * 1.01
    assert d["steps"] == 3 * 2 and d["sample_rate"] == 0.5  # from the config, not the data
    ev = a.release.event
    assert ev["kind"] == "composed"
    sgd = ev["events"][-1]
    assert sgd == {
        "kind": "self_composed",
        "count": 6,
        "event": {
            "kind": "poisson_sampled",
            "sampling_probability": 0.5,
            "event": {"kind": "gaussian", "noise_multiplier": d["noise_multiplier"]},
        },
    }
    assert a.noise_multiplier > 0 and a.privacy is not None and "dp-sgd" in a.privacy.mechanism
    assert a.train_losses == []


# ---- the ledger ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("cls", "params"), [*CASES, (DPBPR, {"epsilon": 1.0, "epochs": 1})])
def test_over_budget_release_is_refused_before_any_noise(
    two_groups: InteractionDataset,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    cls: type,
    params: dict[str, Any],
) -> None:
    # deltas at the releases' own: an accountant cannot trade delta for epsilon here
    ledger = PrivacyLedger(tmp_path, Budget(1.5, 2.2e-6))
    ledger.charge(dp_module.Release("earlier", 1.0, 1e-6, "gaussian", "x"))
    drawn: list[str] = []
    real_noise, real_sym = (
        dp_module.GaussianMechanism.add_noise,
        dp_module.GaussianMechanism.add_symmetric_noise,
    )
    monkeypatch.setattr(
        dp_module.GaussianMechanism,
        "add_noise",
        lambda self, *a, **k: drawn.append("noise") or real_noise(self, *a, **k),
    )
    monkeypatch.setattr(
        dp_module.GaussianMechanism,
        "add_symmetric_noise",
        lambda self, *a, **k: drawn.append("sym") or real_sym(self, *a, **k),
    )
    model = cls(**{**params, "epsilon": 1.0})
    with pytest.raises(BudgetExceededError):
        model.fit(two_groups, ledger=ledger)
    assert drawn == []
    assert len(ledger.entries()) == 1
    assert not model._fitted
    ok = cls(**{**params, "epsilon": 0.5}).fit(two_groups, ledger=ledger)
    assert ok.privacy is not None and len(ledger.entries()) == 2


def test_non_private_fit_charges_nothing(two_groups: InteractionDataset, tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path, Budget(1.0, 1e-2))
    m = DPEASE(epsilon=math.inf).fit(two_groups, ledger=ledger)
    assert m.privacy is None and ledger.entries() == []


def test_delta_above_one_over_ten_expected_users_is_refused(
    two_groups: InteractionDataset,
) -> None:
    with pytest.raises(ConfigError, match="delta"):
        DPPopularity(epsilon=1.0, delta=0.01).fit(two_groups)  # bound 1/(10 x 100_000)
    with pytest.raises(ConfigError, match="delta"):
        DPPopularity(epsilon=1.0, delta=1e-3, expected_users=1000).fit(two_groups)
    m = DPPopularity(epsilon=1.0, expected_users=1000).fit(two_groups)
    assert m.privacy is not None and m.privacy.delta == pytest.approx(1e-4)


# ---- helpers and post-processing -----------------------------------------------------------------
def test_most_recent_items_keeps_the_latest_distinct_items(two_groups: InteractionDataset) -> None:
    mask = most_recent_items(two_groups, 2)
    assert np.diff(mask.indptr).max() <= 2
    u = 0
    seq = two_groups.sequences()[u]
    latest = list(dict.fromkeys(seq[::-1].tolist()))[:2]
    assert sorted(mask[u].indices.tolist()) == sorted(latest)


def test_spectral_denoise_recovers_a_low_rank_signal() -> None:
    rng = np.random.default_rng(0)
    n, s = 200, 0.5
    v = rng.standard_normal((n, 2))
    signal = v @ np.diag([60.0, 40.0]) @ v.T / n
    noise = dp_module.GaussianMechanism(s, 1.0).add_symmetric_noise(
        np.zeros((n, n)), NoiseSource.reproducible(0)
    )
    est, rank = spectral_denoise(signal + noise, s)
    assert rank == 2
    assert np.linalg.norm(est - signal) < 0.5 * np.linalg.norm(noise)


def test_models_save_and_load_their_guarantee(shop: InteractionDataset, tmp_path: Path) -> None:
    for m in [
        DPEASE(epsilon=3.0, top_items=50).fit(shop),
        DPItemKNN(epsilon=3.0, top_items=50, k=5).fit(shop),
    ]:
        m.save(tmp_path / m.name)
        back = Recommender.load(tmp_path / m.name)
        assert back.privacy == m.privacy and not back.reproducible_noise
        x = shop.matrix(binary=True)[:20]
        np.testing.assert_allclose(back.score_matrix(x), m.score_matrix(x), rtol=1e-6, atol=1e-6)
    assert sp.issparse(back.similarity)


# ---- DP-SGD for SASRec ---------------------------------------------------------------------------
def test_dp_sasrec_per_user_gradients_are_exact() -> None:
    """Opacus' per-example gradients of the batch-first SASRec loss equal each user's gradient."""
    import copy

    import torch
    from opacus import GradSampleModule

    from privrec.models.dp.sasrec import DPSASRecConfig
    from privrec.models.nn.sequence import PerUserNextItemLoss
    from privrec.models.sequential import build_sequence_net

    c = DPSASRecConfig(embedding_size=8, max_len=6, num_blocks=2, dropout=0.0)
    torch.manual_seed(0)
    mod = PerUserNextItemLoss(build_sequence_net(20, c, True, None, None))
    ref = copy.deepcopy(mod)
    seq = torch.tensor([[0, 0, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 7, 8]])
    tgt = torch.tensor([[0, 0, 4, 5, 6, 7], [0, 2, 3, 4, 5, 6], [0, 0, 0, 0, 8, 9]])
    neg = torch.tensor([[0, 0, 11, 12, 13, 14], [0, 15, 16, 17, 18, 19], [0, 0, 0, 0, 10, 11]])
    params = dict(ref.named_parameters())
    per_user = []
    for i in range(3):
        loss = ref(seq[i : i + 1], tgt[i : i + 1], neg[i : i + 1]).sum()
        per_user.append(
            dict(
                zip(
                    params,
                    torch.autograd.grad(loss, list(params.values()), allow_unused=True),
                    strict=True,
                )
            )
        )
    gsm = GradSampleModule(mod)
    gsm(seq, tgt, neg).mean().backward()  # loss_reduction "mean", as in training
    for name, p in gsm.named_parameters():
        n = name.removeprefix("_module.")
        for i in range(3):
            want = per_user[i][n] if per_user[i][n] is not None else torch.zeros_like(p)
            torch.testing.assert_close(p.grad_sample[i], want, rtol=1e-4, atol=1e-6)


def test_dp_sasrec_trains_and_charges_the_ledger(
    two_groups: InteractionDataset, tmp_path: Path
) -> None:
    from privrec.models.dp.sasrec import DPSASRec

    params = {"epsilon": 6.0, "epochs": 2, "embedding_size": 8, "sample_rate": 0.5, "max_len": 8}
    ledger = PrivacyLedger(tmp_path, Budget(7.0, 1.5e-6))  # no room for a second run
    a = DPSASRec(**params).fit(two_groups, rng=2, ledger=ledger)
    b = DPSASRec(**params).fit(two_groups, rng=2)
    x = a.input_matrix(two_groups)[:8]
    assert not np.array_equal(a.score_matrix(x), b.score_matrix(x))
    r1 = DPSASRec(**params).fit(two_groups, rng=2, noise_seed=3)
    r2 = DPSASRec(**params).fit(two_groups, rng=2, noise_seed=3)
    np.testing.assert_array_equal(r1.score_matrix(x), r2.score_matrix(x))
    assert r1.privacy is None and r1.reproducible_noise
    assert a.train_log == [] and a.train_seconds == 0.0
    (entry,) = ledger.entries()
    assert entry["model"] == "dp_sasrec" and entry["epsilon"] == 6.0 and entry["unit"] == "user"
    d = entry["details"]
    assert (
        dp_module.dpsgd_epsilon(
            d["noise_multiplier"],
            d["dpsgd_delta"],
            sample_rate=d["sample_rate"],
            steps=d["steps"],
            accountant="rdp",
        )
        <= d["dpsgd_epsilon"] * 1.01
    )
    assert d["dpsgd_epsilon"] == pytest.approx(6.0 * (1 - COUNT_SHARE))
    assert a.privacy is not None and a.privacy.epsilon == 6.0
    with pytest.raises(BudgetExceededError):
        DPSASRec(**params).fit(two_groups, ledger=ledger)
    with pytest.raises(ConfigError):
        DPSASRec(loss="full_softmax")


def test_dp_sasrec_ghost_clipping_trains(two_groups: InteractionDataset) -> None:
    """Opacus' ghost clipping (norms only) runs on the per-user module (contiguous inputs)."""
    from privrec.models.dp.sasrec import DPSASRec

    m = DPSASRec(
        epsilon=6.0,
        delta=1e-7,
        epochs=2,
        embedding_size=8,
        sample_rate=0.5,
        max_len=8,
        grad_sample_mode="ghost",
    ).fit(two_groups, rng=3)
    scores = m.score_matrix(m.input_matrix(two_groups)[:4])
    assert np.isfinite(scores).all() and m.noise_multiplier > 0


# ---- the shared release code ------------------------------------------------------------------
def test_start_private_fit_resolves_delta_and_chooses_the_noise_source() -> None:
    run = start_private_fit(epsilon=1.0, delta=None, expected_users=50, rng=3, seed=9)
    assert run.delta == pytest.approx(1 / 500) and run.seed == 3 and run.is_release
    assert not run.noise.is_reproducible
    rep = start_private_fit(
        epsilon=1.0, delta=None, expected_users=50, rng=None, seed=3, noise_seed=1
    )
    assert rep.reproducible and not rep.is_release
    inf = start_private_fit(epsilon=math.inf, delta=None, expected_users=5, rng=1, seed=0)
    assert not inf.private and not inf.is_release and not inf.reproducible
    with pytest.raises(ConfigError, match="delta"):
        start_private_fit(epsilon=1.0, delta=0.01, expected_users=50, rng=1, seed=0)


def test_noisy_item_counts_are_unit_row_sums_plus_noise() -> None:
    x = sp.csr_matrix(np.array([[1.0, 1.0, 0.0], [0.0, 3.0, 4.0]]))
    exact = noisy_item_counts(x, None, NoiseSource.secure())
    np.testing.assert_allclose(exact, [2**-0.5, 2**-0.5 + 0.6, 0.8])
    a = noisy_item_counts(x, 2.0, NoiseSource.reproducible(1))
    b = noisy_item_counts(x, 2.0, NoiseSource.reproducible(1))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, exact)
    c = noisy_item_counts(x, 2.0, NoiseSource.secure())
    assert not np.array_equal(a, c)
    with pytest.raises(TypeError):
        noisy_item_counts(x, 2.0, np.random.default_rng(1))  # type: ignore[arg-type]


def test_dp_item_item_models_share_one_fit() -> None:
    for cls in (DPEASE, DPItemKNN):
        assert issubclass(cls, PrivateGramRecommender)
        assert cls.fit is PrivateGramRecommender.fit


def test_dp_sgd_noise_and_poisson_sampling_come_from_the_noise_source(
    two_groups: InteractionDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opacus' own (seedable, non-cryptographic) generator draws nothing."""
    import torch

    calls = {"noise": 0, "coins": 0}
    real_noise, real_coins = NoiseSource.torch_normal, NoiseSource.bernoulli

    def noise(self: NoiseSource, std: float, reference: Any) -> Any:
        calls["noise"] += 1
        return real_noise(self, std, reference)

    def coins(self: NoiseSource, p: float, size: int) -> np.ndarray:
        calls["coins"] += 1
        return real_coins(self, p, size)

    def no_torch_noise(*a: Any, **k: Any) -> Any:
        raise AssertionError("torch.normal drew DP noise")

    monkeypatch.setattr(NoiseSource, "torch_normal", noise)
    monkeypatch.setattr(NoiseSource, "bernoulli", coins)
    import opacus.optimizers.optimizer as opt

    monkeypatch.setattr(opt, "_generate_noise", no_torch_noise)
    m = DPBPR(epsilon=4.0, epochs=2, sample_rate=0.5, embedding_size=4).fit(two_groups)
    assert m.steps == 4 and calls["coins"] == 4
    assert calls["noise"] >= 4  # one draw per noised parameter tensor per step
    assert torch.isfinite(torch.from_numpy(m.target)).all()
