"""The privacy-utility frontier: every DP model trained and measured at every epsilon.

For each roster model and each epsilon in {0.5, 1, 2, 4, 8, inf}, `run_frontier` chooses the
hyper-parameters (`privacy_tuning.choose_params`), trains on the training part, measures NDCG@10
on the test part (full ranking; leave-one-out or every-test-item-relevant) and runs the
membership-inference audit (`evaluation.membership`) against the same model kind and settings.
Every DP release is charged to a privacy-budget ledger.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from privrec.core.errors import ConfigError
from privrec.data.dataset import InteractionDataset
from privrec.evaluation.membership import membership_audit
from privrec.evaluation.privacy_tuning import (
    DEFAULT_ROSTER,
    TUNING_MODES,
    ParamsFor,
    choose_params,
)
from privrec.evaluation.protocol import evaluate_loo, evaluate_ranking
from privrec.models.base import Recommender
from privrec.models.zoo import create_model
from privrec.privacy.ledger import PrivacyLedger

__all__ = ["EPSILONS", "FrontierPoint", "evaluate", "run_frontier"]

EPSILONS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, math.inf)


@dataclass
class FrontierPoint:
    """One model at one epsilon: utility and attack."""

    dataset: str
    model: str
    epsilon: float
    delta: float | None
    ndcg_at_10: float
    metrics: dict[str, float]
    attack_auc: float | None
    attack_tpr_at_1pct_fpr: float | None
    attack_auc_std: float | None
    fit_seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] | None = None
    tuning: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (inf epsilon as the string "inf")."""
        d = asdict(self)
        d["epsilon"] = "inf" if math.isinf(self.epsilon) else self.epsilon
        return d


def _fit(
    model: Recommender, train: InteractionDataset, seed: int, ledger: PrivacyLedger | None
) -> Recommender:
    """`fit`, charging the DP releases to `ledger` (every model's fit takes one)."""
    return model.fit(train, rng=seed, ledger=ledger)


def evaluate(
    model: Recommender, train: InteractionDataset, test: InteractionDataset, protocol: str
) -> dict[str, float]:
    """NDCG@10 (and HR@10 for leave-one-out) under the protocol."""
    if protocol == "loo":
        r = evaluate_loo(model, train, test, metrics=("ndcg@10", "hr@10"))
    else:
        r = evaluate_ranking(
            model, train, test, metrics=("ndcg@10", "map@10", "precision@10", "recall@10")
        )
    return {k: float(v) for k, v in r.items() if "@" in k}


def run_frontier(
    train: InteractionDataset,
    test: InteractionDataset,
    *,
    dataset_name: str,
    protocol: str = "loo",
    roster: Mapping[str, ParamsFor] | None = None,
    epsilons: Sequence[float] = EPSILONS,
    audit_dataset: InteractionDataset | None = None,
    audit: bool = True,
    audit_kwargs: Mapping[str, Any] | None = None,
    ledger: PrivacyLedger | None = None,
    seed: int = 42,
    on_point: Callable[[FrontierPoint], None] | None = None,
    tuning: str = "public",
    grids: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> list[FrontierPoint]:
    """Train and measure every roster model at every epsilon.

    Args:
        train / test: the split (shared vocabularies).
        dataset_name: label of the points.
        protocol: "loo" (one held-out item per user) or "ranking" (every test item relevant).
        roster: model name -> function of epsilon giving its parameters (DEFAULT_ROSTER).
        epsilons: the privacy levels (math.inf for the same model without noise).
        audit_dataset: what the membership audit draws users from (default: `train`).
        audit: run the membership audit at each point.
        audit_kwargs: passed to `membership_audit` (e.g. repeats, max_eval_users).
        ledger: charged with every DP release of the frontier's models (not of the audit's
            target/shadow models, which are experiments on disjoint user subsets).
        seed: passed to every fit and the audit.
        on_point: called with each point as soon as it is measured (progress output).
        tuning: "public" (the roster's fixed values) or "private" (a charged private selection
            over `grids` whose whole cost is the point's epsilon; see `choose_params`).
        grids: the private candidates per model (PRIVATE_GRIDS).
    """
    roster = DEFAULT_ROSTER if roster is None else roster
    if tuning not in TUNING_MODES:
        raise ConfigError(f"tuning: {tuning!r} is not one of {', '.join(TUNING_MODES)}")
    points = []
    for name in roster:
        for eps in epsilons:
            t0 = time.perf_counter()
            choice = choose_params(
                name,
                float(eps),
                train,
                tuning=tuning,
                roster=roster,
                grids=grids,
                ledger=ledger,
                seed=seed,
            )
            params = choice.params
            if choice.model is not None:
                model = choice.model  # the selected run: no further fit, no further release
            else:
                model = create_model(name, **params)
                _fit(model, train, seed, ledger)
            fit_s = time.perf_counter() - t0
            metrics = evaluate(model, train, test, protocol)
            auc = tpr = std = None
            if audit:
                res = membership_audit(
                    functools.partial(create_model, name, **params),
                    audit_dataset or train,
                    seed=seed,
                    **dict(audit_kwargs or {}),
                )
                auc, tpr, std = res.auc, res.tpr_at_1pct_fpr, res.auc_std
            pt = FrontierPoint(
                dataset=dataset_name,
                model=name,
                epsilon=float(eps),
                delta=(
                    float(choice.selection["release"]["delta"])
                    if choice.selection and "release" in choice.selection
                    else (model.privacy.delta if model.privacy else None)
                ),
                ndcg_at_10=metrics["ndcg@10"],
                metrics=metrics,
                attack_auc=auc,
                attack_tpr_at_1pct_fpr=tpr,
                attack_auc_std=std,
                fit_seconds=round(fit_s, 3),
                params={
                    k: ("inf" if isinstance(v, float) and math.isinf(v) else v)
                    for k, v in params.items()
                },
                privacy=model.privacy.to_dict() if model.privacy else None,
                tuning={"mode": choice.tuning, **(choice.selection or {})},
            )
            points.append(pt)
            if on_point:
                on_point(pt)
    return points
