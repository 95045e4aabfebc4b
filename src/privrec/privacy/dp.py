"""Differential-privacy mechanisms and accounting (layer 1: numpy and accounting libraries only).

Noise is drawn here, calibration and composition come from well-kept libraries, never from
formulas of our own:

- Google's `dp-accounting`: the analytic Gaussian mechanism (Balle & Wang, ICML 2018) for one
  Gaussian release (`gaussian_sigma`), and its PLD accountant (privacy loss distributions) to
  calibrate a *composition* of Gaussian releases (`calibrate_gaussians`) and to compute the
  epsilon of any `DpEvent` (`epsilon_of`).
- Opacus' accountants for DP-SGD (`dpsgd_noise_multiplier`, `dpsgd_epsilon`).

Sensitivities are L2 (Gaussian) or L1 (Laplace) and always refer to one *user* (all of their
events): every DP model in privrec bounds each user's contribution first, so the guarantee is
user-level under the add/remove-one-user neighbouring relation (`ADJACENCY`). Under that relation
the number of users is itself private: no DP model reads it exactly into a release (delta comes
from a configured expected number of users, sizes from a charged noisy count).

Every noise draw comes from a `privacy.noise.NoiseSource` (OS entropy unless a test asks for a
reproducible, non-DP source); a seeded numpy Generator is refused.

A `Release` describes one DP release before its noise is drawn (what a ledger records), with
`event`, a JSON spec of its mechanism that an accountant composes:

    {"kind": "gaussian", "noise_multiplier": z}          (std / L2 sensitivity)
    {"kind": "laplace", "parameter": b}                  (scale / L1 sensitivity)
    {"kind": "poisson_sampled", "sampling_probability": q, "event": {...}}
    {"kind": "self_composed", "count": n, "event": {...}}
    {"kind": "composed", "events": [...]}
    {"kind": "epsilon_delta", "epsilon": e, "delta": d}  (last resort: a bare guarantee)
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from privrec.core.errors import ConfigError
from privrec.privacy.guarantee import ADJACENCY, PrivacyGuarantee
from privrec.privacy.noise import NoiseSource

PLD_DISCRETIZATION = 1e-3  # PLD value discretisation for calibration: pessimistic, a few seconds
_NOISE_BLOCK = 256  # rows of symmetric noise drawn at once


def _dpa() -> Any:
    import dp_accounting

    return dp_accounting


def check_epsilon_delta(epsilon: float, delta: float) -> None:
    """Raise ConfigError unless 0 < epsilon (inf allowed) and 0 <= delta < 1."""
    if not (epsilon > 0):
        raise ConfigError(
            f"epsilon: {epsilon} is not positive; give a value > 0 (or inf for no privacy)"
        )
    if not (0.0 <= delta < 1.0):
        raise ConfigError(f"delta: {delta} is not in [0, 1); give e.g. 1 / (10 * expected users)")


def default_delta(expected_users: int) -> float:
    """The delta privrec uses unless told otherwise: 1 / (10 * expected_users).

    `expected_users` is a configured, public number, never the exact count of the data (under
    add/remove-one adjacency that count is private).
    """
    return 1.0 / (10.0 * max(int(expected_users), 1))


def check_noise_source(noise: NoiseSource | None) -> NoiseSource:
    """`noise`, or a fresh secure source when None; a seeded numpy Generator is refused."""
    if noise is None:
        return NoiseSource.secure()
    if not isinstance(noise, NoiseSource):
        raise TypeError(
            f"noise: {type(noise).__name__} is not a NoiseSource; DP noise never comes from a "
            "seeded generator (use NoiseSource.secure(), or NoiseSource.reproducible(seed) in "
            "tests, which is not DP)"
        )
    return noise


# ---- event specs (what an accountant composes) ---------------------------------------------------
def gaussian_spec(noise_multiplier: float) -> dict[str, Any]:
    """The spec of one Gaussian release (std / L2 sensitivity)."""
    return {"kind": "gaussian", "noise_multiplier": float(noise_multiplier)}


def laplace_spec(parameter: float) -> dict[str, Any]:
    """The spec of one Laplace release (scale / L1 sensitivity)."""
    return {"kind": "laplace", "parameter": float(parameter)}


def poisson_sampled_spec(sampling_probability: float, event: dict[str, Any]) -> dict[str, Any]:
    """The spec of `event` run on a Poisson sample of users with this probability."""
    return {
        "kind": "poisson_sampled",
        "sampling_probability": float(sampling_probability),
        "event": event,
    }


def self_composed_spec(count: int, event: dict[str, Any]) -> dict[str, Any]:
    """The spec of `event` repeated `count` times."""
    return {"kind": "self_composed", "count": int(count), "event": event}


def composed_spec(events: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The spec of several releases composed (one event stays itself)."""
    ev = list(events)
    return ev[0] if len(ev) == 1 else {"kind": "composed", "events": ev}


