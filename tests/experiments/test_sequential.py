"""The always-valid sequential test (mSPRT): peeking does not inflate false positives, and a
real effect is found."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from privrec.experiments.stats import (
    looks_from_times,
    msprt_lambda,
    sequential_proportions,
    sequential_test,
)

ALPHA = 0.05


def _peeking_rejections(
    p_a: float, p_b: float, *, sims: int, n: int, every: int, tau2: float, seed: int
) -> tuple[int, int]:
    """(mSPRT rejections, naive z-test rejections) over `sims` experiments peeked at every
    `every` units per arm, each stopped at its first rejection."""
    rng = np.random.default_rng(seed)
    msprt = naive = 0
    looks = np.arange(every, n + 1, every)
    for _ in range(sims):
        a = np.cumsum(rng.random(n) < p_a)[looks - 1]
        b = np.cumsum(rng.random(n) < p_b)[looks - 1]
        res = sequential_proportions(looks, a, looks, b, alpha=ALPHA, tau2=tau2)
        msprt += res["concluded"]
        pa, pb = a / looks, b / looks
        pool = (a + b) / (2 * looks)
        se = np.sqrt(np.maximum(pool * (1 - pool) * 2 / looks, 1e-12))
        z = np.abs(pb - pa) / se
        naive += bool(np.any(2 * sps.norm.sf(z[looks >= 100]) < ALPHA))
    return msprt, naive


def test_aa_tests_with_repeated_peeking_keep_the_false_positive_rate() -> None:
    sims = 400
    msprt, naive = _peeking_rejections(0.1, 0.1, sims=sims, n=4000, every=100, tau2=1e-4, seed=7)
    # alpha plus three binomial standard deviations of the estimate over `sims` runs
    slack = 3 * np.sqrt(ALPHA * (1 - ALPHA) / sims)
    assert msprt / sims <= ALPHA + slack
    # the same peeking with a fixed-horizon test does inflate it: the test can tell the two apart
    assert naive / sims > ALPHA + slack


def test_a_real_effect_is_detected() -> None:
    sims = 40
    found, _ = _peeking_rejections(0.10, 0.14, sims=sims, n=4000, every=100, tau2=1e-4, seed=3)
    assert found / sims >= 0.8


def test_lambda_is_one_without_variance_and_grows_with_the_effect() -> None:
    lam = msprt_lambda(np.array([0.0, 0.01, 0.05]), np.array([0.0, 1e-4, 1e-4]), 1e-4)
    assert lam[0] == 1.0
    assert lam[2] > lam[1]


def test_confidence_sequence_covers_the_estimate_and_the_p_value_never_rises() -> None:
    theta = np.array([0.02, 0.015, 0.01])
    var = np.array([4e-4, 1e-4, 5e-5])
    full = sequential_test(theta, var, alpha=ALPHA, tau2=1e-4)
    first = sequential_test(theta[:1], var[:1], alpha=ALPHA, tau2=1e-4)
    assert full["p_value"] <= first["p_value"]
    lo, hi = full["ci"]
    assert lo < full["effect"] < hi


def test_no_look_before_the_minimum_sample() -> None:
    res = sequential_proportions([50], [5], [50], [25], alpha=ALPHA)
    assert res["looks"] == 0 and res["p_value"] == 1.0 and not res["concluded"]


def test_looks_from_times_see_only_what_happened_before_each_look() -> None:
    exposed = np.array([1.0, 2.0, 3.0, 4.0])
    converted = np.array([5.0, np.inf, 3.5, np.inf])
    arm_b = np.array([False, False, True, True])
    n_a, x_a, n_b, x_b = looks_from_times(exposed, converted, arm_b, np.array([3.0, 6.0]))
    assert n_a.tolist() == [2, 2] and x_a.tolist() == [0, 1]
    assert n_b.tolist() == [1, 2] and x_b.tolist() == [0, 1]


def _rows(arm: str, n: int, buyers: int, t0: float) -> tuple[list, list]:
    from privrec.experiments.online import ListRow, OutcomeRow

    lists = [
        ListRow(f"{arm}-l{u}", f"{arm}-s{u}", t0 + u, "2026-12-07", "m", "v", "exp", arm)
        for u in range(n)
    ]
    outs = [OutcomeRow(f"{arm}-l{u}", "purchase", t0 + u + 1, 10.0) for u in range(buyers)]
    return lists, outs


def test_decide_names_the_control_when_the_treatment_is_worse_and_waits_otherwise() -> None:
    from privrec.experiments.assignment import Experiment, Variant
    from privrec.experiments.decision import decide
    from privrec.experiments.online import totals

    exp = Experiment("exp", (Variant("control"), Variant("b")), tau2=0.01, guardrails=())
    for b_buyers, winner in ((20, "control"), (118, None), (240, "b")):
        la, oa = _rows("control", 400, 120, 0.0)
        lb, ob = _rows("b", 400, b_buyers, 0.5)
        online = totals("arm", [], la + lb, oa + ob, [])
        d = decide(exp, la + lb, oa + ob, online, now=1e6)
        assert d["decision"]["winner"] == winner, d["sequential"]
        assert d["decision"]["ready"] == (winner is not None)


def test_guardrails_breach_only_past_the_allowed_drop() -> None:
    from privrec.experiments.online import check_guardrails

    rails = [{"metric": "coverage", "max_drop": 0.1}, {"metric": "ctr", "max_drop": 0.1}]
    got = check_guardrails({"coverage": 0.5, "ctr": None}, {"coverage": 0.44, "ctr": 0.2}, rails)
    assert got[0]["breached"] and got[0]["change"] == pytest.approx(-0.12)
    assert not got[1]["breached"] and not got[1]["judged"]  # no control value yet
    assert not check_guardrails({"coverage": 0.5}, {"coverage": 0.46}, rails[:1])[0]["breached"]
