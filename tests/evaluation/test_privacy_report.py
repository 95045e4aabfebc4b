"""The privacy report's DP hyper-parameter rule: fixed public values or a charged selection."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from privrec.core.errors import BudgetExceededError, ConfigError
from privrec.data.dataset import InteractionDataset
from privrec.data.splitters import leave_one_out_test
from privrec.data.synthetic import generate_shop_dataset
from privrec.evaluation import privacy_frontier, privacy_report, privacy_tuning
from privrec.evaluation.privacy_frontier import run_frontier
from privrec.evaluation.privacy_tuning import (
    DEFAULT_ROSTER,
    _selection_plan,
    choose_params,
    per_fit_epsilon,
)
from privrec.privacy.ledger import Budget, PrivacyLedger

ROSTER = {"dp_ease": lambda e: {"epsilon": e, "top_items": 40}}
GRID = {"dp_ease": [{"reg": r, "top_items": 40} for r in (1.0, 10.0, 100.0)]}


class Seeded:
    """Reproducible selection randomness (tests only: not DP)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def uniform(self, size: int) -> np.ndarray:
        return 1.0 - self.rng.random(size)

    def normal(self, scale: float, size: int) -> np.ndarray:
        return self.rng.normal(0.0, scale, size)


@pytest.fixture(scope="module")
def split() -> tuple[InteractionDataset, InteractionDataset]:
    return leave_one_out_test(generate_shop_dataset(n_items=100, n_users=300, seed=5))


def test_per_fit_epsilon_spends_the_target_on_the_whole_selection() -> None:
    for target in (0.5, 2.0, 8.0):
        eps_fit = per_fit_epsilon(target, 6, 1e-6)
        cost = _selection_plan(eps_fit, 6, 1e-6, "x")[0].epsilon
        assert cost <= target and cost == pytest.approx(target, rel=0.01)
        assert eps_fit < target  # tuning is not free
    # more candidates leave less for each fit
    assert per_fit_epsilon(2.0, 48, 1e-6) < per_fit_epsilon(2.0, 6, 1e-6)
    with pytest.raises(ConfigError, match="too small"):
        per_fit_epsilon(0.01, 48, 1e-6)


def test_private_tuning_charges_one_selection_worth_the_point_epsilon(
    split: tuple[InteractionDataset, InteractionDataset], tmp_path: Path
) -> None:
    train, test = split
    ledger = PrivacyLedger(tmp_path, Budget(math.inf, 0.5))
    points = run_frontier(
        train,
        test,
        dataset_name="shop",
        roster=ROSTER,
        epsilons=(2.0, math.inf),
        ledger=ledger,
        audit=False,
        tuning="private",
        grids=GRID,
    )
    tuned, free = points
    assert tuned.tuning is not None and tuned.tuning["mode"] == "private"
    assert tuned.params["reg"] in (1.0, 10.0, 100.0) and tuned.params["epsilon"] < 2.0
    assert tuned.tuning["release"]["epsilon"] <= 2.0
    assert free.tuning == {"mode": "public"}  # epsilon inf: no DP, nothing to select privately
    entries = ledger.entries()
    # the selection is the only release: its candidate fits are inside it, not charged again
    assert [e["release"] for e in entries] == ["dp_ease:tuning"]
    assert entries[0]["event"]["kind"] == "repeat_and_select"
    assert entries[0]["epsilon"] == pytest.approx(tuned.tuning["release"]["epsilon"])


def test_public_tuning_uses_the_fixed_values(
    split: tuple[InteractionDataset, InteractionDataset], tmp_path: Path
) -> None:
    train, _ = split
    choice = choose_params("dp_ease", 1.0, train, tuning="public", roster=ROSTER, grids=GRID)
    assert choice.tuning == "public" and choice.model is None
    assert choice.params == {"epsilon": 1.0, "top_items": 40}
    assert choose_params("dp_popularity", 1.0, train).params == dict(
        DEFAULT_ROSTER["dp_popularity"](1.0)
    )
    with pytest.raises(ConfigError, match="tuning"):
        choose_params("dp_ease", 1.0, train, tuning="validation")


def test_a_selection_the_budget_cannot_afford_fits_nothing(
    split: tuple[InteractionDataset, InteractionDataset], tmp_path: Path
) -> None:
    train, _ = split
    ledger = PrivacyLedger(tmp_path, Budget(1.0, 1e-6))
    with pytest.raises(BudgetExceededError):
        choose_params(
            "dp_ease",
            2.0,
            train,
            tuning="private",
            roster=ROSTER,
            grids=GRID,
            ledger=ledger,
            random=Seeded(0),
        )
    assert ledger.entries() == []


def test_the_frontier_and_tuning_names_stay_importable_from_privacy_report() -> None:
    # callers (the service, the CLI, benchmarks) import them from privacy_report
    for module in (privacy_frontier, privacy_tuning):
        for name in module.__all__:
            assert getattr(privacy_report, name) is getattr(module, name), name
            assert name in privacy_report.__all__
