"""The privacy-budget ledger refuses any release that would exceed the budget."""

from __future__ import annotations

import json
import math
import stat
from pathlib import Path

import pytest

from privrec.core.errors import BudgetExceededError, ConfigError
from privrec.privacy.dp import Release
from privrec.privacy.ledger import Budget, PrivacyLedger


def rel(eps: float, delta: float = 1e-6, name: str = "m:counts") -> Release:
    return Release(name, eps, delta, "gaussian", "analytic gaussian (dp-accounting)")


def test_records_every_field_and_sums_by_basic_composition(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path, Budget(3.0, 1e-5))
    ledger.charge(rel(1.0), model="dp_popularity")
    ledger.charge(rel(1.5, 2e-6, "dp_ease:gram"), model="dp_ease")
    entries = ledger.entries()
    assert [e["release"] for e in entries] == ["m:counts", "dp_ease:gram"]
    for e in entries:
        assert {
            "time",
            "release",
            "model",
            "epsilon",
            "delta",
            "mechanism",
            "unit",
            "accountant",
        } <= set(e)
        assert e["unit"] == "user"
    spent = ledger.spent()
    assert spent.epsilon == pytest.approx(2.5) and spent.delta == pytest.approx(3e-6)
    assert spent.epsilon_left == pytest.approx(0.5)
    assert stat.S_IMODE(ledger.path.stat().st_mode) == 0o600


def test_a_release_that_would_exceed_the_budget_is_refused_and_not_recorded(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path / "ledger.jsonl", Budget(2.0, 1e-5))
    ledger.charge(rel(1.5))
    with pytest.raises(BudgetExceededError, match="budget"):
        ledger.charge(rel(0.6))
    assert len(ledger.entries()) == 1
    ledger.charge(rel(0.5))  # exactly the rest is fine
    with pytest.raises(BudgetExceededError):
        ledger.charge(rel(1e-3))
    assert ledger.spent().epsilon == pytest.approx(2.0)


def test_delta_is_budgeted_too(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path, Budget(100.0, 1e-6))
    ledger.charge(rel(1.0, 6e-7))
    with pytest.raises(BudgetExceededError):
        ledger.charge(rel(1.0, 6e-7))


def test_no_privacy_release_against_a_finite_budget(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path, Budget(10.0, 1e-5))
    assert not ledger.can_afford(math.inf, 0.0)


def test_the_ledger_survives_reopening(tmp_path: Path) -> None:
    PrivacyLedger(tmp_path, (2.0, 1e-5)).charge(rel(1.8))
    again = PrivacyLedger(tmp_path, (2.0, 1e-5))
    with pytest.raises(BudgetExceededError):
        again.charge(rel(0.3))
    lines = (tmp_path / "privacy-ledger.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["epsilon"] == 1.8


def test_invalid_budget(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Budget(0.0, 1e-5)
    with pytest.raises(ConfigError):
        Budget(1.0, 1.0)
