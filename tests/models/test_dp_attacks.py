"""Attacks on the DP models' releases: each must fail now.

- Seed replay: with the public seed, an attacker re-draws the noise and subtracts it.
- Retrain difference: fit with and without one shopper, subtract; the noise must not cancel.
- Artifacts: nothing exact (item counts, the number of users, losses, first-interaction order)
  in what a DP model saves.
- Reproducible noise (an explicit `noise_seed`) and epsilon = inf are marked as no DP release.

Small synthetic data with fixed data seeds; statistical bounds are generous (several standard
deviations of a permutation baseline), so the tests are not flaky.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file
from scipy.stats import rankdata

from privrec.data.dataset import InteractionDataset
from privrec.data.synthetic import generate_shop_dataset
from privrec.models.base import Recommender
from privrec.models.dp.bpr import DPBPR
from privrec.models.dp.ease import DPEASE
from privrec.models.dp.hybrid import DPHybrid
from privrec.models.dp.itemknn import DPItemKNN
from privrec.models.dp.popularity import DPPopularity
from privrec.models.dp.release import (
    REPRODUCIBLE_KEY,
    in_public_item_order,
    most_recent_items,
    unit_rows,
)
from privrec.models.dp.sasrec import DPSASRec
from privrec.privacy.ledger import Budget, PrivacyLedger

N_USERS = 173  # an uncommon number, so that finding it in an artifact means something


@pytest.fixture(scope="module")
def shop() -> InteractionDataset:
    return in_public_item_order(generate_shop_dataset(n_items=90, n_users=N_USERS, seed=21))


def n_active(ds: InteractionDataset) -> int:
    return int(np.count_nonzero(np.bincount(ds.user_idx, minlength=ds.n_users)))


def unit_row_sums(model: Recommender, ds: InteractionDataset) -> np.ndarray:
    x = model.input_matrix(ds).astype(np.float64)
    return np.asarray(unit_rows(x).sum(axis=0), dtype=np.float64).ravel()


# ---- (a) seed replay -----------------------------------------------------------------------------
def test_replaying_the_seed_does_not_recover_dp_popularity_counts(shop: InteractionDataset) -> None:
    m = DPPopularity(epsilon=1.0).fit(shop, rng=42)
    again = DPPopularity(epsilon=1.0).fit(shop, rng=42)
    assert not np.array_equal(m.popularity, again.popularity)  # same seed, fresh noise
    exact = DPPopularity(epsilon=math.inf).fit(shop).popularity.astype(np.float64)
    sigma = m.release.details["noise_std"]
    # the attacker re-draws what a fit seeded with 42 would have drawn and subtracts it
    replay = np.random.default_rng(42).normal(0.0, sigma, shop.n_items)
    pos = m.popularity > 0  # entries not clipped at 0
    assert pos.sum() > 10
    recovered = m.popularity[pos].astype(np.float64) - replay[pos]
    assert np.mean(np.abs(recovered - exact[pos]) < 1e-3) < 0.05


def test_replaying_the_seed_does_not_recover_dp_ease_selection_counts(
    shop: InteractionDataset,
) -> None:
    m = DPEASE(epsilon=1.0, top_items=30).fit(shop, rng=42)
    exact = unit_row_sums(m, shop)
    z = m.release.details["noise_multiplier_selection"]
    replay = np.random.default_rng(42).normal(0.0, z, shop.n_items)
    pos = m.popularity > 0
    assert pos.sum() > 10
    recovered = m.popularity[pos].astype(np.float64) - replay[pos]
    assert np.mean(np.abs(recovered - exact[pos]) < 1e-3) < 0.05
    again = DPEASE(epsilon=1.0, top_items=30).fit(shop, rng=42)
    assert not np.array_equal(m.noisy_gram, again.noisy_gram)


def test_dp_sgd_is_not_determined_by_data_and_seed(shop: InteractionDataset) -> None:
    params = {"epsilon": 4.0, "epochs": 1, "embedding_size": 4, "sample_rate": 0.5}
    a = DPBPR(**params).fit(shop, rng=42)
    b = DPBPR(**params).fit(shop, rng=42)
    assert not np.array_equal(a.target, b.target)
    assert not np.array_equal(a.bias, b.bias)  # the popularity prior is noisy and fresh too


# ---- (b) retrain difference ----------------------------------------------------------------------
def _percentiles(diff: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Where `items` rank among all items by `diff`, largest first: 0 top, 1 bottom (ties: mean)."""
    r = rankdata(-diff, method="average")
    return (r[items] - 1) / max(diff.size - 1, 1)


