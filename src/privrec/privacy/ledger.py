"""The privacy-budget ledger: every DP release is recorded, and one that would overspend is refused.

A JSON-lines file in the data directory (default name `privacy-ledger.jsonl`, mode 0600), one
release a line:

    {"time": "2025-01-01T12:00:00Z", "release": "dp_ease:gram", "model": "dp_ease",
     "epsilon": 1.0, "delta": 1e-05, "mechanism": "gaussian x2 (composed)", "unit": "user",
     "adjacency": "add/remove one user", "accountant": "pld (dp-accounting)",
     "event": {"kind": "composed", "events": [{"kind": "gaussian", "noise_multiplier": 9.1},
                                              {"kind": "gaussian", "noise_multiplier": 3.2}]},
     "details": {...}}

With a key (the service always gives one), each line is sealed instead (`privacy.sealed`:
base64 of the AES-256-GCM-sealed JSON); plaintext lines of older ledgers are still read.

`event` is the release's mechanism spec (see `privacy.accounting`); a release that carries none,
and every line written before the field existed, counts as the bare guarantee
`{"kind": "epsilon_delta", "epsilon": epsilon, "delta": delta}`.

Composition rule (documented promise): the total spent is `accounting.compose` over every
recorded event at the budget's delta: dp-accounting's PLD accountant (RDP where PLD cannot handle
an event) over the mechanism specs, plus the bare (epsilon, delta) entries by the basic rule;
never more than the plain sum of epsilons where the budget delta covers the plain sum of deltas.
The plain sums of epsilons and deltas are reported beside it for comparison. With user-level DP
the composed total is also what every single shopper has accumulated (`per_shopper_epsilon`).

`charge` checks the budget and appends the entry under an exclusive file lock, before the caller
draws any noise: a refused release raises BudgetExceededError and leaves no trace in the file.
A release with epsilon = inf is not a DP release: it is refused with ConfigError, never recorded.

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
from typing import Any, Protocol

from privrec.core.errors import BudgetExceededError, ConfigError
from privrec.core.files import open_private_append
from privrec.privacy.accounting import basic_sum, check_spec, compose, epsilon_delta_spec
from privrec.privacy.sealed import seal_line, unseal_line

LEDGER_FILE = "privacy-ledger.jsonl"
ACCOUNTANT = "pld (dp-accounting), rdp where pld cannot; bare (epsilon, delta) by the basic rule"
LEDGER_AAD = b"privrec:ledger"
_TOL = 1e-9  # relative slack on the budget check: the PLD grid is pessimistic already


class ReleaseLike(Protocol):
    """What the ledger reads from a release (`privacy.dp.Release` or a selection's record).

    An optional `event` attribute (a spec of `privacy.accounting`) and an optional `adjacency`
    are read with getattr, so releases without them are accepted.
    """

    @property
    def name(self) -> str: ...
    @property
    def epsilon(self) -> float: ...
    @property
    def delta(self) -> float: ...
    @property
    def mechanism(self) -> str: ...
    @property
    def accountant(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def details(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Budget:
    """A total privacy budget: the composed epsilon at `delta` may not exceed `epsilon`."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not (self.epsilon > 0):
            raise ConfigError(f"budget epsilon: {self.epsilon} is not positive")
        if not (0.0 <= self.delta < 1.0):
            raise ConfigError(f"budget delta: {self.delta} is not in [0, 1)")


@dataclass(frozen=True)
class Spent:
    """What the recorded releases have spent and what is left.

    Attributes:
        epsilon: the composed epsilon of all releases at the budget's delta.
        delta: the delta that epsilon holds at (the budget's; 0 with no release).
        releases: how many releases are recorded.
        budget: the budget.
        epsilon_basic / delta_basic: the plain sums (basic composition), for comparison.
    """

    epsilon: float
    delta: float
    releases: int
    budget: Budget
    epsilon_basic: float = 0.0
    delta_basic: float = 0.0

    @property
    def epsilon_left(self) -> float:
        """Budget epsilon minus spent epsilon (never negative)."""
        return max(self.budget.epsilon - self.epsilon, 0.0)

    @property
    def delta_left(self) -> float:
        """Budget delta minus the delta the composed epsilon holds at (never negative)."""
        return max(self.budget.delta - self.delta, 0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "epsilon_spent": self.epsilon,
            "delta_spent": self.delta,
            "epsilon_spent_basic": self.epsilon_basic,
            "delta_spent_basic": self.delta_basic,
            "releases": self.releases,
            "budget_epsilon": self.budget.epsilon,
            "budget_delta": self.budget.delta,
            "epsilon_left": self.epsilon_left,
            "delta_left": self.delta_left,
            "composition": f"{ACCOUNTANT}; epsilon at the budget delta",
        }


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def entry_spec(entry: dict[str, Any]) -> dict[str, Any]:
    """The event spec of a ledger entry (old lines without one are bare (epsilon, delta))."""
    ev = entry.get("event")
    if isinstance(ev, dict):
        return ev
    return epsilon_delta_spec(float(entry["epsilon"]), float(entry["delta"]))


def _adjacency(release: ReleaseLike) -> str:
    adj = getattr(release, "adjacency", None)
    return str(adj) if adj else f"add/remove one {release.unit or 'user'}"


class PrivacyLedger:
    """An append-only ledger of DP releases with a total budget.

    Args:
        path: the ledger file, or a directory (then `<dir>/privacy-ledger.jsonl`).
        budget: the total (epsilon, delta) all releases together may spend (composed).
        key: the sidecar key that seals each line (None: plaintext JSON lines).

    Example:
        >>> ledger = PrivacyLedger(data_dir, Budget(epsilon=10.0, delta=1e-6))
        >>> ledger.charge(release, model="dp_ease")   # raises BudgetExceededError if over budget
    """

    def __init__(
        self,
        path: str | Path,
        budget: Budget | tuple[float, float],
        *,
        key: bytes | None = None,
    ) -> None:
        p = Path(path)
        if p.is_dir() or p.suffix == "":
            p = p / LEDGER_FILE
        self.path = p
        self.budget = budget if isinstance(budget, Budget) else Budget(*budget)
        self._key = key

    def _parse(self, text: str) -> list[dict[str, Any]]:
        return [
            unseal_line(line, self._key, aad=LEDGER_AAD, where=f"{self.path} line {i}")
            for i, line in enumerate(text.splitlines(), 1)
            if line.strip()
        ]

    def _line(self, entry: dict[str, Any]) -> str:
        if self._key is None:
            return json.dumps(entry, sort_keys=True, default=float)
        # a JSON round trip first: sealed and plaintext lines read back the same numbers
        plain = json.loads(json.dumps(entry, sort_keys=True, default=float))
        return seal_line(plain, self._key, aad=LEDGER_AAD)

    # ---- reading -------------------------------------------------------------------------------
    def entries(self) -> list[dict[str, Any]]:
        """Every recorded release, oldest first."""
        if not self.path.exists():
            return []
        return self._parse(self.path.read_text(encoding="utf-8"))

    def spent(self) -> Spent:
        """The composed epsilon at the budget's delta (and the plain sums) of every release."""
        return self._spent(self.entries())

    def _spent(self, entries: list[dict[str, Any]]) -> Spent:
        eps_sum, delta_sum = basic_sum((float(e["epsilon"]), float(e["delta"])) for e in entries)
        if not entries:
            return Spent(0.0, 0.0, 0, self.budget, 0.0, 0.0)
        eps = self._total(entries)
        return Spent(eps, self.budget.delta, len(entries), self.budget, eps_sum, delta_sum)

    def _total(self, entries: list[dict[str, Any]]) -> float:
        """Composed epsilon of these entries at the budget's delta."""
        eps = compose([entry_spec(e) for e in entries], delta=self.budget.delta)
        # Each release also holds its own stated (epsilon, delta): where the budget delta covers
        # the plain sum of deltas, the plain sum of epsilons is a valid bound too; take the better.
        eps_sum, delta_sum = basic_sum((float(e["epsilon"]), float(e["delta"])) for e in entries)
        if delta_sum <= self.budget.delta:
            eps = min(eps, eps_sum)
        return eps

    def can_afford(self, epsilon: float, delta: float, event: dict[str, Any] | None = None) -> bool:
        """Whether a release of (epsilon, delta), or of this event spec, fits in the budget."""
        if math.isinf(epsilon):
            return False
        spec = event if event is not None else epsilon_delta_spec(epsilon, delta)
        return self._fits([*self.entries(), {"epsilon": epsilon, "delta": delta, "event": spec}])

    def _fits(self, entries: list[dict[str, Any]]) -> bool:
        if math.isinf(self.budget.epsilon):
            return True  # nothing to compose against (an evaluation ledger)
        return self._total(entries) <= self.budget.epsilon * (1 + _TOL) + 1e-12

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

    def charge(self, release: ReleaseLike, *, model: str = "") -> dict[str, Any]:
        """Record `release` if the composed total with it fits the budget; raise otherwise.

        Call this BEFORE drawing the release's noise: a refused release must not happen at all.
        The check and the append hold an exclusive lock, so two processes cannot both spend the
        last of the budget.

        Returns:
            the recorded entry.

        Raises:
            ConfigError: epsilon = inf (not a DP release), an invalid (epsilon, delta) or event.
            BudgetExceededError: the composed total with this release would exceed the budget.
        """
        if math.isinf(release.epsilon):
            raise ConfigError(
                f"release {release.name!r}: epsilon = inf is not a DP release; nothing is "
                "recorded (train without a ledger, or give a finite epsilon)"
            )
        if not (release.epsilon > 0) or not (0 <= release.delta < 1):
            raise ConfigError(
                f"release {release.name!r}: invalid epsilon/delta "
                f"({release.epsilon}, {release.delta})"
            )
        event = getattr(release, "event", None)
        if event is None:
            spec = epsilon_delta_spec(release.epsilon, release.delta)
        else:
            spec = json.loads(json.dumps(dict(event)))  # a plain JSON copy, as it will be read
            check_spec(spec)  # refuse a malformed spec before anything is written
        with self._locked() as fh:
            fh.seek(0)
            entries = self._parse(fh.read())
            new = {"epsilon": float(release.epsilon), "delta": float(release.delta), "event": spec}
            if not self._fits([*entries, new]):
                spent = self._spent(entries)
                after = self._total([*entries, new])
                raise BudgetExceededError(
                    f"privacy budget: release {release.name!r} needs epsilon={release.epsilon:g}, "
                    f"delta={release.delta:g}; composed with the {len(entries)} recorded "
                    f"releases it would bring the total to epsilon={after:.4g} at "
                    f"delta={self.budget.delta:g}, over the budget epsilon="
                    f"{self.budget.epsilon:g} (epsilon={spent.epsilon_left:.4g} left); raise the "
                    "configured budget, lower the release's epsilon, or start a new ledger period"
                )
            entry = {
                "time": _now(),
                "release": release.name,
                "model": model,
                "epsilon": float(release.epsilon),
                "delta": float(release.delta),
                "mechanism": release.mechanism,
                "unit": release.unit,
                "adjacency": _adjacency(release),
                "accountant": release.accountant,
                "event": spec,
                "details": release.details,
            }
            fh.seek(0, os.SEEK_END)
            fh.write(self._line(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def summary(self) -> dict[str, Any]:
        """Spent/left, the per-shopper epsilon and the entries, JSON-ready (what a report shows).

        With user-level DP every release may use every shopper's data, so each shopper has
        accumulated the whole composed total: `per_shopper_epsilon` is `epsilon_spent` (at
        `delta_spent`), and `unit` / `adjacency` say what one "shopper" means (None when no
        release is recorded, "mixed" when releases disagree).
        """
        entries = self.entries()
        spent = self._spent(entries)
        units = {str(e.get("unit", "user")) for e in entries}
        adjs = {str(e["adjacency"]) for e in entries if e.get("adjacency")}

        def one(values: set[str]) -> str | None:
            return None if not values else (values.pop() if len(values) == 1 else "mixed")

        return {
            **spent.to_dict(),
            "per_shopper_epsilon": spent.epsilon,
            "per_shopper_delta": spent.delta,
            "per_shopper_note": (
                "user-level DP: every shopper has accumulated the ledger's composed total"
            ),
            "unit": one(units),
            "adjacency": one(adjs),
            "entries": entries,
        }
