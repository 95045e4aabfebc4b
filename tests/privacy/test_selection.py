"""Private hyper-parameter selection: its cost follows Papernot & Steinke and is charged once."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from dp_accounting import rdp

from privrec.core.errors import BudgetExceededError, ConfigError
from privrec.privacy.accounting import compose
from privrec.privacy.dp import gaussian_sigma
from privrec.privacy.ledger import Budget, PrivacyLedger
from privrec.privacy.selection import (
    dominating_event,
    number_of_runs,
    plan_selection,
    private_select,
    run_event,
    selection_cost,
)

DELTA = 1e-6
Z_FIT = gaussian_sigma(1.0, DELTA)
FIT = {"kind": "gaussian", "noise_multiplier": Z_FIT}
Z_SCORE = 10.0


class Seeded:
    """Reproducible randomness for tests (not DP)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def uniform(self, size: int) -> np.ndarray:
        return 1.0 - self.rng.random(size)

    def normal(self, scale: float, size: int) -> np.ndarray:
        return self.rng.normal(0.0, scale, size)


def theorem2_epsilon(z: float, mean: float, delta: float) -> float:
    """Geometric repetitions (eta = 1, gamma = 1/mean) of a Gaussian run, by the paper's formula.

    A Gaussian with multiplier z is (l, l / (2 z^2))-RDP; Theorem 2 gives the selection's RDP,
    RDP is monotone in the order, and dp-accounting's conversion gives (epsilon, delta).
    """
    orders = np.array(rdp.rdp_privacy_accountant.DEFAULT_RDP_ORDERS, dtype=float)
    eps = orders / (2 * z * z)
    c = 2.0 * np.min((1 - 1 / orders) * eps + math.log(mean) / orders)
    out = np.full_like(orders, np.inf)
    out[orders > 1] = eps[orders > 1] + math.log(mean) / (orders[orders > 1] - 1) + c
    out = np.array([out[orders >= o].min() for o in orders])
    return float(rdp.compute_epsilon(orders, out, delta)[0])


def test_cost_is_theorem_2_of_papernot_steinke() -> None:
    run = run_event(FIT, Z_SCORE)
    z_run = 1.0 / math.sqrt(1 / Z_FIT**2 + 1 / Z_SCORE**2)  # Gaussians compose to one Gaussian
    for mean in (2.0, 10.0, 100.0):
        got = selection_cost(run, mean_runs=mean, shape=1.0, delta=DELTA)
        assert got == pytest.approx(theorem2_epsilon(z_run, mean, DELTA), rel=1e-6)


def test_cost_grows_with_the_log_of_the_number_of_runs() -> None:
    run = run_event(FIT, Z_SCORE)
    one_run = compose([run], delta=DELTA)
    costs = [selection_cost(run, mean_runs=m, delta=DELTA) for m in (1, 10, 100, 1000, 10000)]
    assert all(a < b for a, b in itertools.pairwise(costs))
    steps = np.diff(costs[1:])
    # each tenfold increase adds about the same (log growth), far below tenfold epsilon
    assert steps.max() < 1.5 * steps.min() and steps.max() < one_run
    # far below the basic composition of the expected number of runs
    assert costs[2] < 100 * one_run / 20
    assert costs[0] >= one_run * 0.99  # no cheaper than one run (RDP is a little looser)


def test_cost_grows_with_the_number_of_candidates() -> None:
    costs = [
        plan_selection([FIT] * n, score_noise_multiplier=Z_SCORE, delta=DELTA).epsilon
        for n in (1, 4, 16, 48, 96)
    ]
    assert all(a < b for a, b in itertools.pairwise(costs))
    plan = plan_selection([FIT] * 48, score_noise_multiplier=Z_SCORE, delta=DELTA)
    assert plan.details["mean_runs"] == 48 and plan.event is not None
    assert plan.event["kind"] == "repeat_and_select"


