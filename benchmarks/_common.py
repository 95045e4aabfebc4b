"""Shared helpers of the benchmark scripts: data location, tuning loop, JSON output."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    """The real datasets folder ($PRIVREC_SHARED_DATA or ../shared/data); exits if absent."""
    d = Path(os.environ.get("PRIVREC_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not d.is_dir():
        sys.exit(f"real datasets not found at {d}; set PRIVREC_SHARED_DATA")
    return d


def machine() -> dict[str, Any]:
    """Facts about the machine the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def tune_and_test(
    name: str,
    grid: Mapping[str, Sequence[Any]],
    fixed: Mapping[str, Any],
    sub_train: Any,
    valid: Any,
    train: Any,
    test: Any,
    *,
    protocol: str,
    metric: str = "ndcg@10",
    metrics: Sequence[str] | None = None,
    seed: int = 42,
) -> dict[str, Any]:
    """Choose hyper-parameters on (sub_train, valid) only, refit on train, evaluate once on test."""
    from privrec.evaluation.protocol import evaluate_loo, evaluate_ranking
    from privrec.evaluation.tuning import grid_search
    from privrec.models.zoo import create_model, model_class

    t0 = time.perf_counter()
    if any(len(v) > 1 for v in grid.values()):
        best, table = grid_search(
            model_class(name),
            grid,
            sub_train,
            valid,
            metric=metric,
            protocol=protocol,
            fixed=fixed,
            seed=seed,
        )
        tuning = table.to_dict(orient="records")
    else:
        best, tuning = {k: v[0] for k, v in grid.items()}, []
    tune_s = time.perf_counter() - t0
    params = {**fixed, **best}
    model = create_model(name, **params)
    t0 = time.perf_counter()
    model.fit(train, rng=seed)
    fit_s = time.perf_counter() - t0
    if protocol == "loo":
        res = evaluate_loo(model, train, test, k=10, metrics=metrics)
    else:
        res = evaluate_ranking(model, train, test, k=10, metrics=metrics)
    out = {
        k: float(v) for k, v in res.items() if isinstance(v, (int, float)) and k not in ("n_users",)
    }
    return {
        "model": name,
        "params": params,
        "metrics": out,
        "n_users": int(res.get("n_users", 0)),
        "train_seconds": round(fit_s, 3),
        "tuning_seconds": round(tune_s, 2),
        "tuning": tuning,
    }


def emit(summary: Mapping[str, Any]) -> None:
    """Print the figures as JSON on the last line (the benchmark contract)."""
    print(json.dumps(summary, default=float))
