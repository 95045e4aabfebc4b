"""A/B assignment, statistics and offline replay."""

from __future__ import annotations

import numpy as np
import pytest

from privrec.core.errors import ValidationError
from privrec.experiments.assignment import Experiment, Variant, assign, bucket, unit_id
from privrec.experiments.stats import VariantData, analyse, counts_from_records, srm_check
from privrec.experiments.store import ExperimentStore


def exp(weights: tuple[float, ...] = (1.0, 1.0), salt: str = "s1") -> Experiment:
    return Experiment(
        name="e1",
        variants=tuple(Variant(f"v{i}", weight=w) for i, w in enumerate(weights)),
        salt=salt,
    )


def test_assignment_is_deterministic_and_proportional() -> None:
    e = exp((1.0, 3.0))
    users = [f"{i:032x}" for i in range(20000)]
    first = [assign(e, u).name for u in users]
    assert first == [assign(e, u).name for u in users]
    share = first.count("v1") / len(first)
    assert 0.73 < share < 0.77
    other = [assign(exp((1.0, 3.0), salt="s2"), u).name for u in users]
    assert first != other  # a new salt reshuffles
    assert (
        0 <= bucket("s", "u") < 1
        and len(unit_id("s", "u")) == 16
        and unit_id("s", "u") != unit_id("t", "u")
    )


def test_experiment_validation() -> None:
    with pytest.raises(ValidationError, match="variants"):
        Experiment(name="x", variants=(Variant("a"),))
    with pytest.raises(ValidationError, match="name"):
        Experiment(name="Bad Name", variants=(Variant("a"), Variant("b")))
    e = Experiment.from_dict(exp().to_dict())
    assert e.salt == "s1" and "salt" not in e.to_dict(with_salt=False)


def test_stats_detect_a_real_difference_and_srm() -> None:
    rng = np.random.default_rng(0)
    a = VariantData(
        "a",
        impressions=5000,
        clicked_impressions=500,
        revenue_per_unit=rng.exponential(1.0, 2000),
        converted_units=200,
    )
    b = VariantData(
        "b",
        impressions=5000,
        clicked_impressions=650,
        revenue_per_unit=rng.exponential(1.3, 2000),
        converted_units=260,
    )
    rep = analyse([a, b], [0.5, 0.5])
    vb = rep["variants"][1]
    assert vb["vs_control"]["ctr"]["significant"] and vb["vs_control"]["ctr"]["p_value"] < 0.001
    assert rep["variants"][0]["ctr"]["ci"][0] < 0.1 < rep["variants"][0]["ctr"]["ci"][1]
    assert rep["srm"]["mismatch"] is False
    assert srm_check([1000, 1200], [0.5, 0.5])["mismatch"] is True
    assert srm_check([1000, 1010], [0.5, 0.5])["mismatch"] is False
    empty = analyse(
        [VariantData("a", 0, 0, np.zeros(0), 0), VariantData("b", 0, 0, np.zeros(0), 0)], [1, 1]
    )
    assert empty["variants"][1]["vs_control"]["ctr"]["p_value"] is None


def test_counts_from_records() -> None:
    ex = [
        {"rec_id": "r1", "variant": "a", "unit": "u1"},
        {"rec_id": "r2", "variant": "a", "unit": "u1"},
        {"rec_id": "r3", "variant": "b", "unit": "u2"},
    ]
    oc = [
        {"rec_id": "r1", "type": "click"},
        {"rec_id": "r1", "type": "purchase", "value": 5.0},
        {"rec_id": "r3", "type": "cart"},
    ]
    a, b = counts_from_records(["a", "b"], ex, oc)
    assert (
        a.impressions,
        a.clicked_impressions,
        a.units,
        a.converted_units,
        float(a.revenue_per_unit.sum()),
    ) == (2, 1, 1, 1, 5.0)
    assert (b.impressions, b.carts, b.units) == (1, 1, 1)


def test_store_attribution_and_erasure(tmp_path) -> None:
    s = ExperimentStore(tmp_path / "x.sqlite")
    s.create(exp())
    s.record_exposure("r1", "e1", "v0", "unit1", ["i1", "i2"])
    assert (
        s.record_outcomes(
            [
                {"rec_id": "r1", "type": "click", "item": "i1"},
                {"rec_id": "r1", "type": "click", "item": "i9"},
                {"rec_id": "nope", "type": "click", "item": "i1"},
            ]
        )
        == 1
    )
    ex, oc = s.records("e1")
    assert len(ex) == 1 and len(oc) == 1
    assert s.erase_units({"e1": "unit1"}) == 2
    assert s.records("e1") == ([], [])
    s.close()
    assert ExperimentStore(tmp_path / "x.sqlite").get("e1").salt == "s1"


def test_replay_prefers_the_better_model() -> None:
    from privrec.data.splitters import leave_one_out_test
    from privrec.data.synthetic import generate_shop_dataset
    from privrec.experiments.replay import replay
    from privrec.models.zoo import create_model

    ds = generate_shop_dataset(n_items=200, n_users=200, seed=4)
    train, test = leave_one_out_test(ds)
    e = Experiment(
        name="r",
        variants=(Variant("pop", model="popularity"), Variant("knn", model="itemknn")),
        salt="x",
    )
    rep = replay(e, train, test, lambda v, d: create_model(v.model).fit(d), k=10, paired=True)
    pop, knn = rep["variants"]
    assert pop["units"] == knn["units"] == rep["replay"]["held_out_users"]
    assert knn["ctr"]["value"] > pop["ctr"]["value"]
    live = replay(e, train, test, lambda v, d: create_model(v.model).fit(d), k=10)
    assert sum(v["units"] for v in live["variants"]) == live["replay"]["held_out_users"]