def _retrain_difference_percentiles(
    shop: InteractionDataset, release: Callable[[InteractionDataset], np.ndarray], shoppers: int
) -> tuple[float, float]:
    """Mean percentile of each shopper's items in release(D) - release(D minus the shopper),
    and the std of that mean for random item sets of the same sizes (permutation baseline)."""
    mask = most_recent_items(shop, 64)
    counts = np.diff(mask.indptr)
    users = [u for u in range(shop.n_users) if counts[u] >= 3][:shoppers]
    full = release(shop)
    found, sizes, diffs = [], [], []
    for u in users:
        d = full - release(shop.subset(shop.user_idx != u))
        items = mask[u].indices
        found.append(_percentiles(d, items))
        sizes.append(items.size)
        diffs.append(d)
    gen = np.random.default_rng(0)
    baseline = [
        np.concatenate(
            [
                _percentiles(d, gen.choice(d.size, size=k, replace=False))
                for d, k in zip(diffs, sizes, strict=True)
            ]
        ).mean()
        for _ in range(300)
    ]
    return float(np.concatenate(found).mean()), float(np.std(baseline))


@pytest.mark.parametrize(
    ("name", "release"),
    [
        (
            "dp_popularity",
            lambda ds: DPPopularity(epsilon=1.0).fit(ds, rng=42).popularity.astype(np.float64),
        ),
        (
            "dp_ease selection counts",
            lambda ds: DPEASE(epsilon=1.0, top_items=30).fit(ds, rng=42).popularity.astype(float),
        ),
        (
            "dp_itemknn, every item kept",
            lambda ds: (
                DPItemKNN(epsilon=1.0, top_items=500, k=5)
                .fit(ds, rng=42)
                .popularity.astype(np.float64)
            ),
        ),
    ],
)
def test_retrain_difference_does_not_single_out_the_shopper_s_items(
    shop: InteractionDataset,
    name: str,
    release: Callable[[InteractionDataset], np.ndarray],
) -> None:
    mean, sd = _retrain_difference_percentiles(shop, release, shoppers=12)
    # random items sit at 0.5 on average; the shopper's items must not rank measurably higher
    # (seeded noise cancels in the difference and puts them at the very top)
    assert mean > 0.5 - 5 * sd - 0.02, (name, mean, sd)


# ---- (c) nothing exact in an artifact ------------------------------------------------------------
TEXT = {"cache": False}
MODELS: list[tuple[type[Recommender], dict[str, Any]]] = [
    (DPPopularity, {"epsilon": 1.0}),
    (DPItemKNN, {"epsilon": 1.0, "k": 10}),
    (DPEASE, {"epsilon": 1.0, "top_items": 500}),
    (DPHybrid, {"epsilon": 1.0, "cf": "dp_ease", "content_params": TEXT}),
    (DPBPR, {"epsilon": 4.0, "epochs": 1, "embedding_size": 4, "sample_rate": 0.5}),
    (DPSASRec, {"epsilon": 4.0, "epochs": 1, "embedding_size": 8, "max_len": 6}),
]
IDS = [cls.name for cls, _ in MODELS]


def _numbers(doc: Any) -> list[float]:
    if isinstance(doc, bool):
        return []
    if isinstance(doc, int | float):
        return [float(doc)]
    if isinstance(doc, dict):
        return [v for x in doc.values() for v in _numbers(x)]
    if isinstance(doc, list):
        return [v for x in doc for v in _numbers(x)]
    return []


