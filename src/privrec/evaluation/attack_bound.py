"""The membership attack's trials as an empirical lower bound on epsilon (issue 16).

`membership.membership_audit(..., keep_trials=True)` returns every attacked shopper's IN/OUT label
and attack score; `attack_epsilon_bound` turns them into the canary audit's Clopper-Pearson bound
(`canary.epsilon_lower_bound`, see its module docstring for the formula and its caveats), with the
threshold chosen on other trials than the ones it is evaluated on. A module of its own because
`canary` imports `membership` (the import graph stays acyclic).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from privrec.evaluation.canary import EpsilonBound, epsilon_at_threshold, epsilon_lower_bound
from privrec.evaluation.membership import AttackTrials


def attack_epsilon_bound(
    trials: AttackTrials,
    *,
    delta: float,
    confidence: float = 0.95,
    select: Literal["shadow", "split"] = "shadow",
    seed: int = 0,
) -> EpsilonBound:
    """Empirical lower bound on epsilon from the attack's trials (`canary.epsilon_lower_bound`).

    The best of all thresholds on the same trials is optimistic, so the threshold is chosen on
    other trials and evaluated once (`canary.epsilon_at_threshold`) on the held-out ones:

    - ``"shadow"``: the threshold with the best bound on the shadow trials, evaluated on every
      target trial (the attacker's own data picks it; the target's labels never do);
    - ``"split"``: the target trials are split in two seeded, stratified halves; the best
      threshold of one half is evaluated on the other (half the trials, so less power).

    Caveat: the trials of one repeat share a model, so Clopper-Pearson's independence holds only
    approximately (as in the canary audit).

    Args:
        trials: from `membership_audit(..., keep_trials=True)`.
        delta: the model's delta.
        confidence: of each two-sided Clopper-Pearson interval.
        select: where the threshold is chosen ("shadow" or "split").
        seed: seeds the split.

    Raises:
        ValueError: ``select`` is unknown, or the trials lack IN or OUT shoppers.
    """
    y = np.asarray(trials.labels, dtype=bool)
    s = np.asarray(trials.scores, dtype=np.float64)
    if select == "shadow":
        chosen = epsilon_lower_bound(
            np.asarray(trials.shadow_labels, dtype=bool),
            np.asarray(trials.shadow_scores, dtype=np.float64),
            delta=delta,
            confidence=confidence,
        )
        return epsilon_at_threshold(y, s, chosen.threshold, delta=delta, confidence=confidence)
    if select == "split":
        rng = np.random.default_rng(seed)
        pick = np.zeros(y.size, dtype=bool)
        for cls in (True, False):  # stratified: each half keeps half of the IN and of the OUT
            idx = rng.permutation(np.nonzero(y == cls)[0])
            pick[idx[: idx.size // 2]] = True
        chosen = epsilon_lower_bound(y[pick], s[pick], delta=delta, confidence=confidence)
        return epsilon_at_threshold(
            y[~pick], s[~pick], chosen.threshold, delta=delta, confidence=confidence
        )
    raise ValueError(f"select: {select!r} is not 'shadow' or 'split'")
