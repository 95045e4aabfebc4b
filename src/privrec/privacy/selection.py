"""Private hyper-parameter selection whose whole cost is charged (Papernot & Steinke, ICLR 2022).

Tuning a DP model on the shop's private data is itself a release: every candidate fit and every
validation score reads the data, and "keep the best" leaks through the choice. privrec tunes
privately with the repeat-and-select mechanism of Papernot & Steinke ("Hyperparameter Tuning
with Renyi Differential Privacy"):

1. Draw the number of runs K from a truncated negative binomial distribution with shape eta and
   mean m (eta = 1: geometric, the default; eta = 0: logarithmic; eta = inf: Poisson).
2. Each run Q picks a candidate uniformly at random, fits it (a DP release) and scores it on
   validation data with Gaussian noise (the score's sensitivity to one user is known, e.g. 1 for
   a sum of per-user NDCGs in [0, 1]).
3. Keep the run with the best noisy score; release only that run's model and candidate.

Cost (Theorem 2 of the paper): if Q is (lambda, eps(lambda))-RDP at every order, the selection is
(lambda, eps'(lambda))-RDP with

    eps'(lambda) = eps(lambda)
                   + (1 + eta) * min_lhat [(1 - 1/lhat) * eps(lhat) + log(1/gamma) / lhat]
                   + log(m) / (lambda - 1)

(gamma is the distribution's stopping parameter for mean m), then converted to (epsilon, delta)
by dp-accounting's RDP accountant, which implements exactly this (`RepeatAndSelectDpEvent`). The
cost grows only with log m: trying ten times more runs costs log(10) / (lambda - 1) more RDP, not
ten times more epsilon. A run's RDP is that of its fit composed with the noisy score; when the
candidates differ, one event that dominates every candidate is used (`dominating_event`).

The selection is recorded as ONE release, `{"kind": "repeat_and_select", "mean": m, "shape":
eta, "event": <run>}`, charged to the ledger before the first run; the candidate fits are not
charged again (they are inside it).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from privrec.core.errors import ConfigError
from privrec.privacy.accounting import compose, event_from_spec

ADJACENCY = "add/remove one user"
ACCOUNTANT = "rdp (dp-accounting, repeat-and-select: Papernot & Steinke 2022)"
_MAX_RUNS = 1_000_000  # the distribution's tail beyond this has no practical mass

C = TypeVar("C")
M = TypeVar("M")


class RandomSource(Protocol):
    """Where the selection's randomness comes from (`privacy.noise.NoiseSource` fits)."""

    def uniform(self, size: int) -> np.ndarray:
        """Uniforms in (0, 1]."""
        ...

    def normal(self, scale: float, size: int) -> np.ndarray:
        """N(0, scale^2) draws."""
        ...


class OsRandom:
    """OS entropy for every draw: the number of runs, the candidates and the score noise.

    A seeded generator would let anyone who knows the seed replay the noise, so the default is
    never seeded.
    """

    def uniform(self, size: int) -> np.ndarray:
        """Uniforms in (0, 1] with 53 random bits each."""
        w = np.frombuffer(os.urandom(8 * int(size)), dtype=np.uint64)
        return ((w >> np.uint64(11)).astype(np.float64) + 1.0) * 2.0**-53

    def normal(self, scale: float, size: int) -> np.ndarray:
        """N(0, scale^2) draws by the Box-Muller transform."""
        u = self.uniform(2 * int(size))
        r = np.sqrt(-2.0 * np.log(u[:size]))
        return float(scale) * r * np.cos(2.0 * math.pi * u[size:])


