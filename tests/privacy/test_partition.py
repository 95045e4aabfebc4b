"""The Gaussian sparse histogram: bounded contributions, an exact threshold, honest accounting."""

from __future__ import annotations

import math

import numpy as np
import pytest

from privrec.core.errors import ConfigError
from privrec.privacy.accounting import check_spec, compose
from privrec.privacy.dp import gaussian_sigma, gaussian_spec
from privrec.privacy.ledger import Budget, PrivacyLedger
from privrec.privacy.noise import NoiseSource
from privrec.privacy.partition import SparseHistogram, bound_contributions


def test_each_user_counts_at_most_max_keys_distinct_keys() -> None:
    users = [["a", "a", "b"], ["a", "b", "c", "d", "e"], ["e"]]
    counts = bound_contributions(users, 2, np.random.default_rng(0))
    assert sum(counts.values()) == 2 + 2 + 1  # duplicates once, the big user capped at 2
    assert counts["a"] >= 1 and counts["e"] >= 1
    with pytest.raises(ConfigError, match="max_keys"):
        bound_contributions(users, 0, np.random.default_rng(0))


def test_threshold_hides_single_user_keys_with_exactly_the_stated_probability() -> None:
    # a large threshold delta makes the rare event measurable: the added user's k keys (count 1)
    # must pass the threshold together with probability delta_threshold, no more
    hist = SparseHistogram.calibrated(1.0, 1e-5, 0.2, 3)
    trials, passed = 6000, 0
    src = NoiseSource.reproducible(11)
    for t in range(trials):
        got = hist.release({("x", t, j): 1 for j in range(3)}, noise=src)
        passed += bool(got)
    assert abs(passed / trials - 0.2) < 0.025
    # and the noise on each count is z * sqrt(k), z from the analytic Gaussian mechanism
    assert hist.sigma == pytest.approx(gaussian_sigma(1.0, 1e-5) * math.sqrt(3))


def test_popular_keys_are_released_and_the_noise_is_fresh() -> None:
    hist = SparseHistogram.calibrated(1.0, 5e-7, 1e-9, 2)
    counts = {"popular": 500, "rare": 1}
    a, b = hist.release(counts), hist.release(counts)
    assert set(a) == set(b) == {"popular"}
    assert a["popular"] != b["popular"]  # secure noise: never the same draw twice
    with pytest.raises(ConfigError, match="below 1"):
        hist.release({"k": 0})


def test_the_ledger_adds_the_threshold_delta_by_the_basic_rule() -> None:
    hist = SparseHistogram.calibrated(1.0, 5e-7, 1e-9, 2)
    spec = hist.event()
    check_spec(spec)
    assert compose([spec], delta=1e-6) == pytest.approx(
        compose([gaussian_spec(hist.noise_multiplier)], delta=1e-6 - 1e-9)
    )
    # a threshold delta above the budget's delta leaves nothing: no finite epsilon
    assert compose([{**spec, "delta": 2e-6}], delta=1e-6) == math.inf
    with pytest.raises(ConfigError, match="thresholded"):  # nested, its delta would be lost
        check_spec({"kind": "composed", "events": [spec]})


def test_a_release_the_budget_cannot_afford_is_refused(tmp_path) -> None:
    ledger = PrivacyLedger(tmp_path, Budget(1.2, 1e-6))
    hist = SparseHistogram.calibrated(1.0, 5e-7, 1e-9, 2)
    ledger.charge(hist.describe("bought_together:pairs"))
    from privrec.core.errors import BudgetExceededError

    with pytest.raises(BudgetExceededError):
        ledger.charge(hist.describe("bought_together:pairs"))
    assert len(ledger.entries()) == 1
