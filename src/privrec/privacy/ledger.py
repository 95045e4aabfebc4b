"""The privacy-budget ledger: every DP release is recorded, and one that would overspend is refused.

A JSON-lines file in the data directory (default name `privacy-ledger.jsonl`, mode 0600), one
release a line:

    {"time": "2025-01-01T12:00:00Z", "release": "dp_ease:gram", "model": "dp_ease",
     "epsilon": 1.0, "delta": 1e-05, "mechanism": "gaussian x2 (composed)", "unit": "user",
     "accountant": "pld (dp-accounting)", "details": {...}}

Composition rule (documented promise): the total spent is computed by **basic composition**,
sum of epsilons and sum of deltas over every recorded release. It is an upper bound on any
sequence of releases whatever they are, so it is safe to apply across mechanisms and accountants
(tighter composition inside one model, e.g. the selection and Gram releases of DP EASE, is done
by the model with dp-accounting's PLD accountant and recorded as one release).

`charge` checks the budget and appends the entry under an exclusive file lock, before the caller
draws any noise: a refused release raises BudgetExceededError and leaves no trace in the file.
A release with epsilon = inf is never allowed against a finite budget.

The ledger is layer 1 (privacy/): it uses only the file system, never the event store.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privrec.core.errors import BudgetExceededError, ConfigError
from privrec.core.files import open_private_append
from privrec.privacy.dp import Release

LEDGER_FILE = "privacy-ledger.jsonl"


@dataclass(frozen=True)
class Budget:
    """A total privacy budget (epsilon, delta) under basic composition."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not (self.epsilon > 0):
            raise ConfigError(f"budget epsilon: {self.epsilon} is not positive")
        if not (0.0 <= self.delta < 1.0):
            raise ConfigError(f"budget delta: {self.delta} is not in [0, 1)")


@dataclass(frozen=True)
class Spent:
    """What the recorded releases have spent (basic composition) and what is left."""

    epsilon: float
    delta: float
    releases: int
    budget: Budget

    @property
    def epsilon_left(self) -> float:
        """Budget epsilon minus spent epsilon (never negative)."""
        return max(self.budget.epsilon - self.epsilon, 0.0)

    @property
    def delta_left(self) -> float:
        """Budget delta minus spent delta (never negative)."""
        return max(self.budget.delta - self.delta, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "epsilon_spent": self.epsilon,
            "delta_spent": self.delta,
            "releases": self.releases,
            "budget_epsilon": self.budget.epsilon,
            "budget_delta": self.budget.delta,
            "epsilon_left": self.epsilon_left,
            "delta_left": self.delta_left,
            "composition": "basic (sum of epsilons, sum of deltas)",
        }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class PrivacyLedger:
    """An append-only ledger of DP releases with a total budget.

    Args:
        path: the ledger file, or a directory (then `<dir>/privacy-ledger.jsonl`).
        budget: the total (epsilon, delta) all releases together may spend.

    Example:
        >>> ledger = PrivacyLedger(data_dir, Budget(epsilon=10.0, delta=1e-5))
        >>> ledger.charge(release, model="dp_ease")   # raises BudgetExceededError if over budget
    """

    def __init__(self, path: str | Path, budget: Budget | tuple[float, float]) -> None:
        p = Path(path)
        if p.is_dir() or p.suffix == "":
            p = p / LEDGER_FILE
        self.path = p
        self.budget = budget if isinstance(budget, Budget) else Budget(*budget)

    # ---- reading -------------------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """Every recorded release, oldest first."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line))
        return out

    def spent(self) -> Spent:
        """Total spent by basic composition over the recorded releases."""
        return self._spent(self.entries())

    def _spent(self, entries: list[dict[str, Any]]) -> Spent:
        eps = math.fsum(float(e["epsilon"]) for e in entries)
        delta = math.fsum(float(e["delta"]) for e in entries)
        return Spent(eps, delta, len(entries), self.budget)

    def can_afford(self, epsilon: float, delta: float) -> bool:
        """Whether a release of (epsilon, delta) fits in what is left."""
        return self._fits(self.spent(), epsilon, delta)

    def _fits(self, spent: Spent, epsilon: float, delta: float) -> bool:
        if math.isinf(epsilon) and not math.isinf(self.budget.epsilon):
            return False
        tol = 1e-12
        return (
            spent.epsilon + epsilon <= self.budget.epsilon + tol
            and spent.delta + delta <= self.budget.delta + tol
        )

    # ---- writing -------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open_private_append(self.path) as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def charge(self, release: Release, *, model: str = "") -> dict[str, Any]:
        """Record `release` if it fits in the budget; raise BudgetExceededError otherwise.

        Call this BEFORE drawing the release's noise: a refused release must not happen at all.
        The check and the append hold an exclusive lock, so two processes cannot both spend the
        last of the budget.

        Returns:
            the recorded entry.
        """
        if not (release.epsilon > 0) or not (0 <= release.delta < 1):
            raise ConfigError(
                f"release {release.name!r}: invalid epsilon/delta "
                f"({release.epsilon}, {release.delta})"
            )
        with self._locked() as fh:
            fh.seek(0)
            entries = [json.loads(line) for line in fh.read().splitlines() if line.strip()]
            spent = self._spent(entries)
            if not self._fits(spent, release.epsilon, release.delta):
                raise BudgetExceededError(
                    f"privacy budget: release {release.name!r} needs epsilon={release.epsilon:g}, "
                    f"delta={release.delta:g} but only epsilon={spent.epsilon_left:g}, "
                    f"delta={spent.delta_left:g} of the budget ({self.budget.epsilon:g}, "
                    f"{self.budget.delta:g}) is left; raise the configured budget, lower the "
                    "release's epsilon, or start a new ledger period"
                )
            entry = {
                "time": _now(),
                "release": release.name,
                "model": model,
                "epsilon": float(release.epsilon),
                "delta": float(release.delta),
                "mechanism": release.mechanism,
                "unit": release.unit,
                "accountant": release.accountant,
                "details": release.details,
            }
            fh.seek(0, os.SEEK_END)
            fh.write(json.dumps(entry, sort_keys=True, default=float) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def summary(self) -> dict[str, Any]:
        """Spent/left and the entries, JSON-ready (what a report includes)."""
        entries = self.entries()
        return {**self._spent(entries).to_dict(), "entries": entries}
