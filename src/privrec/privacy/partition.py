"""The Gaussian sparse histogram: release counts over an open set of keys (layer 1).

Some releases count keys that are not known in advance (pairs of items bought together, search
terms): listing every possible key with noise is impossible, and listing every key anyone
contributed reveals that someone contributed it. The standard answer (Korolova et al., WWW 2009;
Gopi et al., ICML 2020; Google's partition selection; analysed exactly by Wilkins et al., 2024,
"Exact privacy analysis of the Gaussian sparse histogram mechanism") is:

1. bound each user's contribution: at most `max_keys` distinct keys, each counted once;
2. add Gaussian noise of std sigma = z sqrt(max_keys) to the count of every key someone
   contributed (z from the analytic Gaussian mechanism for (epsilon, delta_gauss): on the keys two
   neighbouring datasets share, the user moves at most `max_keys` counts by 1, an L2 change of
   sqrt(max_keys));
3. release only keys whose noisy count exceeds a threshold tau, set so that the keys only the
   added user contributed (count 1 there, absent in the neighbour) all stay hidden except with
   probability delta_threshold: P(some of max_keys values 1 + N(0, sigma^2) exceed tau) =
   1 - Phi((tau - 1) / sigma)^max_keys = delta_threshold, solved exactly for tau.

The whole is (epsilon, delta_gauss + delta_threshold)-DP for add/remove one user. The ledger
records it as a `thresholded` spec (accounting: the Gaussian through the PLD accountant, the
threshold's delta by the basic rule). Written here rather than taken from PipelineDP/PyDP: those
bring a C++ library and a pipeline framework for one calibrated threshold, and every noise draw
in privrec must come from `privacy.noise`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any, TypeVar

import numpy as np

from privrec.core.errors import ConfigError
from privrec.privacy.dp import Release, check_epsilon_delta, gaussian_sigma, gaussian_spec
from privrec.privacy.noise import NoiseSource

__all__ = ["SparseHistogram", "bound_contributions"]

K = TypeVar("K", bound=Hashable)


def bound_contributions(
    keys_per_user: Iterable[Sequence[K]], max_keys: int, rng: np.random.Generator
) -> dict[K, int]:
    """Counts of each key over users, each user counting at most `max_keys` distinct keys.

    A user with more keys contributes a uniform sample of them (drawn from `rng`: this
    randomness is part of the bound, not of the noise, and need not be secret).
    """
    if max_keys < 1:
        raise ConfigError(f"max_keys: {max_keys} must be at least 1")
    counts: dict[K, int] = {}
    for keys in keys_per_user:
        distinct = list(dict.fromkeys(keys))
        if len(distinct) > max_keys:
            pick = rng.choice(len(distinct), size=max_keys, replace=False)
            distinct = [distinct[int(i)] for i in np.sort(pick)]
        for k in distinct:
            counts[k] = counts.get(k, 0) + 1
    return counts


@dataclass(frozen=True)
class SparseHistogram:
    """A calibrated Gaussian sparse histogram (see the module docstring).

    Attributes:
        epsilon, delta: the guarantee of one release (add/remove one user).
        max_keys: distinct keys one user may count (the contribution bound).
        noise_multiplier: z; the noise std is z * sqrt(max_keys).
        threshold: tau; a key is released when its noisy count exceeds it.
        delta_threshold: the part of delta spent on the threshold.
    """

    epsilon: float
    delta: float
    max_keys: int
    noise_multiplier: float
    threshold: float
    delta_threshold: float

    @classmethod
    def calibrated(
        cls, epsilon: float, delta_gauss: float, delta_threshold: float, max_keys: int
    ) -> SparseHistogram:
        """The histogram that is (epsilon, delta_gauss + delta_threshold)-DP.

        The threshold's delta is added by the basic rule wherever releases compose (the
        ledger subtracts it from the budget's delta), so keep it small: tau grows only with
        sqrt(log(1 / delta_threshold)).
        """
        check_epsilon_delta(epsilon, delta_gauss)
        if math.isinf(epsilon) or delta_gauss <= 0:
            raise ConfigError(
                "epsilon/delta: the sparse histogram needs a finite epsilon and delta > 0"
            )
        if not 0 < delta_threshold < 1:
            raise ConfigError(f"delta_threshold: {delta_threshold} is not in (0, 1)")
        if max_keys < 1:
            raise ConfigError(f"max_keys: {max_keys} must be at least 1")
        z = gaussian_sigma(epsilon, delta_gauss)
        sigma = z * math.sqrt(max_keys)
        # P(all max_keys count-1 keys stay below tau) = Phi((tau-1)/sigma)^k = 1 - delta_threshold
        tail = -math.expm1(math.log1p(-delta_threshold) / max_keys)
        tau = 1.0 + sigma * NormalDist().inv_cdf(1.0 - tail)
        return cls(
            float(epsilon),
            float(delta_gauss + delta_threshold),
            int(max_keys),
            z,
            tau,
            float(delta_threshold),
        )

    @property
    def sigma(self) -> float:
        """The noise std on each count."""
        return self.noise_multiplier * math.sqrt(self.max_keys)

    def event(self) -> dict[str, Any]:
        """The ledger spec: the Gaussian (per unit L2 sensitivity) and the threshold's delta."""
        return {
            "kind": "thresholded",
            "delta": self.delta_threshold,
            "event": gaussian_spec(self.noise_multiplier),
        }

    def describe(self, name: str, **details: Any) -> Release:
        """What the ledger records for one release (before any noise is drawn)."""
        return Release(
            name=name,
            epsilon=self.epsilon,
            delta=self.delta,
            mechanism="gaussian sparse histogram (thresholded)",
            accountant="pld (dp-accounting) + threshold delta by the basic rule",
            details={
                "max_keys_per_user": self.max_keys,
                "noise_std": self.sigma,
                "threshold": self.threshold,
                **details,
            },
            event=self.event(),
        )

    def release(self, counts: dict[K, int], noise: NoiseSource | None = None) -> dict[K, float]:
        """The released keys and their noisy counts (only those above the threshold).

        Args:
            counts: exact counts from `bound_contributions` (every key at least 1).
            noise: None means fresh OS entropy (the DP default); a reproducible source makes
                the output no DP release.
        """
        if not counts:
            return {}
        src = noise if noise is not None else NoiseSource.secure()
        keys = list(counts)
        exact = np.fromiter((counts[k] for k in keys), np.float64, len(keys))
        if np.any(exact < 1):
            raise ConfigError("counts: a key with a count below 1 is not a contributed key")
        noisy = exact + src.normal(self.sigma, exact.shape)
        keep = np.flatnonzero(noisy > self.threshold)
        return {keys[int(i)]: float(noisy[int(i)]) for i in keep}