def test_shapes_order_as_the_paper_says() -> None:
    # heavier-tailed repetitions (larger eta) cost more for the same mean
    run = run_event(FIT, Z_SCORE)
    c = [selection_cost(run, mean_runs=10, shape=s, delta=DELTA) for s in (0.0, 1.0, 5.0)]
    assert c[0] < c[1] < c[2]


def test_the_dominating_event_of_gaussian_candidates_is_exact_and_the_costliest() -> None:
    a = run_event({"kind": "gaussian", "noise_multiplier": 2.0}, Z_SCORE)
    b = run_event(
        {
            "kind": "composed",
            "events": [
                {"kind": "gaussian", "noise_multiplier": 3.0},
                {"kind": "gaussian", "noise_multiplier": 3.0},
            ],
        },
        Z_SCORE,
    )
    dom = dominating_event([a, b])
    assert dom["kind"] == "gaussian"
    worst = max(compose([a], delta=DELTA), compose([b], delta=DELTA))
    assert compose([dom], delta=DELTA) == pytest.approx(worst, rel=2e-3)
    assert dominating_event([a, a]) == a
    lap = {"kind": "laplace", "parameter": 1.0}
    mixed = dominating_event([a, lap])
    assert compose([mixed], delta=DELTA) >= max(compose([a], delta=DELTA), 1.0)


def test_an_exact_score_is_refused() -> None:
    with pytest.raises(ConfigError, match="not private"):
        run_event(FIT, 0.0)


@pytest.mark.parametrize("shape", [0.0, 0.5, 1.0, 3.0, math.inf])
def test_number_of_runs_has_the_planned_mean(shape: float) -> None:
    src = Seeded(1)
    ks = [number_of_runs(8.0, shape, float(src.uniform(1)[0])) for _ in range(20000)]
    assert np.mean(ks) == pytest.approx(8.0, rel=0.05)
    assert min(ks) >= (0 if math.isinf(shape) else 1)


def test_selection_is_charged_once_before_any_run_and_picks_the_best(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path, Budget(10.0, DELTA))
    quality = [0.1, 0.9, 0.5, 0.3]
    plan = plan_selection(
        [FIT] * 4, score_noise_multiplier=5.0, delta=DELTA, mean_runs=20, name="m:tuning"
    )
    calls: list[float] = []

    def fit_and_score(q: float) -> tuple[str, float]:
        assert len(ledger.entries()) == 1  # charged before the first fit
        calls.append(q)
        return f"model-{q}", 1000.0 * q

    res = private_select(quality, fit_and_score, plan, ledger=ledger, model="m", random=Seeded(3))
    assert res.runs == len(calls) and res.runs >= 1
    assert res.candidate == max(calls) and res.model == f"model-{max(calls)}"
    assert res.index == quality.index(max(calls))
    entries = ledger.entries()
    assert len(entries) == 1 and entries[0]["event"]["kind"] == "repeat_and_select"
    assert ledger.spent().epsilon == pytest.approx(plan.epsilon, rel=1e-9)


def test_a_selection_the_budget_cannot_afford_runs_nothing(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path, Budget(2.0, DELTA))
    plan = plan_selection([FIT] * 48, score_noise_multiplier=Z_SCORE, delta=DELTA)
    assert plan.epsilon > 2.0
    ran: list[Any] = []

    def fit_and_score(c: int) -> tuple[str, float]:
        ran.append(c)
        return "m", 0.0

    with pytest.raises(BudgetExceededError):
        private_select(list(range(48)), fit_and_score, plan, ledger=ledger)
    assert ran == [] and ledger.entries() == []


def test_the_plan_must_match_the_candidates() -> None:
    plan = plan_selection([FIT] * 3, score_noise_multiplier=Z_SCORE, delta=DELTA)
    with pytest.raises(ConfigError, match="candidates"):
        private_select([1, 2], lambda c: ("m", 0.0), plan)