@pytest.mark.parametrize(("cls", "params"), MODELS, ids=IDS)
def test_no_exact_statistic_in_a_dp_artifact(
    shop: InteractionDataset, tmp_path: Path, cls: type[Recommender], params: dict[str, Any]
) -> None:
    model = cls(**params).fit(shop, rng=1)
    path = model.save(tmp_path / cls.name)
    doc = json.loads((path / "config.json").read_text())
    n = n_active(shop)
    numbers = np.array(_numbers(doc))
    assert not np.any(numbers == n), "the exact number of users is in config.json"
    assert not np.any(np.isclose(numbers, 1.0 / (10 * n), rtol=1e-9, atol=0.0)), "delta = 1/(10n)"
    assert doc["privacy"] is not None and doc["privacy"]["adjacency"] == "add/remove one user"
    assert doc[REPRODUCIBLE_KEY] is False

    def meta_of(d: dict[str, Any]) -> list[dict[str, Any]]:
        inner = d.get("meta", {})
        comps = inner.get("components", {})
        subs = [c.get("meta", {}) for c in comps.values()] if isinstance(comps, dict) else []
        return [inner, *subs]

    for meta in meta_of(doc):
        assert not meta.get("train_losses"), "training losses are exact statistics"
        assert not meta.get("train_log"), "training logs hold exact losses"
        assert not meta.get("train_seconds"), "training time grows with the number of users"
    # exact item statistics: the contribution-bounded counts and the unit-row column sums
    exact = [
        DPPopularity(epsilon=math.inf).fit(shop).popularity.astype(np.float64),
        unit_row_sums(DPEASE(epsilon=math.inf), shop),
    ]
    arrays = dict(load_file(str(path / "state.safetensors")))
    if (path / "derived.safetensors").exists():
        arrays.update(load_file(str(path / "derived.safetensors")))
    for key, arr in arrays.items():
        a = np.asarray(arr, dtype=np.float64).ravel()
        for e in exact:
            if a.size == e.size:
                assert not np.allclose(a, e, rtol=1e-4, atol=1e-4), f"{key} holds exact counts"


def test_the_public_item_order_does_not_depend_on_the_shoppers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ds = generate_shop_dataset(n_items=60, n_users=80, seed=5)
    frame = pd.DataFrame(
        {
            "user": ds.users.decode(ds.user_idx),
            "item": ds.items.decode(ds.item_idx),
            "type": ds.event_type,
            "ts": ds.ts,
        }
    ).sort_values("ts", kind="stable")
    catalogue = ds.item_meta
    everyone = InteractionDataset.from_events(frame, item_meta=catalogue)
    # the first shopper to touch anything: without them, first-interaction order changes
    first = frame["user"].iloc[0]
    without = InteractionDataset.from_events(frame[frame["user"] != first], item_meta=catalogue)
    assert everyone.items.keys != without.items.keys  # the flaw: order reveals the shoppers
    a, b = in_public_item_order(everyone), in_public_item_order(without)
    assert a.items.keys == b.items.keys == sorted(catalogue["item"].astype(str))
    # the events are the same events, re-encoded
    np.testing.assert_array_equal(
        np.array(a.items.decode(a.item_idx)), np.array(everyone.items.decode(everyone.item_idx))
    )
    with caplog.at_level(logging.WARNING, logger="privrec.models.dp.release"):
        ma = DPPopularity(epsilon=1.0).fit(a)
        mb = DPPopularity(epsilon=1.0).fit(b)
    assert "dp_item_order" not in caplog.text
    assert ma.categories == mb.categories and ma.item_category.tolist() == mb.item_category.tolist()
    with caplog.at_level(logging.WARNING, logger="privrec.models.dp.release"):
        DPPopularity(epsilon=1.0).fit(everyone)  # first-interaction order: said loudly
    assert "dp_item_order" in caplog.text


# ---- (d) reproducible noise and epsilon = inf are no DP release ----------------------------------
@pytest.mark.parametrize(("cls", "params"), MODELS, ids=IDS)
def test_reproducible_noise_is_marked_as_no_dp_release(
    shop: InteractionDataset, tmp_path: Path, cls: type[Recommender], params: dict[str, Any]
) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger", Budget(100.0, 1e-3))
    model: Any = cls(**params).fit(shop, rng=1, noise_seed=7, ledger=ledger)
    assert model.privacy is None and model.release is None and model.reproducible_noise
    assert ledger.entries() == []  # not a release, so nothing to charge
    path = model.save(tmp_path / "m")
    doc = json.loads((path / "config.json").read_text())
    assert doc[REPRODUCIBLE_KEY] is True and doc["privacy"] is None
    back: Any = Recommender.load(path)
    assert back.privacy is None and back.reproducible_noise


@pytest.mark.parametrize(("cls", "params"), MODELS[:4], ids=IDS[:4])
def test_epsilon_infinity_is_no_dp_release(
    shop: InteractionDataset, tmp_path: Path, cls: type[Recommender], params: dict[str, Any]
) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger", Budget(100.0, 1e-3))
    model: Any = cls(**{**params, "epsilon": math.inf}).fit(shop, ledger=ledger)
    assert model.privacy is None and model.release is None and not model.reproducible_noise
    assert ledger.entries() == []
    doc = json.loads((model.save(tmp_path / "m") / "config.json").read_text())
    assert doc["privacy"] is None
