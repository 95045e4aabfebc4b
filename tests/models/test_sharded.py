"""User-sharded statistics, sharded fits and batch top-k lists, in process and on a local Ray
cluster (two CPUs). The Ray cases skip when Ray (the optional `scale` extra) is not installed."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pytest
import scipy.sparse as sp

from privrec.core.errors import BudgetExceededError, ConfigError
from privrec.data.dataset import InteractionDataset
from privrec.data.synthetic import generate_shop_dataset
from privrec.models.als import ALS
from privrec.models.dp.ease import DPEASE
from privrec.models.dp.itemknn import DPItemKNN
from privrec.models.dp.release import in_public_item_order, unit_rows, window_pairs
from privrec.models.ease import EASE
from privrec.models.sharded import (
    ShardedFit,
    ShardRunner,
    shard_statistics,
    sharded_statistics,
    sharded_topk,
    user_ranges,
)
from privrec.privacy import dp as dp_module
from privrec.privacy.ledger import Budget, PrivacyLedger

WEIGHTS = {"view": 1.0, "cart": 3.0, "purchase": 10.0}


@pytest.fixture(scope="module")
def shop() -> InteractionDataset:
    return in_public_item_order(generate_shop_dataset(n_items=240, n_users=500, seed=11))


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[scale]')")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


class CountingRunner(ShardRunner):
    """A real runner that also counts the shard tasks it ran."""

    calls: int = 0

    def map(self, fn: Any, shards: Any, *shared: Any) -> list[Any]:
        self.calls += len(shards)
        return super().map(fn, shards, *shared)


@pytest.fixture(params=["in-process", "ray"])
def runner(request: pytest.FixtureRequest) -> CountingRunner:
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")  # started once for the module, shut down after
        return CountingRunner(use_ray=True)
    return CountingRunner()


def test_user_ranges_put_every_user_in_exactly_one_shard() -> None:
    for n_users, n_shards in [(10, 3), (7, 7), (5, 9), (1000, 4), (0, 2)]:
        ranges = user_ranges(n_users, n_shards)
        covered = np.concatenate([np.arange(a, b) for a, b in ranges] or [np.empty(0, int)])
        np.testing.assert_array_equal(covered, np.arange(n_users))
        assert len(ranges) <= n_shards
    with pytest.raises(ConfigError, match="shards"):
        user_ranges(10, 0)


# ---- exact statistics ----------------------------------------------------------------------------
def test_sharded_statistics_equal_the_single_process_ones_exactly(
    shop: InteractionDataset, runner: CountingRunner
) -> None:
    x = EASE(binary=False, event_weights=WEIGHTS).input_matrix(shop)
    assert set(np.unique(x.data)) > {1.0}  # weighted: the Gram is not a plain count
    whole = shard_statistics(x)
    parts = sharded_statistics(x, 3, runner)
    assert runner.calls == 3
    assert parts.n_users == whole.n_users == int(np.unique(shop.user_idx).size)
    assert np.array_equal(parts.item_counts, whole.item_counts)
    for a, b in [(parts.cooccurrence, whole.cooccurrence), (parts.gram, whole.gram)]:
        assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
        assert np.array_equal(a.data, b.data)
    # ... and they are the right statistics, computed another way
    pairs = np.unique(shop.user_idx.astype(np.int64) * shop.n_items + shop.item_idx)
    users, items = pairs // shop.n_items, pairs % shop.n_items
    assert np.array_equal(parts.item_counts, np.bincount(items, minlength=shop.n_items))
    b = np.zeros((shop.n_users, shop.n_items), np.int64)
    b[users, items] = 1
    assert np.array_equal(parts.cooccurrence.toarray(), b.T @ b)
    xd = x.toarray().astype(np.float64)
    assert np.array_equal(parts.gram.toarray(), xd.T @ xd)


def test_sharded_ease_is_the_single_process_ease(
    shop: InteractionDataset, runner: CountingRunner
) -> None:
    params = {"binary": False, "event_weights": WEIGHTS, "reg": 50.0}
    one = EASE(**params).fit(shop)
    many = ShardedFit(4, runner).fit(EASE(**params), shop)
    assert isinstance(many, EASE) and runner.calls == 4
    for a, b in [(one.gram.data, many.gram.data), (one.gram.indices, many.gram.indices)]:
        assert np.array_equal(a, b)
    assert np.array_equal(one.weights, many.weights)
    assert np.array_equal(one.p_diag, many.p_diag)
    assert many.can_forget  # G is kept: erasure still works on a sharded fit


def test_a_model_without_a_sharded_fit_is_refused_by_name(shop: InteractionDataset) -> None:
    with pytest.raises(ConfigError, match="als has no sharded fit"):
        ShardedFit(2).fit(ALS(epochs=1), shop)


def test_ray_missing_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ConfigError, match=r"ray: not installed.*\[scale\]"):
        ShardRunner(use_ray=True).map(abs, [1])


# ---- DP: the noise once, after the reduction -----------------------------------------------------
@pytest.fixture(params=["single", "sharded-in-process", "sharded-ray"])
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def path_runner(path: str, request: pytest.FixtureRequest) -> CountingRunner:
    if path == "sharded-ray":
        request.getfixturevalue("ray_cluster")
        return CountingRunner(use_ray=True)
    return CountingRunner()


def fit_dp(path: str, model: Any, ds: InteractionDataset, runner: ShardRunner, **kw: Any) -> Any:
    """The single-process fit, or the sharded one (3 user shards on `runner`)."""
    if path == "single":
        return model.fit(ds, **kw)
    return ShardedFit(3, runner).fit(model, ds, **kw)


def pld_epsilon(zs: list[float], delta: float) -> float:
    acc = dp_accounting.pld.PLDAccountant()
    event = dp_accounting.ComposedDpEvent([dp_accounting.GaussianDpEvent(z) for z in zs])
    return float(acc.compose(event).get_epsilon(delta))


def test_dp_ease_gram_noise_is_the_calibrated_gaussian_on_every_path(
    shop: InteractionDataset, path_runner: CountingRunner, path: str, tmp_path: Path
) -> None:
    runner = path_runner
    eps = 2.0
    ledger = PrivacyLedger(tmp_path, Budget(10.0, 1e-3))
    m = fit_dp(path, DPEASE(epsilon=eps, top_items=shop.n_items), shop, runner, ledger=ledger)
    assert runner.calls == (0 if path == "single" else 6)  # 3 shards x (selection, Gram)
    z_sel = m.release.details["noise_multiplier_selection"]
    z = m.release.details["noise_multiplier_matrix"]
    assert pld_epsilon([z_sel, z], 1e-6) == pytest.approx(eps, rel=0.02)
    x = unit_rows(m.input_matrix(shop).astype(np.float64)[:, m.selected])
    noise = m.noisy_gram - (x.T @ x).toarray()
    off = noise[np.triu_indices(shop.n_items, 1)]
    assert off.std() == pytest.approx(z / math.sqrt(2), rel=0.03)
    assert abs(off.mean()) < 0.05 * z
    assert np.diag(noise).std() == pytest.approx(z, rel=0.25)  # 240 draws; sqrt(2) off fails
    (entry,) = ledger.entries()  # charged once, whatever the number of shards
    assert entry["model"] == "dp_ease" and entry["epsilon"] == eps and entry["unit"] == "user"
    assert m.privacy is not None and m.privacy.epsilon == eps


def test_over_budget_release_is_refused_before_any_shard_runs_or_noise(
    shop: InteractionDataset,
    path_runner: CountingRunner,
    path: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
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
    runner = path_runner
    model = DPEASE(epsilon=1.0, top_items=40)
    with pytest.raises(BudgetExceededError):
        fit_dp(path, model, shop, runner, ledger=ledger)
    assert drawn == [] and runner.calls == 0 and len(ledger.entries()) == 1
    ok = fit_dp(path, DPEASE(epsilon=0.5, top_items=40), shop, runner, ledger=ledger)
    assert ok.privacy is not None and len(ledger.entries()) == 2
    assert drawn == ["noise", "sym"]  # selection counts, then the Gram: once each


@pytest.mark.parametrize(
    ("cls", "params"),
    [
        (DPEASE, {"epsilon": 1.0}),  # automatic size: noisy count + selection + Gram
        (DPEASE, {"epsilon": 4.0, "top_items": 80}),
        (DPItemKNN, {"epsilon": 2.0, "top_items": 60, "window": 3, "k": 10}),
    ],
    ids=["dp_ease-auto", "dp_ease-80", "dp_itemknn-window"],
)
def test_same_noise_gives_the_same_release_on_both_paths(
    shop: InteractionDataset, runner: CountingRunner, cls: type, params: dict[str, Any]
) -> None:
    one = cls(**params).fit(shop, noise_seed=21)
    many = ShardedFit(3, runner).fit(cls(**params), shop, noise_seed=21)
    assert runner.calls >= 6  # every statistic of the release came from the shards
    assert one.release is None and many.release is None  # reproducible noise: no release
    np.testing.assert_array_equal(one.selected, many.selected)
    np.testing.assert_allclose(one.popularity, many.popularity, rtol=1e-6, atol=1e-6)
    # the exact sums differ from the single-process ones by float64 rounding only
    np.testing.assert_allclose(one.noisy_gram, many.noisy_gram, rtol=0, atol=1e-10)
    # ... and a secure fit of either path is a charged release with the same accounting
    a = cls(**params).fit(shop)
    b = ShardedFit(3, runner).fit(cls(**params), shop)
    assert a.release is not None and b.release is not None
    assert a.release.details == b.release.details and a.release.event == b.release.event
    assert not a.reproducible_noise and not b.reproducible_noise


def test_window_pairs_reduce_exactly_over_user_shards(shop: InteractionDataset) -> None:
    sel = np.arange(shop.n_items)
    whole = window_pairs(shop, sel, 3)
    u = shop.user_idx
    total = sp.csr_matrix(whole.shape)
    for a, b in user_ranges(shop.n_users, 4):
        total = total + window_pairs(shop.subset((u >= a) & (u < b)), sel, 3)
    np.testing.assert_allclose(total.toarray(), whole.toarray(), rtol=1e-12, atol=0)


# ---- batch top-k lists ---------------------------------------------------------------------------
def test_sharded_topk_lists_equal_the_single_process_lists_exactly(
    shop: InteractionDataset, runner: CountingRunner
) -> None:
    model = EASE(reg=50.0).fit(shop)
    one = sharded_topk(model, shop, 20)
    many = sharded_topk(model, shop, 20, n_shards=3, runner=runner)
    assert runner.calls == 3
    assert one.items.shape == (shop.n_users, 20) and one.items.dtype == np.int32
    assert np.array_equal(one.items, many.items) and np.array_equal(one.scores, many.scores)
    # the lists are what serving recommends: seen items out, the same scores best first
    seen = shop.matrix(binary=True)
    for u in [0, 7, 123, shop.n_users - 1]:
        items, scores = model.recommend(shop.history(u), 20)
        np.testing.assert_array_equal(np.sort(many.scores[u]), np.sort(scores.astype(np.float32)))
        assert not set(many.items[u].tolist()) & set(seen[u].indices.tolist())
        assert many.items[u][0] == items[0]


def test_topk_refuses_a_bad_k_and_a_dataset_over_other_items(shop: InteractionDataset) -> None:
    model = EASE(reg=50.0).fit(shop)
    with pytest.raises(ConfigError, match="k: 0"):
        sharded_topk(model, shop, 0)
    other = generate_shop_dataset(n_items=60, n_users=20, seed=1)
    with pytest.raises(ConfigError, match="dataset: has 60 items"):
        sharded_topk(model, other, 5)
