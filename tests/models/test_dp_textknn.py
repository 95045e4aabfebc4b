"""DP text-neighbourhood kNN: the pattern is public, one shopper moves each statistic by at most
L2 norm 1 however many events they have, the two Gaussians compose to the claimed epsilon by
dp-accounting's PLD, the ledger is charged before any noise, and the noise is never seeded."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import dp_accounting
import numpy as np
import pytest

from privrec.core.errors import BudgetExceededError, ConfigError
from privrec.data.dataset import InteractionDataset
from privrec.data.synthetic import generate_shop_dataset
from privrec.models.base import Recommender
from privrec.models.dp.release import unit_column_sums
from privrec.models.dp.textknn import DPTextKNN, pattern_pairs, text_neighbour_pattern
from privrec.models.zoo import create_model
from privrec.privacy import dp as dp_module
from privrec.privacy.ledger import Budget, PrivacyLedger

TEXT = {"cache": False, "recency_half_life": 1.0}
INF = float("inf")


@pytest.fixture(scope="module", autouse=True)
def _one_embedding_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # the item text is encoded once per module, not at every fit (the encoder is the slow part)
    TEXT.update(cache=True, cache_dir=str(tmp_path_factory.mktemp("embeddings")))


@pytest.fixture(scope="module")
def shop() -> InteractionDataset:
    return generate_shop_dataset(n_items=80, n_users=160, seed=7)


@pytest.fixture(scope="module")
def vectors(shop: InteractionDataset) -> np.ndarray:
    return DPTextKNN(epsilon=INF, content_params=TEXT).fit(shop).content.item_embeddings


def one_heavy_shopper(shop: InteractionDataset, events: int = 400) -> InteractionDataset:
    """A dataset of one shopper with `events` events cycling through every item (many pairs)."""
    rng = np.random.default_rng(0)
    items = rng.integers(0, shop.n_items, events).astype(np.int32)
    return replace(
        shop,
        user_idx=np.zeros(events, dtype=np.int32),
        item_idx=items,
        event_type=np.zeros(events, dtype=shop.event_type.dtype),
        ts=np.arange(events, dtype=shop.ts.dtype),
        rating=np.zeros(events, dtype=shop.rating.dtype),
        arrival=None,
    )


def test_the_pattern_holds_each_item_s_text_neighbours(vectors: np.ndarray) -> None:
    n = vectors.shape[0]
    keys = text_neighbour_pattern(vectors, 5)
    lo, hi = keys // n, keys % n
    assert np.all(lo < hi) and np.all(np.diff(keys) > 0)
    s = vectors @ vectors.T
    np.fill_diagonal(s, -np.inf)
    pairs = set(zip(lo.tolist(), hi.tolist(), strict=True))
    for i in range(n):
        for j in np.argsort(-s[i], kind="stable")[:5].tolist():
            assert (min(i, j), max(i, j)) in pairs
    assert keys.size <= 5 * n


def test_a_shopper_with_many_events_contributes_l2_norm_one(
    shop: InteractionDataset, vectors: np.ndarray
) -> None:
    keys = text_neighbour_pattern(vectors, 20)
    heavy = one_heavy_shopper(shop)
    values, norms = pattern_pairs(heavy, keys, 3)
    assert np.count_nonzero(values) > 20  # many pairs, so the weighting matters
    assert np.linalg.norm(values) == pytest.approx(1.0)
    assert norms[0] == pytest.approx(1.0)
    # removing any one shopper from a real dataset moves the statistic by exactly that norm
    full, per_user = pattern_pairs(shop, keys, 3)
    assert per_user.max() <= 1.0 + 1e-12
    for u in (0, 5, 17):
        without, _ = pattern_pairs(shop.subset(shop.user_idx != u), keys, 3)
        assert np.linalg.norm(full - without) == pytest.approx(per_user[u], abs=1e-9)
    # the popularity statistic: unit rows, so norm <= 1 as well
    pop = unit_column_sums(heavy.matrix(binary=True))
    assert np.linalg.norm(pop) == pytest.approx(1.0)


def test_released_entries_lie_on_the_public_pattern(shop: InteractionDataset) -> None:
    m = DPTextKNN(epsilon=INF, neighbours=4, content_params=TEXT).fit(shop)
    keys = text_neighbour_pattern(m.content.item_embeddings, 4)
    n = shop.n_items
    coo = m.pairs.tocoo()
    lo, hi = np.minimum(coo.row, coo.col), np.maximum(coo.row, coo.col)
    assert np.isin(lo.astype(np.int64) * n + hi, keys).all()
    assert coo.nnz > 0


def test_the_two_gaussians_compose_to_epsilon(shop: InteractionDataset) -> None:
    eps = 2.0
    m = DPTextKNN(epsilon=eps, content_params=TEXT).fit(shop)
    det = m.release.details
    zs = [det["noise_multiplier_popularity"], det["noise_multiplier_pairs"]]
    acc = dp_accounting.pld.PLDAccountant()
    ev = dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(z) for z in zs])
    assert float(acc.compose(ev).get_epsilon(1e-6)) == pytest.approx(eps, rel=0.02)
    assert det["sensitivity_l2_pairs"] == 1.0 and det["sensitivity_l2_popularity"] == 1.0
    assert m.noise_std == pytest.approx(zs[1])
    assert m.privacy is not None and m.privacy.epsilon == eps and m.privacy.unit == "user"
    # the share sets the ratio of the multipliers (Gaussian-DP costs add as 1 / z^2)
    share = det["popularity_share"]
    assert (zs[1] / zs[0]) ** 2 == pytest.approx(share / (1 - share), rel=1e-6)


def test_it_is_charged_before_any_noise(
    shop: InteractionDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[float] = []
    real = dp_module.GaussianMechanism.add_noise
    monkeypatch.setattr(
        dp_module.GaussianMechanism,
        "add_noise",
        lambda self, *a, **k: drawn.append(self.sigma) or real(self, *a, **k),
    )
    ledger = PrivacyLedger(tmp_path, Budget(0.5, 1e-5))
    with pytest.raises(BudgetExceededError):
        DPTextKNN(epsilon=1.0, content_params=TEXT).fit(shop, ledger=ledger)
    assert drawn == [] and ledger.entries() == []
    ok = PrivacyLedger(tmp_path / "ok", Budget(10.0, 1e-5))
    m = DPTextKNN(epsilon=1.0, content_params=TEXT).fit(shop, ledger=ok)
    entries = ok.entries()
    assert len(entries) == 1 and entries[0]["model"] == "dp_textknn"
    assert len(drawn) == 2 and m.release is not None


def test_the_noise_is_never_seeded(shop: InteractionDataset) -> None:
    a = DPTextKNN(epsilon=1.0, threshold=0.0, content_params=TEXT).fit(shop, rng=1)
    b = DPTextKNN(epsilon=1.0, threshold=0.0, content_params=TEXT).fit(shop, rng=1)
    assert not np.array_equal(a.popularity, b.popularity)
    assert a.privacy is not None and not a.reproducible_noise
    # a noise seed reproduces the draw, and such a model is no DP release
    c = DPTextKNN(epsilon=1.0, content_params=TEXT).fit(shop, noise_seed=3)
    d = DPTextKNN(epsilon=1.0, content_params=TEXT).fit(shop, noise_seed=3)
    np.testing.assert_array_equal(c.popularity, d.popularity)
    assert c.privacy is None and c.reproducible_noise


def test_without_noise_the_pairs_are_the_exact_statistic(shop: InteractionDataset) -> None:
    m = DPTextKNN(epsilon=INF, neighbours=6, window=2, content_params=TEXT).fit(shop)
    keys = text_neighbour_pattern(m.content.item_embeddings, 6)
    values, _ = pattern_pairs(shop, keys, 2)
    n = shop.n_items
    got = np.asarray(m.pairs[keys // n, keys % n]).ravel()
    np.testing.assert_allclose(got, values, rtol=1e-6)
    assert m.privacy is None


def test_weights_shape_the_blend_and_save_load_round_trips(
    shop: InteractionDataset, tmp_path: Path
) -> None:
    m = DPTextKNN(epsilon=4.0, content_params=TEXT).fit(shop, rng=2)
    h = m.history_matrix([shop.history(u) for u in range(20)])
    m.save(tmp_path / "model")
    back = Recommender.load(tmp_path / "model")
    np.testing.assert_allclose(back.score_matrix(h), m.score_matrix(h), rtol=1e-6, atol=1e-6)
    assert back.privacy == m.privacy
    only_text = create_model(
        "dp_textknn", epsilon=4.0, content_params=TEXT, cf_weight=0.0, popularity_weight=0.0
    ).fit(shop)
    np.testing.assert_allclose(
        only_text.score_matrix(h), only_text.content.score_matrix(h), rtol=1e-6, atol=1e-6
    )
    assert math.isfinite(float(m.score_matrix(h).sum()))


def test_a_fine_tuned_encoder_is_refused() -> None:
    with pytest.raises(ConfigError, match="adapter"):
        DPTextKNN(content_params={"adapter": "mine"})
    with pytest.raises(ConfigError, match="model_path"):
        DPTextKNN(content_params={"model_path": "/somewhere"})
