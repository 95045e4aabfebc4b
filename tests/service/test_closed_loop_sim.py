"""The closed-loop simulator: the demo shop's generative truth, a tiny loop through the service."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from privrec.data.synthetic import generate_shop, generate_shop_truth
from privrec.evaluation.loop_world import ShopWorld, WorldConfig
from privrec.service.loop_sim import ArmSpec, run_arm

# sha256 of generate_shop(120, 40, 3)'s events and catalogue as CSV, taken before the truth
# function was added: the demo's output must not change.
PINNED = "651919a99cc7f74f5982e25727cfba44f5f76a39afc577b480a4dcf4e484f1b8"


def _digest(events: pd.DataFrame, catalogue: pd.DataFrame) -> str:
    blob = events.to_csv(index=False).encode() + catalogue.to_csv(index=False).encode()
    return hashlib.sha256(blob).hexdigest()


def test_truth_reproduces_the_demo_exactly() -> None:
    events, catalogue = generate_shop(120, 40, 3)
    assert _digest(events, catalogue) == PINNED
    t_events, t_catalogue, truth = generate_shop_truth(120, 40, 3)
    pd.testing.assert_frame_equal(t_events, events)
    pd.testing.assert_frame_equal(t_catalogue, catalogue)
    assert truth.affinity.shape == (40, 120)
    assert list(truth.items) == list(catalogue["item"])


def test_truth_explains_the_demo_events() -> None:
    events, _, truth = generate_shop_truth(150, 60, 11)
    p = truth.view_probabilities(np.arange(60))
    assert np.allclose(p.sum(axis=1), 1.0)
    index = {k: i for i, k in enumerate(truth.items.tolist())}
    views = events[events["type"] == "view"]
    u = views["user"].str.slice(8).astype(int).to_numpy()
    i = views["item"].map(index).to_numpy()
    assert (p[u, i] > 0).all()  # every viewed item had a chance under the truth
    # the truth's likelihood of the real views beats a uniform and a popularity guess
    flat = np.log(1.0 / 150)
    counts = np.bincount(i, minlength=150) + 1.0
    pop = np.log(counts / counts.sum())[i].mean()
    assert np.log(p[u, i]).mean() > max(flat, pop)
    # carts only of items in stock, never more likely than the generator's cap
    c = truth.cart_given_view(np.arange(60))
    assert (c[:, ~truth.in_stock] == 0).all() and c.max() <= 0.6
    # more shoppers: the first ones keep their tastes
    _, _, bigger = generate_shop_truth(150, 80, 11)
    assert np.array_equal(bigger.affinity[:60], truth.affinity)


def test_world_is_the_same_for_every_arm() -> None:
    cfg = WorldConfig(n_items=120, n_history_users=40, n_new_users=10, days=2, visits_per_day=15)
    a, b = ShopWorld(cfg), ShopWorld(cfg)
    assert a.history.equals(b.history)
    va, vb = a.visits(2), b.visits(2)
    assert [v.user for v in va] == [v.user for v in vb]
    assert [v.organic for v in va] == [v.organic for v in vb]
    # items launched later have no history and are not in the day-0 catalogue
    later = set(a.catalogue["item"][a.launch_day > 0])
    assert later and not later & set(a.history["item"]) and not later & set(a.launches(0)["item"])
    # new shoppers join after day 0 and have no history
    assert not set(a.history["user"]) & {f"shopper-{u:05d}" for u in range(40, 50)}


@pytest.mark.parametrize("retrain", [False, True])
def test_tiny_loop_runs_through_the_service(tmp_path: Path, retrain: bool) -> None:
    cfg = WorldConfig(
        n_items=150, n_history_users=60, n_new_users=10, days=2, visits_per_day=20, seed=5
    )
    world = ShopWorld(cfg)
    arm = ArmSpec("loop", "ease", {"reg": 50.0}, retrain_every_hours=24.0 if retrain else None)
    lines: list[str] = []
    r = run_arm(world, arm, tmp_path / "data", progress=lines.append)
    assert len(lines) == 2 and len(r.purchases) == 40
    # every served list was logged as an impression by the serving path
    assert r.impressions == 40
    # the outcomes came back through the gate and were attributed to their lists
    assert r.clicks.sum() > 0
    assert r.attributed["clicked_lists"] == int((r.clicks > 0).sum())
    assert r.attributed["purchases"] == int(r.purchases.sum())
    assert (r.expected > 0).any()
    if retrain:  # the scheduler's tick at the start of day 2 retrained the model
        assert [j["status"] for j in r.jobs] == ["succeeded"]
    else:
        assert r.jobs == []
