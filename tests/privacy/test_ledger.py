"""The privacy-budget ledger composes releases with an accountant and refuses overspending."""

from __future__ import annotations

import json
import math
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from privrec.core.errors import BudgetExceededError, ConfigError
from privrec.privacy.accounting import compose
from privrec.privacy.dp import Release, gaussian_sigma
from privrec.privacy.ledger import Budget, PrivacyLedger


def rel(eps: float, delta: float = 1e-6, name: str = "m:counts") -> Release:
    return Release(name, eps, delta, "gaussian", "analytic gaussian (dp-accounting)")


@dataclass(frozen=True)
class EventRelease:
    """A release that carries its mechanism spec (what `Release.event` holds)."""

    name: str
    epsilon: float
    delta: float
    mechanism: str = "gaussian"
    accountant: str = "pld (dp-accounting)"
    unit: str = "user"
    details: dict[str, Any] = field(default_factory=dict)
    event: dict[str, Any] | None = None


def gauss(eps: float, delta: float, name: str = "m:gauss") -> EventRelease:
    z = gaussian_sigma(eps, delta)
    return EventRelease(name, eps, delta, event={"kind": "gaussian", "noise_multiplier": z})


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
            "adjacency",
            "event",
        } <= set(e)
        assert e["unit"] == "user" and e["adjacency"] == "add/remove one user"
        # no event on the release: recorded as its bare guarantee
        assert e["event"] == {"kind": "epsilon_delta", "epsilon": e["epsilon"], "delta": e["delta"]}
    spent = ledger.spent()
    # bare guarantees compose by the basic rule; the composed epsilon holds at the budget delta
    assert spent.epsilon == pytest.approx(2.5) and spent.delta == pytest.approx(1e-5)
    assert spent.epsilon_basic == pytest.approx(2.5) and spent.delta_basic == pytest.approx(3e-6)
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


@pytest.mark.parametrize("budget_eps", [10.0, math.inf])
def test_epsilon_inf_is_not_a_dp_release_and_leaves_no_line(
    tmp_path: Path, budget_eps: float
) -> None:
    ledger = PrivacyLedger(tmp_path, Budget(budget_eps, 1e-5))
    ledger.charge(rel(1.0))
    before = ledger.path.read_bytes()
    with pytest.raises(ConfigError, match="not a DP release"):
        ledger.charge(rel(math.inf))
    assert ledger.path.read_bytes() == before and len(ledger.entries()) == 1


def test_many_gaussian_releases_compose_tighter_than_the_plain_sum(tmp_path: Path) -> None:
    budget = Budget(12.0, 1e-6)
    ledger = PrivacyLedger(tmp_path, budget)
    releases = [gauss(1.0, 1e-7, f"m{i}:counts") for i in range(20)]
    for r in releases:
        ledger.charge(r)  # the plain sum (20) is over the budget (12): composition allows it
    spent = ledger.spent()
    assert spent.epsilon_basic == pytest.approx(20.0)
    specs = [r.event for r in releases if r.event is not None]
    assert spent.epsilon == pytest.approx(compose(specs, delta=1e-6))
    assert spent.epsilon < 12.0 < spent.epsilon_basic
    assert [e["event"] for e in ledger.entries()] == [r.event for r in releases]


def test_the_budget_refuses_at_the_composed_total(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path, Budget(5.0, 1e-6))
    one = gauss(1.0, 1e-6)
    n = 0
    while True:
        spec = one.event
        assert spec is not None
        if compose([spec] * (n + 1), delta=1e-6) > 5.0:
            break
        ledger.charge(one)
        n += 1
    assert n >= 6  # the plain sum would have stopped at 5
    before = ledger.path.read_bytes()
    with pytest.raises(BudgetExceededError, match="composed"):
        ledger.charge(one)
    assert ledger.path.read_bytes() == before
    assert ledger.spent().epsilon == pytest.approx(compose([spec] * n, delta=1e-6))


def test_old_lines_without_an_event_still_read_and_count(tmp_path: Path) -> None:
    path = tmp_path / "privacy-ledger.jsonl"
    old = {
        "time": "2025-01-01T12:00:00Z",
        "release": "dp_ease:gram",
        "model": "dp_ease",
        "epsilon": 2.0,
        "delta": 1e-7,
        "mechanism": "gaussian",
        "unit": "user",
        "accountant": "pld (dp-accounting)",
        "details": {},
    }
    path.write_text(json.dumps(old) + "\n")
    ledger = PrivacyLedger(path, Budget(3.0, 1e-6))
    assert ledger.entries() == [old]
    assert ledger.spent().epsilon == pytest.approx(2.0)
    new = gauss(0.5, 1e-7)
    assert new.event is not None
    # the old line's delta leaves the accountant 9e-7 for the new release
    expected = 2.0 + compose([new.event], delta=1e-6 - 1e-7)
    ledger.charge(new)
    assert ledger.spent().epsilon == pytest.approx(min(expected, 2.5))
    with pytest.raises(BudgetExceededError):
        ledger.charge(gauss(1.0, 1e-7))


def test_summary_states_the_per_shopper_epsilon(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path, Budget(10.0, 1e-6))
    empty = ledger.summary()
    assert empty["per_shopper_epsilon"] == 0.0 and empty["unit"] is None
    for i in range(5):
        ledger.charge(gauss(1.0, 1e-7, f"r{i}"))
    s = ledger.summary()
    assert s["per_shopper_epsilon"] == s["epsilon_spent"] < s["epsilon_spent_basic"] == 5.0
    assert s["unit"] == "user" and s["adjacency"] == "add/remove one user"
    assert s["releases"] == 5 and len(s["entries"]) == 5


def test_a_malformed_event_is_refused_before_writing(tmp_path: Path) -> None:
    ledger = PrivacyLedger(tmp_path, Budget(10.0, 1e-6))
    bad = EventRelease("m:bad", 1.0, 1e-7, event={"kind": "gaussian"})
    with pytest.raises(ConfigError):
        ledger.charge(bad)
    assert ledger.entries() == []


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
