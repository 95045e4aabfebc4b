"""The DP models' hyper-parameters in the privacy report: nothing is tuned on private data for free.

`choose_params` picks them in one of two ways, `tuning=`:

- ``"public"`` (default): the fixed values of `DEFAULT_ROSTER`, set in this module in advance and
  never tuned on the data a report measures. Revisit them only on public data, the MovieLens-100k
  and Amazon Beauty datasets (`benchmarks/privacy_frontier.py --tuning public`), never on a
  shop's events.
- ``"private"``: a private selection (`privacy.selection`, Papernot & Steinke's repeat-and-select
  with a geometric number of runs, mean = the number of candidates) over `PRIVATE_GRIDS`, scored
  by NDCG@10 on each user's last training event (a per-user split) with Gaussian noise
  (sensitivity 1: a sum of per-user NDCGs in [0, 1]). The per-fit epsilon is calibrated so that
  the WHOLE selection, every candidate fit and the choice included, costs the point's epsilon at
  its delta (1 / (10 x expected users), not the data's count); that one release is charged to
  the report's ledger before the first fit, and the selected run's model (fitted on the
  training part minus validation) is the point's model. Models without a
  grid (or whose releases are not Gaussian, e.g. DP-SGD) keep the public values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from privrec.core.errors import ConfigError
from privrec.data.dataset import InteractionDataset
from privrec.evaluation.protocol import evaluate_loo
from privrec.models.base import Recommender
from privrec.models.zoo import create_model
from privrec.privacy.dp import gaussian_sigma
from privrec.privacy.ledger import PrivacyLedger
from privrec.privacy.selection import (
    RandomSource,
    SelectionRelease,
    gaussian_multiplier,
    plan_selection,
    private_select,
)

__all__ = [
    "DEFAULT_DP_MODEL",
    "DEFAULT_EXPECTED_USERS",
    "DEFAULT_ROSTER",
    "FALLBACK_DP_MODEL",
    "HYPERPARAMETER_RULE",
    "PRIVATE_GRIDS",
    "SCORE_NOISE_RATIO",
    "TUNING_MODES",
    "ParamChoice",
    "ParamsFor",
    "choose_params",
    "default_dp_model",
    "default_roster",
    "has_item_text",
    "per_fit_epsilon",
]

# model -> parameters for an epsilon (the frontier's default roster; benchmarks tune their own)
ParamsFor = Callable[[float], Mapping[str, Any]]
DEFAULT_ROSTER: dict[str, ParamsFor] = {
    "dp_popularity": lambda eps: {"epsilon": eps},
    "dp_itemknn": lambda eps: {"epsilon": eps, "k": 100, "selection_share": 0.15},
    "dp_ease": lambda eps: {"epsilon": eps, "selection_share": 0.15},
    # DP EASE's release, its ridge shrunk towards a public item-text prior (needs item text);
    # the model's own defaults, as measured in benchmarks/RESULTS.md ("dp_ease_prior (fixed)")
    "dp_ease_prior": lambda eps: {"epsilon": eps},
    "dp_bpr": lambda eps: {"epsilon": eps},
    # public item text + one DP co-occurrence release (needs item text; encodes it once, cached)
    "dp_hybrid": lambda eps: {"epsilon": eps},
}

# The DP model a shop gets by default (issue 16): where the catalogue has item text, DP EASE
# shrunk towards the text prior; it beat plain DP EASE from the same release on MovieLens-100K
# (every epsilon) and on Amazon Beauty's validation split (benchmarks/RESULTS.md); without item
# text there is no prior, so plain DP EASE.
DEFAULT_DP_MODEL = "dp_ease_prior"
FALLBACK_DP_MODEL = "dp_ease"

TUNING_MODES = ("public", "private")
HYPERPARAMETER_RULE = (
    "DP hyper-parameters are either fixed in advance (public: never tuned on the reported data; "
    "revisited only on public MovieLens-100k / Amazon Beauty) or chosen by a private selection "
    "(Papernot-Steinke repeat-and-select) whose whole cost is the point's epsilon and is charged "
    "to the ledger; see each point's 'tuning'"
)
# candidates of the private selection (epsilon and delta are set by the selection); small on
# purpose: the cost grows with the log of the mean number of runs, the utility with fit epsilon
PRIVATE_GRIDS: dict[str, list[dict[str, Any]]] = {
    "dp_ease": [{"reg": r, "selection_share": s} for r in (1.0, 3.0, 10.0) for s in (0.1, 0.2)],
    "dp_itemknn": [
        {"k": k, "shrink": sh, "selection_share": 0.15}
        for k in (50, 100, 200)
        for sh in (0.0, 10.0)
    ],
}
# score noise multiplier over the fit's: the noisy score takes 1/10 of a run's Gaussian budget
SCORE_NOISE_RATIO = 3.0
DEFAULT_EXPECTED_USERS = 100_000  # the delta of a tuned point: 1 / (10 x expected users)


def has_item_text(dataset: InteractionDataset) -> bool:
    """Whether any item of `dataset` has public text (title, category, brand or description)."""
    return any(t.strip() for t in dataset.item_text())


def default_dp_model(dataset: InteractionDataset) -> str:
    """The default DP model for `dataset`: DEFAULT_DP_MODEL with item text, else the fallback."""
    return DEFAULT_DP_MODEL if has_item_text(dataset) else FALLBACK_DP_MODEL


def default_roster(dataset: InteractionDataset) -> dict[str, ParamsFor]:
    """DEFAULT_ROSTER with one DP EASE: the one `default_dp_model` picks for `dataset`."""
    other = FALLBACK_DP_MODEL if default_dp_model(dataset) == DEFAULT_DP_MODEL else DEFAULT_DP_MODEL
    return {name: params for name, params in DEFAULT_ROSTER.items() if name != other}


@dataclass
class ParamChoice:
    """The parameters a frontier point uses and how they were chosen.

    Attributes:
        params: the model's parameters.
        tuning: "public" (fixed in advance) or "private" (charged private selection).
        model: the selected run's fitted model (private), None (public: fit it yourself).
        selection: the selection's facts (release, runs, per-fit epsilon), None when public.
    """

    params: dict[str, Any]
    tuning: str
    model: Recommender | None = None
    selection: dict[str, Any] | None = None


def _selection_plan(
    fit_epsilon: float, n: int, delta: float, name: str
) -> tuple[SelectionRelease, float]:
    z = gaussian_sigma(fit_epsilon, delta)
    fits = [{"kind": "gaussian", "noise_multiplier": z}] * n
    plan = plan_selection(
        fits, score_noise_multiplier=SCORE_NOISE_RATIO * z, delta=delta, name=name
    )
    return plan, z


def per_fit_epsilon(target: float, n_candidates: int, delta: float, *, tol: float = 1e-3) -> float:
    """The largest per-fit epsilon whose private selection over `n_candidates` costs <= target.

    Raises:
        ConfigError: even a negligible per-fit epsilon costs more (the selection's fixed part).
    """
    lo, hi = target * 1e-3, target
    if _selection_plan(lo, n_candidates, delta, "")[0].epsilon > target:
        raise ConfigError(
            f"epsilon: {target:g} is too small for a private selection over {n_candidates} "
            "candidates at this delta; use tuning='public' or fewer candidates"
        )
    while hi - lo > tol * target:  # the cost grows with the per-fit epsilon
        mid = 0.5 * (lo + hi)
        if _selection_plan(mid, n_candidates, delta, "")[0].epsilon <= target:
            lo = mid
        else:
            hi = mid
    return lo


def choose_params(
    name: str,
    epsilon: float,
    train: InteractionDataset,
    *,
    tuning: str = "public",
    roster: Mapping[str, ParamsFor] | None = None,
    grids: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    expected_users: int = DEFAULT_EXPECTED_USERS,
    ledger: PrivacyLedger | None = None,
    seed: int = 42,
    random: RandomSource | None = None,
) -> ParamChoice:
    """The hyper-parameters of DP model `name` at `epsilon`, by the rule of the module docstring.

    Args:
        name: the model.
        epsilon: the point's total epsilon (the whole selection's, when private).
        train: the training part (private tuning splits a validation part off it).
        tuning: "public" (fixed values of `roster`) or "private" (charged selection).
        roster: the fixed values (DEFAULT_ROSTER).
        grids: the private candidates per model (PRIVATE_GRIDS); a model without one is public.
        expected_users: sets the tuned point's delta, 1 / (10 x expected_users).
        ledger: charged with the selection (one release) before the first fit.
        seed: the fits' and split's non-noise seed.
        random: the selection's randomness (default OS entropy; seeded only in tests).
    """
    if tuning not in TUNING_MODES:
        raise ConfigError(f"tuning: {tuning!r} is not one of {', '.join(TUNING_MODES)}")
    roster = DEFAULT_ROSTER if roster is None else roster
    grid = list((PRIVATE_GRIDS if grids is None else grids).get(name, []))
    public = dict(roster[name](float(epsilon))) if name in roster else {"epsilon": epsilon}
    if tuning == "public" or math.isinf(epsilon) or not grid:
        return ParamChoice(public, "public")
    delta = 1.0 / (10.0 * expected_users)
    eps_fit = per_fit_epsilon(float(epsilon), len(grid), delta)
    plan, z_fit = _selection_plan(eps_fit, len(grid), delta, f"{name}:tuning")
    candidates = [{**dict(c), "epsilon": eps_fit, "delta": delta} for c in grid]
    from privrec.data.splitters import leave_one_out_test

    # a per-user split: one user's events decide only their own validation item, so the score
    # sum changes by at most one NDCG (<= 1) when a user is added or removed
    sub_train, valid = leave_one_out_test(train)

    def fit_and_score(params: dict[str, Any]) -> tuple[Recommender, float]:
        model = create_model(name, **params)
        model.fit(sub_train, rng=seed, ledger=None)  # the selection's release covers this fit
        event = getattr(getattr(model, "release", None), "event", None)
        z = gaussian_multiplier(event) if isinstance(event, Mapping) else None
        if z is None or z < z_fit * (1 - 1e-9):
            # the charged cost assumed at most this Gaussian's loss per fit; stop otherwise
            raise ConfigError(
                f"private tuning of {name}: the fit's release is not a Gaussian release at "
                f"least as noisy as planned (noise multiplier {z} < {z_fit:.4g}); use "
                "tuning='public'"
            )
        r = evaluate_loo(model, sub_train, valid, metrics=("ndcg@10",))
        return model, float(r["ndcg@10"]) * float(r["n_users"])  # sum of per-user NDCG@10

    res = private_select(candidates, fit_and_score, plan, ledger=ledger, model=name, random=random)
    if res.candidate is None:
        return ParamChoice(public, "public", selection={"runs": 0, "note": "no run happened"})
    return ParamChoice(
        dict(res.candidate),
        "private",
        model=res.model,
        selection={
            "release": {"name": plan.name, "epsilon": plan.epsilon, "delta": plan.delta},
            "event": plan.event,
            "per_fit_epsilon": eps_fit,
            "candidates": len(candidates),
            "runs": res.runs,
            "chosen": res.index,
            "validation": "each user's last training event; score: sum of NDCG@10 + noise",
        },
    )
