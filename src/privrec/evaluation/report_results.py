"""The figures of a benchmark report: one model's results and their JSON-ready form.

`ModelResult` is what `privrec.evaluation.report` renders; the helpers here decide which keys are
metrics, which value is the best per metric and how values become plain JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeGuard

import numpy as np

import privrec

__all__ = [
    "ModelResult",
    "anchor_metrics",
    "best_per_metric",
    "is_number",
    "jsonable",
    "metric_keys",
    "report_document",
]

# Keys of an evaluation result that are not metrics.
_NON_METRIC = {
    "n_users",
    "k",
    "eval_seconds",
    "fit_seconds",
    "train_seconds",
    "fold",
    "users",
    "per_user",
    "n_ratings",
}


@dataclass
class ModelResult:
    """One model's figures for a report.

    Attributes:
        model: display name.
        metrics: metric key -> value (e.g. "ndcg@10" -> 0.41).
        train_seconds / eval_seconds: wall-clock times, when measured.
        n_users: users evaluated.
        params: hyper-parameters used.
        privacy: the training's privacy guarantee as a dict (epsilon, delta, unit, ...), or None.
        notes: free text shown in the JSON.
    """

    model: str
    metrics: dict[str, float]
    train_seconds: float | None = None
    eval_seconds: float | None = None
    n_users: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    privacy: dict[str, Any] | None = None
    notes: str = ""

    @classmethod
    def from_eval(
        cls,
        model: str,
        result: Mapping[str, Any],
        *,
        train_seconds: float | None = None,
        params: Mapping[str, Any] | None = None,
        privacy: Any = None,
        notes: str = "",
    ) -> ModelResult:
        """Build from an `evaluate_ranking` / `evaluate_loo` / `evaluate_rating` result dict."""
        mets = {k: float(v) for k, v in result.items() if k not in _NON_METRIC and is_number(v)}
        if privacy is not None and hasattr(privacy, "to_dict"):
            privacy = privacy.to_dict()
        return cls(
            model=model,
            metrics=mets,
            train_seconds=train_seconds if train_seconds is not None else result.get("fit_seconds"),
            eval_seconds=result.get("eval_seconds"),
            n_users=result.get("n_users"),
            params=dict(params or {}),
            privacy=dict(privacy) if privacy else None,
            notes=notes,
        )

    @classmethod
    def coerce(cls, obj: ModelResult | Mapping[str, Any]) -> ModelResult:
        """Accept a ModelResult, a dict with a "metrics" mapping or a flat dict of metric values."""
        if isinstance(obj, ModelResult):
            return obj
        d = dict(obj)
        if "model" not in d:
            raise ValueError("results: every entry needs a 'model' name")
        if "metrics" in d:
            known = {f for f in cls.__dataclass_fields__}
            return cls(**{k: v for k, v in d.items() if k in known})
        return cls.from_eval(
            str(d.pop("model")),
            d,
            train_seconds=d.get("train_seconds"),
            params=d.get("params"),
            privacy=d.get("privacy"),
            notes=str(d.get("notes", "")),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return jsonable(asdict(self))


def is_number(v: Any) -> TypeGuard[float | np.integer | np.floating]:
    """A real number (Python or numpy), not a bool."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _is_value(v: Any) -> bool:
    """A metric value: a number or a published (low, high) range."""
    return is_number(v) or (
        isinstance(v, (tuple, list)) and len(v) == 2 and all(is_number(x) for x in v)
    )


def anchor_metrics(a: Mapping[str, Any]) -> dict[str, Any]:
    """A published row's metrics: its "metrics" mapping, else its metric-valued keys."""
    if "metrics" in a:
        return dict(a["metrics"])
    skip = {"model", "source", "train_seconds", "notes", "eval_seconds", "n_users"}
    return {k: v for k, v in a.items() if k not in skip and _is_value(v)}


def jsonable(x: Any) -> Any:
    """Plain JSON types; NaN/inf become null; tuples become lists; numpy scalars become Python."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return [jsonable(v) for v in x.tolist()]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        f = float(x)
        return f if math.isfinite(f) else None
    if x is None or isinstance(x, str):
        return x
    if hasattr(x, "to_dict"):
        return jsonable(x.to_dict())
    return str(x)


def metric_keys(
    results: Sequence[ModelResult],
    anchors: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] | None,
) -> list[str]:
    """The table's metric keys: `metrics` if given, else every key of results, then of anchors."""
    if metrics is not None:
        return list(metrics)
    keys: list[str] = []
    for r in results:
        for k in r.metrics:
            if k not in keys:
                keys.append(k)
    for a in anchors:
        for k in anchor_metrics(a):
            if k not in keys:
                keys.append(k)
    return keys


def _higher_is_better(key: str) -> bool:
    return key.split("@")[0] not in ("rmse", "mae")


def best_per_metric(results: Sequence[ModelResult], keys: Sequence[str]) -> dict[str, float]:
    """Our best finite value per metric (lowest for error metrics such as RMSE)."""
    best: dict[str, float] = {}
    for key in keys:
        vals = [
            float(r.metrics[key])
            for r in results
            if is_number(r.metrics.get(key)) and math.isfinite(float(r.metrics[key]))
        ]
        if vals:
            best[key] = max(vals) if _higher_is_better(key) else min(vals)
    return best


def report_document(
    *,
    title: str,
    generated_at: str,
    dataset_info: Mapping[str, Any],
    protocol: str,
    metrics: Sequence[str],
    results: Sequence[ModelResult],
    anchors: Sequence[Mapping[str, Any]],
    charts: Sequence[Mapping[str, str]],
) -> dict[str, Any]:
    """A report's JSON document (plain JSON types, NaN/inf as null): every figure and its source.

    Args:
        title: the report's title.
        generated_at: when it was made (ISO 8601, UTC).
        dataset_info: facts about the data.
        protocol: the protocol's description.
        metrics: the metric keys, in table order.
        results: our models' figures.
        anchors: published rows, each with a "model" name.
        charts: {"metric", "file"} per chart written beside the report.
    """
    doc = {
        "title": title,
        "generated_at": generated_at,
        "privrec_version": privrec.__version__,
        "dataset": dict(dataset_info),
        "protocol": protocol,
        "metrics": list(metrics),
        "results": [r.to_dict() for r in results],
        "anchors": [
            {
                "model": a["model"],
                "metrics": anchor_metrics(a),
                "train_seconds": a.get("train_seconds"),
                "source": a.get("source"),
            }
            for a in anchors
        ],
        "charts": [dict(c) for c in charts],
    }
    return dict(jsonable(doc))