def epsilon_delta_spec(epsilon: float, delta: float) -> dict[str, Any]:
    """A bare (epsilon, delta) guarantee: the last resort when no mechanism spec fits."""
    return {"kind": "epsilon_delta", "epsilon": float(epsilon), "delta": float(delta)}


def dpsgd_spec(noise_multiplier: float, sample_rate: float, steps: int) -> dict[str, Any]:
    """DP-SGD: `steps` Poisson-sampled Gaussian steps."""
    return self_composed_spec(
        steps, poisson_sampled_spec(sample_rate, gaussian_spec(noise_multiplier))
    )


# ---- calibration ---------------------------------------------------------------------------------
def gaussian_sigma(epsilon: float, delta: float, sensitivity: float = 1.0) -> float:
    """Noise std of the Gaussian mechanism for (epsilon, delta) and an L2 sensitivity.

    The analytic Gaussian mechanism (exact, optimal for one release) from `dp_accounting`
    (`get_sigma_gaussian`). epsilon = inf gives 0.
    """
    check_epsilon_delta(epsilon, delta)
    if math.isinf(epsilon):
        return 0.0
    if delta <= 0:
        raise ConfigError(
            "delta: the Gaussian mechanism needs delta > 0; use the Laplace mechanism for pure DP"
        )
    return float(_dpa().get_sigma_gaussian(float(epsilon), float(delta))) * float(sensitivity)


def laplace_scale(epsilon: float, sensitivity: float = 1.0) -> float:
    """Scale b = sensitivity / epsilon of the Laplace mechanism (pure epsilon-DP, L1 sensitivity).

    The tests check it against the PLD accountant of `dp_accounting` (its Laplace event with
    parameter b gives epsilon = sensitivity / b).
    """
    check_epsilon_delta(epsilon, 0.0)
    if math.isinf(epsilon):
        return 0.0
    b = float(sensitivity) / float(epsilon)
    return b


def calibrate_gaussians(
    ratios: Sequence[float], epsilon: float, delta: float, *, tol: float = 1e-4
) -> list[float]:
    """Noise multipliers (std / L2 sensitivity) of k composed Gaussian releases with fixed ratios.

    The releases get multipliers `z * ratios[i]`; `z` is the smallest value for which the
    composition is (epsilon, delta)-DP according to dp_accounting's PLD accountant
    (`calibrate_dp_mechanism` over a `ComposedDpEvent`). One ratio reduces to `gaussian_sigma`.

    Returns:
        the k noise multipliers (all 0 when epsilon is inf).
    """
    check_epsilon_delta(epsilon, delta)
    ratios_t = tuple(float(r) for r in ratios)
    if not ratios_t or any(r <= 0 for r in ratios_t):
        raise ConfigError("ratios: give one positive ratio per release")
    if math.isinf(epsilon):
        return [0.0] * len(ratios_t)
    if len(ratios_t) == 1:
        return [gaussian_sigma(epsilon, delta)]
    return list(_calibrate_cached(ratios_t, float(epsilon), float(delta), float(tol)))


@functools.lru_cache(maxsize=256)
def _calibrate_cached(
    ratios: tuple[float, ...], epsilon: float, delta: float, tol: float
) -> tuple[float, ...]:
    dpa = _dpa()
    from dp_accounting import pld

    def event(z: float) -> Any:
        return dpa.ComposedDpEvent([dpa.GaussianDpEvent(z * r) for r in ratios])

    z0 = gaussian_sigma(epsilon, delta) * math.sqrt(sum(1.0 / (r * r) for r in ratios))

    z = dpa.calibrate_dp_mechanism(
        lambda: pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION),
        event,
        float(epsilon),
        float(delta),
        # Gaussians compose like one Gaussian of multiplier z / sqrt(sum 1/r^2): the answer lies
        # close to that value, so search around it (the accountant, not this guess, decides).
        dpa.ExplicitBracketInterval(0.5 * z0, 2.0 * z0),
        tol=tol,
    )
    return tuple(float(z) * r for r in ratios)


