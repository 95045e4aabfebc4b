"""Poisoning attacks, fake-profile detection and the robustness report on a small synthetic shop."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from privrec.data.dataset import InteractionDataset
from privrec.data.splitters import stratified_split
from privrec.evaluation.attacks import (
    ATTACKS,
    choose_targets,
    inject_attack,
    item_popularity,
    with_users,
)
from privrec.evaluation.detection import detect_fake_profiles, precision_recall, profile_features
from privrec.evaluation.robustness import (
    RobustnessConfig,
    robustness_report,
    target_hit_rate,
    write_report,
)
from privrec.models.zoo import create_model

N_USERS, N_ITEMS = 300, 400


def make_shop(seed: int = 0) -> InteractionDataset:
    """Zipf-popular items in 4 categories; users mostly stay in one category; 1-5 ratings."""
    rng = np.random.default_rng(seed)
    pop = 1.0 / np.arange(1, N_ITEMS + 1) ** 0.8
    cats = np.arange(N_ITEMS) % 4
    rows = []
    for u in range(N_USERS):
        home = u % 4
        p = pop * np.where(cats == home, 4.0, 1.0)
        n = int(rng.integers(5, 15))
        items = rng.choice(N_ITEMS, size=n, replace=False, p=p / p.sum())
        t = 1_700_000_000.0 + u * 10_000 + np.sort(rng.uniform(0, 5_000, n))
        for i, ts in zip(items, t, strict=True):
            rows.append((f"user{u:03d}", f"item{i:02d}", "rating", ts, float(rng.integers(1, 6))))
    ev = pd.DataFrame(rows, columns=["user", "item", "type", "ts", "rating"])
    meta = pd.DataFrame(
        {"item": [f"item{i:02d}" for i in range(N_ITEMS)], "category": [f"cat{c}" for c in cats]}
    )
    return InteractionDataset.from_events(ev, item_meta=meta, name="shop")


@pytest.fixture(scope="module")
def shop() -> InteractionDataset:
    return make_shop()


def test_targets_are_unpopular_and_seeded(shop: InteractionDataset) -> None:
    t = choose_targets(shop, 3, seed=1)
    pop = item_popularity(shop)
    assert len(t) == 3 and (pop[t] > 0).all() and (pop[t] <= np.median(pop[pop > 0])).all()
    np.testing.assert_array_equal(t, choose_targets(shop, 3, seed=1))


@pytest.mark.parametrize("kind", ATTACKS)
def test_injection_appends_fakes_who_hold_the_targets(shop: InteractionDataset, kind: str) -> None:
    p = inject_attack(shop, kind, fraction=0.05, n_targets=2, filler_size=6, seed=3)  # type: ignore[arg-type]
    ds = p.dataset
    assert len(p.fake_users) == 15 and p.n_real == N_USERS
    np.testing.assert_array_equal(p.fake_users, np.arange(N_USERS, N_USERS + 15))
    # the real shoppers' events are untouched
    real = ds.user_idx < N_USERS
    np.testing.assert_array_equal(ds.item_idx[real], shop.item_idx)
    np.testing.assert_array_equal(ds.user_idx[real], shop.user_idx)
    x = ds.matrix(binary=True)
    assert (x[p.fake_users][:, p.targets].toarray() > 0).all()
    sizes = np.diff(x.indptr)[p.fake_users]
    assert (sizes == 2 + len(p.selected) + 6).all()
    assert all(re.fullmatch(r"[0-9a-f]{32}", k) for k in ds.users.decode(p.fake_users))
    fake_r = ds.rating[~real]
    assert np.isfinite(fake_r).all() and fake_r.min() >= 1 and fake_r.max() <= 5
    if kind == "bandwagon":
        top = np.argsort(-item_popularity(shop), kind="stable")[:10]
        assert (
            set(p.selected.tolist()) == set(top.tolist()) - set(p.targets.tolist())
            or len(set(p.selected) & set(top)) >= 8
        )
    if kind == "segment":
        cat = shop.item_meta["category"].to_numpy()
        assert (cat[p.selected] == cat[p.targets[0]]).all()
    again = inject_attack(shop, kind, fraction=0.05, n_targets=2, filler_size=6, seed=3)  # type: ignore[arg-type]
    np.testing.assert_array_equal(again.dataset.item_idx, ds.item_idx)


def test_bad_arguments_name_the_field(shop: InteractionDataset) -> None:
    with pytest.raises(ValueError, match="kind"):
        inject_attack(shop, "love-bombing")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fraction"):
        inject_attack(shop, "random", fraction=0.0)


def test_an_attack_raises_the_targets_exposure(shop: InteractionDataset) -> None:
    train, test = stratified_split(shop, 0.75, filter_by="user", seed=1)
    targets = choose_targets(train, 2, seed=2)
    real = np.arange(train.n_users)
    clean = create_model("ease", reg=20.0, binary=True).fit(train)
    before = target_hit_rate(clean, train, targets, users=real)
    p = inject_attack(train, "bandwagon", fraction=0.05, targets=targets, seed=2)
    poisoned = create_model("ease", reg=20.0, binary=True).fit(p.dataset)
    after = target_hit_rate(poisoned, p.dataset, targets, users=real)
    assert after > before + 0.1
    assert with_users(test, p.dataset.users).n_users == p.dataset.n_users


def test_detection_finds_obvious_bandwagon_profiles(shop: InteractionDataset) -> None:
    p = inject_attack(shop, "bandwagon", fraction=0.05, n_targets=3, seed=4)
    det = detect_fake_profiles(p.dataset)
    pr = precision_recall(det.flagged, p.fake_users)
    assert pr["recall"] >= 0.9 and pr["precision"] >= 0.8, pr
    assert set(p.targets.tolist()) <= set(det.suspected_targets.tolist())
    # on clean data, almost nobody is flagged
    assert len(detect_fake_profiles(shop).flagged) <= 0.02 * N_USERS


def test_rate_features_see_a_bot_burst(shop: InteractionDataset) -> None:
    p = inject_attack(shop, "random", fraction=0.03, burst=True, seed=5)
    f = profile_features(p.dataset)
    real_max = f["events_per_minute"].to_numpy()[: p.n_real].max()
    assert (f["events_per_minute"].to_numpy()[p.fake_users] > real_max).all()


def test_precision_recall_counts() -> None:
    assert precision_recall(np.array([1, 2, 3, 4]), np.array([3, 4, 5])) == {
        "precision": 0.5,
        "recall": 2 / 3,
        "flagged": 4.0,
        "fakes": 3.0,
    }


def test_report_runs_end_to_end_and_writes_files(shop: InteractionDataset, tmp_path: Path) -> None:
    train, test = stratified_split(shop, 0.75, filter_by="user", seed=1)
    cfg = RobustnessConfig(
        base_model="ease",
        base_params={"reg": 20.0, "binary": True},
        apr_params={"embedding_size": 8, "epochs": 3, "eps": 0.1},
        dp_params={"epsilon": 8.0, "reg": 20.0},
        attacks=("bandwagon", "random"),
        fractions=(0.05,),
        defended=(("bandwagon", 0.05),),
        defences=("apr", "detect", "dp"),
        n_targets=2,
        seed=3,
    )
    lines: list[str] = []
    rep = robustness_report(train, test, config=cfg, progress=lines.append)
    assert {g["attack"] for g in rep["grid"]} == {"bandwagon", "random"}
    cell = rep["defended"][0]
    assert [r["defence"] for r in cell["rows"]] == ["none", "apr", "detect", "dp"]
    none, detect = cell["rows"][0], cell["rows"][2]
    assert none["rise"] > 0 and detect["target_hr"] < none["target_hr"]
    paths = write_report(rep, tmp_path)
    assert json.loads(paths["json"].read_text())["dataset"] == train.name
    assert "| detect |" in paths["markdown"].read_text()
    assert paths["attacks"].read_bytes()[:4] == b"\x89PNG"
    assert lines
    with pytest.raises(ValueError, match="defences"):
        robustness_report(train, test, config=RobustnessConfig(defences=("prayer",)))
