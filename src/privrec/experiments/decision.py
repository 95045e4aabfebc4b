"""When is an experiment over, and who won? Sequential tests and guardrails per arm.

Each treatment arm is compared with the control (the first arm) on the experiment's primary
metric with the always-valid mSPRT (`stats.sequential_proportions`), looked at after every
exposure and outcome: a conversion unit is a shopper (success: an attributed purchase on any of
their lists), a CTR unit is a list (success: an attributed click). Every look sees only what had
happened by then, so the verdict is the one a dashboard watched continuously would have given,
without the inflation of false positives that peeking at fixed-horizon tests brings.

The winner is the treatment whose test concluded with the largest positive effect; if every
treatment concluded worse than the control, the control wins. A winner that breaches a
guardrail (e.g. revenue per shopper or coverage dropping by more than the allowed fraction
against the control) is blocked from promotion.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from privrec.experiments.assignment import Experiment
from privrec.experiments.online import ListRow, OutcomeRow, arm_units, check_guardrails
from privrec.experiments.stats import looks_from_times, sequential_proportions

__all__ = ["MAX_LOOKS", "decide"]

MAX_LOOKS = 5000


def _looks(times: np.ndarray, now: float) -> np.ndarray:
    """Every distinct event time up to `now` (thinned evenly past MAX_LOOKS), and `now`."""
    t = np.unique(times[np.isfinite(times) & (times <= now)])
    if len(t) > MAX_LOOKS:
        t = t[np.linspace(0, len(t) - 1, MAX_LOOKS).astype(np.int64)]
    return np.append(t, now)


def _test(
    units: Mapping[str, tuple[np.ndarray, np.ndarray]],
    control: str,
    arm: str,
    exp: Experiment,
    now: float,
) -> dict[str, Any]:
    empty = np.empty(0, np.float64)
    ea, sa = units.get(control, (empty, empty))
    eb, sb = units.get(arm, (empty, empty))
    exposed = np.concatenate([ea, eb])
    success = np.concatenate([sa, sb])
    is_b = np.concatenate([np.zeros(len(ea), bool), np.ones(len(eb), bool)])
    looks = _looks(np.concatenate([exposed, success]), now)
    n_a, x_a, n_b, x_b = looks_from_times(exposed, success, is_b, looks)
    return sequential_proportions(n_a, x_a, n_b, x_b, alpha=exp.alpha, tau2=exp.tau2)


def decide(
    exp: Experiment,
    lists: Sequence[ListRow],
    outcomes: Sequence[OutcomeRow],
    online: Sequence[Mapping[str, Any]],
    *,
    now: float,
) -> dict[str, Any]:
    """Sequential tests, guardrails and the promotion decision of an experiment.

    Args:
        exp: the experiment.
        lists / outcomes: its tracked lists and their attributed outcomes (feedback log).
        online: its per-arm metrics over the run (`online.totals` by arm).
        now: the time of this look.

    Returns:
        {"online": per-arm metrics, "sequential": {arm: {metric: test}}, "guardrails":
        {arm: [checks]}, "decision": {concluded, winner, leader, blocked_by, reason}}.
    """
    names = [v.name for v in exp.variants]
    control = names[0]
    by_arm = {str(r["arm"]): r for r in online if r.get("experiment") == exp.name}
    metrics = [exp.primary] + [m for m in ("conversion", "ctr") if m != exp.primary]
    units = {m: arm_units(lists, outcomes, m) for m in metrics}
    sequential: dict[str, dict[str, Any]] = {}
    guardrails: dict[str, list[dict[str, Any]]] = {}
    for arm in names[1:]:
        sequential[arm] = {m: _test(units[m], control, arm, exp, now) for m in metrics}
        guardrails[arm] = check_guardrails(
            by_arm.get(control, {}), by_arm.get(arm, {}), exp.guardrails
        )
    primary = {arm: sequential[arm][exp.primary] for arm in names[1:]}
    better = [a for a, t in primary.items() if t["concluded"] and (t["effect"] or 0) > 0]
    winner: str | None = None
    if better:
        winner = max(better, key=lambda a: primary[a]["effect"] or 0.0)
    elif primary and all(t["concluded"] and (t["effect"] or 0) < 0 for t in primary.values()):
        winner = control
    rates = {a: by_arm.get(a, {}).get(exp.primary) for a in names}
    known = {a: r for a, r in rates.items() if r is not None}
    leader = max(known, key=lambda a: known[a]) if known else control
    blocked = [] if winner in (None, control) else guardrails[str(winner)]
    blocked_by = [g["metric"] for g in blocked if g["breached"]]
    if winner is None:
        reason = (
            f"the sequential test of {exp.primary} has not concluded for any arm at "
            f"alpha={exp.alpha:g} (it stays valid however often you look)"
        )
    elif blocked_by:
        reason = f"arm {winner!r} won on {exp.primary} but breaches guardrails: " + ", ".join(
            blocked_by
        )
    elif winner == control:
        reason = f"every arm did worse than the control on {exp.primary}; the control wins"
    else:
        eff = primary[winner]["effect"] or 0.0
        reason = f"arm {winner!r} beats the control on {exp.primary} by {eff:+.4f}"
    return {
        "online": [by_arm.get(a, {"experiment": exp.name, "arm": a}) for a in names],
        "sequential": sequential,
        "guardrails": guardrails,
        "decision": {
            "concluded": winner is not None,
            "winner": winner,
            "leader": leader,
            "blocked_by": blocked_by,
            "ready": winner is not None and not blocked_by,
            "reason": reason,
        },
    }
