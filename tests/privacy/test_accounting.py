"""Composition of release specs with dp-accounting's accountants."""

from __future__ import annotations

import math
from typing import Any

import dp_accounting
import pytest
from dp_accounting import pld, rdp

from privrec.core.errors import ConfigError
from privrec.privacy.accounting import (
    PLD_DISCRETIZATION,
    compose,
    epsilon_delta_spec,
    event_from_spec,
    spec_from_event,
)
from privrec.privacy.dp import gaussian_sigma

G = {"kind": "gaussian", "noise_multiplier": 3.0}
SPECS: list[dict[str, Any]] = [
    G,
    {"kind": "laplace", "parameter": 2.0},
    {"kind": "poisson_sampled", "sampling_probability": 0.01, "event": G},
    {"kind": "self_composed", "count": 7, "event": {"kind": "laplace", "parameter": 4.0}},
    {"kind": "composed", "events": [G, {"kind": "gaussian", "noise_multiplier": 1.5}]},
    {"kind": "repeat_and_select", "mean": 10.0, "shape": 1.0, "event": G},
]


def pld_epsilon(event: dp_accounting.DpEvent, delta: float) -> float:
    acc = pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    return float(acc.compose(event).get_epsilon(delta))


@pytest.mark.parametrize("spec", SPECS, ids=[s["kind"] for s in SPECS])
def test_round_trip(spec: dict[str, Any]) -> None:
    event = event_from_spec(spec)
    assert isinstance(event, dp_accounting.DpEvent)
    assert spec_from_event(event) == spec
    assert event_from_spec(spec_from_event(event)) == event


def test_specs_map_to_the_documented_events() -> None:
    assert event_from_spec(G) == dp_accounting.GaussianDpEvent(3.0)
    assert event_from_spec({"kind": "laplace", "parameter": 2.0}) == (
        dp_accounting.LaplaceDpEvent(2.0)
    )
    assert event_from_spec(SPECS[2]) == dp_accounting.PoissonSampledDpEvent(
        0.01, dp_accounting.GaussianDpEvent(3.0)
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "gaussian"},
        {"kind": "gaussian", "noise_multiplier": -1.0},
        {"kind": "gaussian", "noise_multiplier": "three"},
        {"kind": "poisson_sampled", "sampling_probability": 1.5, "event": G},
        {"kind": "self_composed", "count": 2.5, "event": G},
        {"kind": "composed", "events": "gaussian"},
        {"kind": "mystery"},
        epsilon_delta_spec(1.0, 1e-6),
    ],
)
def test_invalid_specs_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        event_from_spec(bad)


def test_one_gaussian_equals_dp_accountings_own_and_the_analytic_calibration() -> None:
    z = gaussian_sigma(1.0, 1e-6)
    eps = compose([{"kind": "gaussian", "noise_multiplier": z}], delta=1e-6)
    assert eps == pytest.approx(pld_epsilon(dp_accounting.GaussianDpEvent(z), 1e-6), abs=1e-12)
    # the PLD grid is pessimistic: at most a little above the exact analytic value
    assert 1.0 <= eps <= 1.0 + 5e-3


def test_mixed_composition_equals_dp_accountings_own() -> None:
    specs = [*SPECS[:5], G, G]
    expected = pld_epsilon(dp_accounting.ComposedDpEvent([event_from_spec(s) for s in specs]), 1e-5)
    # identical specs are self-composed in one step: the same up to the PLD grid
    assert compose(specs, delta=1e-5) == pytest.approx(expected, rel=1e-6)


def test_many_gaussians_compose_far_below_the_plain_sum() -> None:
    n, delta = 100, 1e-6
    z = gaussian_sigma(0.5, delta / n)  # each release is (0.5, delta / n)-DP
    eps = compose([{"kind": "gaussian", "noise_multiplier": z}] * n, delta=delta)
    expected = pld_epsilon(
        dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(z), n), delta
    )
    assert eps == pytest.approx(expected, rel=1e-9)
    assert eps < 0.5 * n / 3  # plain sum: 50 at the same total delta


def test_laplace_alone_is_pure_dp() -> None:
    specs = [{"kind": "laplace", "parameter": 2.0}] * 3
    assert compose(specs, delta=0.0) == pytest.approx(1.5)
    assert math.isinf(compose([G], delta=0.0))


def test_bare_guarantees_add_by_the_basic_rule_on_top_of_the_accountant() -> None:
    bare = [epsilon_delta_spec(0.5, 2e-7), epsilon_delta_spec(0.25, 3e-7)]
    assert compose(bare, delta=1e-6) == pytest.approx(0.75)
    # the accountant only gets the delta the bare guarantees leave
    expected = 0.75 + pld_epsilon(dp_accounting.GaussianDpEvent(3.0), 1e-6 - 5e-7)
    assert compose([G, *bare], delta=1e-6) == pytest.approx(expected, rel=1e-9)
    assert compose([G, *bare], delta=1e-6) > 0.75 + compose([G], delta=1e-6)
    # deltas over the total: no finite epsilon
    assert math.isinf(compose(bare, delta=4e-7))
    assert compose([], delta=1e-6) == 0.0


def test_repeat_and_select_uses_rdp_and_joins_pld_soundly() -> None:
    sel = SPECS[-1]
    acc = rdp.RdpAccountant()
    acc.compose(event_from_spec(sel))
    alone = compose([sel], delta=1e-6)
    assert alone == pytest.approx(float(acc.get_epsilon(1e-6)), rel=1e-9)
    both = compose([sel, G], delta=1e-6)
    # basic composition of the two parts at a split of delta: above either part alone
    assert both > alone and both > compose([G], delta=1e-6)
    assert both <= compose([sel], delta=5e-7) + compose([G], delta=5e-7) + 1e-9


def test_invalid_delta() -> None:
    with pytest.raises(ConfigError):
        compose([G], delta=1.0)