@dataclass(frozen=True)
class SelectionRelease:
    """The selection as one DP release (what the ledger charges; fields as `dp.Release`).

    Attributes:
        name: what is released, e.g. "dp_ease:tuning".
        epsilon, delta: the whole selection's guarantee (every run included).
        mechanism: a short description.
        accountant: how epsilon was computed.
        unit: the unit of privacy.
        details: mean and shape of the number of runs, score noise, candidates.
        event: the `repeat_and_select` spec the ledger composes.
        adjacency: the neighbouring relation.
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


def _gaussian_mu2(spec: Mapping[str, Any]) -> float | None:
    """Sum of 1/z^2 over a spec made only of Gaussians (composed or self-composed), else None.

    Gaussian mechanisms compose exactly like one Gaussian whose 1/z^2 is the sum of theirs
    (Gaussian DP: mu^2 adds), so such a spec is the single Gaussian with that multiplier.
    """
    kind = spec.get("kind")
    if kind == "gaussian":
        z = float(spec["noise_multiplier"])
        return math.inf if z == 0 else 1.0 / (z * z)
    if kind == "self_composed":
        inner = _gaussian_mu2(spec.get("event", {}))
        return None if inner is None else int(spec["count"]) * inner
    if kind == "composed":
        parts = [_gaussian_mu2(e) for e in spec.get("events", [])]
        return None if any(p is None for p in parts) else math.fsum(p or 0.0 for p in parts)
    return None


def gaussian_multiplier(spec: Mapping[str, Any]) -> float | None:
    """The noise multiplier of the one Gaussian a Gaussians-only spec equals, else None."""
    mu2 = _gaussian_mu2(spec)
    if mu2 is None:
        return None
    return math.inf if mu2 == 0 else (0.0 if math.isinf(mu2) else 1.0 / math.sqrt(mu2))


def run_event(fit_event: Mapping[str, Any], score_noise_multiplier: float) -> dict[str, Any]:
    """The spec of one run: the candidate's fit, then its score with Gaussian noise."""
    if not score_noise_multiplier > 0:
        raise ConfigError(
            f"score_noise_multiplier: {score_noise_multiplier} is not positive; an exact "
            "validation score is not private"
        )
    return {
        "kind": "composed",
        "events": [
            dict(fit_event),
            {"kind": "gaussian", "noise_multiplier": score_noise_multiplier},
        ],
    }