def split_ratios(shares: Sequence[float]) -> list[float]:
    """Noise-multiplier ratios that give k Gaussian releases these shares of the privacy budget.

    A Gaussian release with multiplier z_i costs mu_i^2 = 1 / z_i^2 in Gaussian-DP terms and these
    add up; share s_i of the total means z_i proportional to 1 / sqrt(s_i). (Only the ratios are
    set here; `calibrate_gaussians` finds the scale with the PLD accountant.)
    """
    s = [float(x) for x in shares]
    if not s or any(x <= 0 for x in s):
        raise ConfigError("shares: give positive budget shares, e.g. [0.1, 0.9]")
    return [1.0 / math.sqrt(x / sum(s)) for x in s]


def epsilon_of(event: Any, delta: float, accountant: str = "pld") -> float:
    """Epsilon of a DpEvent at `delta` by the PLD ("pld") or RDP ("rdp") accountant."""
    dpa = _dpa()
    if accountant == "pld":
        from dp_accounting import pld

        acc = pld.PLDAccountant(value_discretization_interval=PLD_DISCRETIZATION)
    elif accountant == "rdp":
        acc = dpa.rdp.RdpAccountant()
    else:
        raise ConfigError(f"accountant: {accountant!r} is not 'pld' or 'rdp'")
    return float(acc.compose(event).get_epsilon(float(delta)))


def gaussian_event(noise_multipliers: Sequence[float]) -> Any:
    """The dp_accounting event of Gaussian releases with these noise multipliers (composed)."""
    dpa = _dpa()
    events = [dpa.GaussianDpEvent(float(z)) for z in noise_multipliers]
    return events[0] if len(events) == 1 else dpa.ComposedDpEvent(events)


# ---- DP-SGD (Opacus accountants) -----------------------------------------------------------------
def dpsgd_noise_multiplier(
    epsilon: float, delta: float, *, sample_rate: float, steps: int, accountant: str = "prv"
) -> float:
    """Noise multiplier for DP-SGD with Poisson sampling rate `sample_rate` over `steps` steps.

    Opacus' `get_noise_multiplier` with its PRV (default) or RDP accountant.
    """
    check_epsilon_delta(epsilon, delta)
    if math.isinf(epsilon):
        return 0.0
    from opacus.accountants.utils import get_noise_multiplier

    with (
        warnings.catch_warnings()
    ):  # RDP's "optimal order is the largest alpha" note at large epsilon
        warnings.simplefilter("ignore", UserWarning)
        return float(
            get_noise_multiplier(
                target_epsilon=float(epsilon),
                target_delta=float(delta),
                sample_rate=float(sample_rate),
                steps=int(steps),
                accountant=accountant,
            )
        )


def dpsgd_epsilon(
    noise_multiplier: float,
    delta: float,
    *,
    sample_rate: float,
    steps: int,
    accountant: str = "prv",
) -> float:
    """Epsilon spent by DP-SGD with these parameters, by Opacus' PRV or RDP accountant."""
    if noise_multiplier <= 0:
        return math.inf
    from opacus.accountants import create_accountant

    acc = create_accountant(accountant)
    acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(acc.get_epsilon(delta=float(delta)))


