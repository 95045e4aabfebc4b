"""The membership audits with power, run together: LiRA and the canary audit of one model.

`privrec audit` (on a public dataset) and the main job (on the synthetic demo shop, which is
public too) both run them through `run_audit`; neither should run them on a real shop's own
events: the audit trains many models and publishes what they reveal.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from privrec.data.dataset import InteractionDataset
from privrec.evaluation.canary import CanaryResult, empirical_epsilon
from privrec.evaluation.lira import LiraResult, lira_audit

__all__ = ["AuditResult", "run_audit"]


@dataclass
class AuditResult:
    """LiRA and the canary audit of one model on one dataset."""

    model: str
    dataset: str
    lira: LiraResult
    canary: CanaryResult

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the same keys `privrec audit` prints)."""
        return {
            "model": self.model,
            "dataset": self.dataset,
            "lira": self.lira.to_dict(),
            "canary": self.canary.to_dict(),
        }


def run_audit(
    model: str,
    params: Mapping[str, Any],
    dataset: InteractionDataset,
    *,
    shadows: int = 8,
    runs: int = 8,
    canaries: int = 32,
    max_users: int | None = None,
    seed: int = 0,
) -> AuditResult:
    """LiRA with `shadows` models and the canary audit with `runs` fits of registered `model`.

    Args:
        model: a registered model name.
        params: its hyper-parameters.
        dataset: public (or synthetic) interactions.
        shadows: LiRA models (even, >= 4).
        runs: canary training runs (even, >= 4).
        canaries: canary shoppers.
        max_users: LiRA attacks at most this many shoppers (None: every candidate).
        seed: seeds the splits, the canaries and the fits.
    """
    from privrec.models.zoo import create_model

    p = dict(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # low power is reported in the result itself
        lira = lira_audit(
            functools.partial(create_model, model, **p),
            dataset,
            shadows=shadows,
            max_users=max_users,
            seed=seed,
        )
    canary = empirical_epsilon(
        model, p, dataset, canaries=canaries, runs=runs, seed=seed, item_pool="popular"
    )
    return AuditResult(model=model, dataset=dataset.name, lira=lira, canary=canary)