def dominating_event(run_events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One spec at least as private-costly as every run (a run picks one candidate at random).

    The Renyi divergence of a random choice is at most the largest of its parts', so one event
    that dominates each run bounds the run. All identical: that one. All made of Gaussians: the
    Gaussian equivalent of the costliest (exact). Otherwise: the composition of the distinct
    runs (sound, looser).
    """
    if not run_events:
        raise ConfigError("candidates: give at least one")
    distinct: list[dict[str, Any]] = []
    for e in run_events:
        if dict(e) not in distinct:
            distinct.append(dict(e))
    if len(distinct) == 1:
        return distinct[0]
    mu2 = [_gaussian_mu2(e) for e in distinct]
    if all(m is not None for m in mu2):
        worst = max(m or 0.0 for m in mu2)
        z = 0.0 if math.isinf(worst) else 1.0 / math.sqrt(worst)
        return {"kind": "gaussian", "noise_multiplier": z}
    return {"kind": "composed", "events": distinct}


def selection_event(
    run: Mapping[str, Any], *, mean_runs: float, shape: float = 1.0
) -> dict[str, Any]:
    """The `repeat_and_select` spec of the selection (validated)."""
    spec = {"kind": "repeat_and_select", "mean": float(mean_runs), "shape": float(shape)}
    spec["event"] = dict(run)
    event_from_spec(spec)
    return spec


def selection_cost(
    run: Mapping[str, Any], *, mean_runs: float, shape: float = 1.0, delta: float
) -> float:
    """Epsilon at `delta` of the whole selection (every run and the choice), by RDP."""
    return compose([selection_event(run, mean_runs=mean_runs, shape=shape)], delta=delta)


def plan_selection(
    fit_events: Sequence[Mapping[str, Any]],
    *,
    score_noise_multiplier: float,
    delta: float,
    mean_runs: float | None = None,
    shape: float = 1.0,
    name: str = "tuning",
) -> SelectionRelease:
    """The selection's release before anything runs: its event, epsilon and delta.

    Args:
        fit_events: the event spec of each candidate's fit (one per candidate).
        score_noise_multiplier: Gaussian noise std of the validation score per unit of its
            sensitivity to one user.
        delta: the delta to state the epsilon at.
        mean_runs: the mean number of runs (default: the number of candidates, so each one is
            tried once on average); the cost grows with its logarithm.
        shape: eta of the truncated negative binomial (0 logarithmic, 1 geometric, inf Poisson).
        name: the release's name.
    """
    runs = [run_event(f, score_noise_multiplier) for f in fit_events]
    mean = float(len(runs) if mean_runs is None else mean_runs)
    spec = selection_event(dominating_event(runs), mean_runs=mean, shape=shape)
    eps = compose([spec], delta=delta)
    return SelectionRelease(
        name=name,
        epsilon=eps,
        delta=float(delta),
        mechanism=f"repeat-and-select (truncated neg. binomial, shape {shape:g}, mean {mean:g})",
        accountant=ACCOUNTANT,
        details={
            "candidates": len(runs),
            "mean_runs": mean,
            "shape": float(shape),
            "score_noise_multiplier": float(score_noise_multiplier),
        },
        event=spec,
    )


def _gamma(shape: float, mean: float) -> float:
    from dp_accounting.rdp import rdp_privacy_accountant as rpa

    # the accountant's own mean -> gamma map: the runs are drawn from exactly the distribution
    # whose cost it computes
    return float(rpa._gamma_truncated_negative_binomial(shape, mean))


def number_of_runs(mean: float, shape: float, u: float) -> int:
    """K from the truncated negative binomial (or Poisson) by inverting its CDF at `u` in (0, 1].

    P[K = k] = (1 - gamma)^k / (gamma^-eta - 1) * prod_{l<k} (l + eta) / (l + 1) for k >= 1;
    eta = 0 is the logarithmic limit (1 - gamma)^k / (k log(1/gamma)); eta = inf is Poisson(mean)
    (K = 0 possible: then nothing is selected).
    """
    if mean < 1:
        raise ConfigError(f"mean_runs: {mean} is below 1")
    if math.isinf(shape):
        k, p = 0, math.exp(-mean)
        cdf = p
        while cdf < u and k < _MAX_RUNS:
            k += 1
            p *= mean / k
            cdf += p
        return k
    if mean == 1:
        return 1
    gamma = _gamma(shape, mean)
    q = 1.0 - gamma
    if shape == 0:
        p = q / math.log(1.0 / gamma)
    else:
        p = q / (gamma**-shape - 1.0) * shape  # k = 1: (1 - gamma) * eta / (gamma^-eta - 1)
    k, cdf = 1, p
    while cdf < u and k < _MAX_RUNS:
        p *= q * (k + shape) / (k + 1) if shape else q * k / (k + 1)
        k += 1
        cdf += p
    return k


@dataclass
class SelectionResult(Generic[C, M]):
    """What the selection returns (only the best run's model and candidate may be published).

    Attributes:
        candidate: the chosen candidate (None when no run happened).
        model: its fitted model.
        index: the chosen candidate's index.
        noisy_score: the chosen run's noisy score.
        runs: how many runs happened.
        release: the charged release.
    """

    candidate: C | None
    model: M | None
    index: int | None
    noisy_score: float
    runs: int
    release: SelectionRelease


class _Ledger(Protocol):
    def charge(self, release: Any, *, model: str = "") -> dict[str, Any]: ...


def private_select(
    candidates: Sequence[C],
    fit_and_score: Callable[[C], tuple[M, float]],
    plan: SelectionRelease,
    *,
    score_sensitivity: float = 1.0,
    ledger: _Ledger | None = None,
    model: str = "",
    random: RandomSource | None = None,
) -> SelectionResult[C, M]:
    """Run the private selection `plan` (from `plan_selection`) over `candidates`.

    Args:
        candidates: the hyper-parameter settings, in the order of `plan`'s fit events.
        fit_and_score: fits a candidate as the DP release its fit event describes (its own
            ledger charge off: the plan covers it) and returns (model, exact validation score),
            the score's sensitivity to one user being `score_sensitivity`.
        plan: the charged release (its event fixes the runs' distribution and score noise).
        score_sensitivity: the validation score's sensitivity to one user.
        ledger: charged with `plan` before the first run (raises BudgetExceededError).
        model: the ledger entry's model name.
        random: the randomness (default: OS entropy; a seeded one is for tests, not DP).

    Returns:
        the best run by noisy score.
    """
    if not candidates or len(candidates) != int(plan.details.get("candidates", -1)):
        raise ConfigError(
            f"candidates: {len(candidates)} given but the plan has "
            f"{plan.details.get('candidates')}; plan the selection over these candidates"
        )
    if ledger is not None:
        ledger.charge(plan, model=model)
    src = random if random is not None else OsRandom()
    mean, shape = float(plan.details["mean_runs"]), float(plan.details["shape"])
    z = float(plan.details["score_noise_multiplier"]) * float(score_sensitivity)
    k = number_of_runs(mean, shape, float(src.uniform(1)[0]))
    best: tuple[float, int, M] | None = None
    for _ in range(k):
        i = min(int(float(src.uniform(1)[0]) * len(candidates)), len(candidates) - 1)
        fitted, score = fit_and_score(candidates[i])
        noisy = float(score) + float(src.normal(z, 1)[0])
        if best is None or noisy > best[0]:
            best = (noisy, i, fitted)
    if best is None:
        return SelectionResult(None, None, None, -math.inf, 0, plan)
    return SelectionResult(candidates[best[1]], best[2], best[1], best[0], k, plan)