# ---- mechanisms ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GaussianMechanism:
    """Adds N(0, sigma^2) noise, sigma = noise_multiplier * sensitivity (L2).

    Attributes:
        noise_multiplier: std per unit of L2 sensitivity (from `gaussian_sigma` or
            `calibrate_gaussians`).
        sensitivity: the L2 sensitivity of the released quantity to one user.
    """

    noise_multiplier: float
    sensitivity: float = 1.0

    @property
    def sigma(self) -> float:
        """The noise standard deviation."""
        return float(self.noise_multiplier) * float(self.sensitivity)

    @classmethod
    def calibrated(
        cls, epsilon: float, delta: float, sensitivity: float = 1.0
    ) -> GaussianMechanism:
        """The mechanism that gives (epsilon, delta)-DP for one release."""
        return cls(gaussian_sigma(epsilon, delta), sensitivity)

    def add_noise(self, value: np.ndarray, noise: NoiseSource | None = None) -> np.ndarray:
        """value + N(0, sigma^2) per entry (float64; a new array).

        Args:
            value: the exact statistic.
            noise: the noise source (None: fresh OS entropy); a numpy Generator is refused.
        """
        src = check_noise_source(noise)
        v = np.asarray(value, dtype=np.float64)
        if self.sigma == 0:
            return v.copy()
        return v + src.normal(self.sigma, v.shape)

    def add_symmetric_noise(
        self,
        matrix: np.ndarray,
        noise: NoiseSource | None = None,
        *,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """`matrix` plus symmetric (GOE) noise: std sigma off the diagonal, sigma*sqrt(2) on it.

        For a Gram matrix sum_u x_u x_u^T with ||x_u|| <= 1 this releases the upper triangle
        (diagonal scaled by 1/sqrt(2)) whose L2 sensitivity is ||x x^T||_F / sqrt(2) <= 1/sqrt(2);
        so give `sensitivity=1/sqrt(2)` for unit-norm rows. Entries are drawn row by row in a
        fixed order (a reproducible source repeats), in float64, and `out` may be `matrix` itself.
        `noise` None means fresh OS entropy; a numpy Generator is refused.
        """
        src = check_noise_source(noise)
        m = np.asarray(matrix)
        n = m.shape[0]
        if m.shape != (n, n):
            raise ValueError(f"matrix: shape {m.shape} is not square")
        if out is None:
            res = np.array(m, dtype=np.float64, copy=True)
        else:
            res = out
            if res is not m:
                res[...] = m
        s = self.sigma
        if s == 0:
            return res
        cols = np.arange(n)
        for r0 in range(0, n, _NOISE_BLOCK):  # bounded memory: one block of rows at a time
            r1 = min(n, r0 + _NOISE_BLOCK)
            rows = np.arange(r0, r1)
            z = src.normal(s, (r1 - r0, n))
            z[cols[None, :] < rows[:, None]] = (
                0.0  # keep the upper triangle (drawn in a fixed order)
            )
            diag = z[rows - r0, rows] * math.sqrt(2.0)
            z[rows - r0, rows] = 0.0
            res[r0:r1] += z
            res[:, r0:r1] += z.T  # mirror the strictly upper part below the diagonal
            res[rows, rows] += diag
        return res

    def guarantee(self, delta: float, *, unit: str = "user") -> PrivacyGuarantee | None:
        """The (epsilon, delta) this mechanism gives alone (PLD accountant); None without noise."""
        if self.noise_multiplier <= 0:
            return None  # no noise, no guarantee (epsilon = inf is not DP)
        eps = epsilon_of(gaussian_event([self.noise_multiplier]), delta)
        return PrivacyGuarantee(eps, delta, unit, "gaussian", "pld (dp-accounting)", ADJACENCY)

    def event(self) -> dict[str, Any]:
        """Its event spec."""
        return gaussian_spec(self.noise_multiplier)


@dataclass(frozen=True)
class LaplaceMechanism:
    """Adds Laplace(0, b) noise, b = sensitivity / epsilon (L1 sensitivity): pure epsilon-DP."""

    scale: float

    @classmethod
    def calibrated(cls, epsilon: float, sensitivity: float = 1.0) -> LaplaceMechanism:
        """The mechanism that gives epsilon-DP for an L1 sensitivity."""
        return cls(laplace_scale(epsilon, sensitivity))

    def add_noise(self, value: np.ndarray, noise: NoiseSource | None = None) -> np.ndarray:
        """value + Laplace(0, b) per entry (float64; a new array); `noise` as for Gaussian."""
        src = check_noise_source(noise)
        v = np.asarray(value, dtype=np.float64)
        if self.scale == 0:
            return v.copy()
        return v + src.laplace(self.scale, v.shape)

    def event(self, sensitivity: float = 1.0) -> dict[str, Any]:
        """Its event spec for an L1 `sensitivity` (the parameter is scale / sensitivity)."""
        return laplace_spec(self.scale / float(sensitivity))


# ---- what a ledger records -----------------------------------------------------------------------
@dataclass(frozen=True)
class Release:
    """One differentially private release, described before its noise is drawn.

    Attributes:
        name: what is released (e.g. "dp_ease:gram").
        epsilon, delta: its guarantee.
        mechanism: e.g. "gaussian", "gaussian x2 (composed)", "laplace", "dp-sgd".
        accountant: how epsilon was computed, e.g. "pld (dp-accounting)".
        unit: the unit of privacy ("user").
        details: JSON-ready extras (noise multipliers, sensitivities, clipping, sizes).
        event: JSON spec of the mechanism for an accountant (see the module docstring); None
            only for releases made before specs existed.
        adjacency: the neighbouring relation the guarantee is for.
    """

    name: str
    epsilon: float
    delta: float
    mechanism: str
    accountant: str
    unit: str = "user"
    details: dict[str, Any] = field(default_factory=dict)
    event: dict[str, Any] | None = None
    adjacency: str = ADJACENCY

    def guarantee(self) -> PrivacyGuarantee:
        """The PrivacyGuarantee this release carries (ConfigError at epsilon = inf: no release)."""
        return PrivacyGuarantee(
            self.epsilon, self.delta, self.unit, self.mechanism, self.accountant, self.adjacency
        )
