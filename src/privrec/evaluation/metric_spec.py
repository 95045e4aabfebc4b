"""Metric names of the protocols: "ndcg@10", "map", "mrr", ... parsed into `MetricSpec`.

Names: "precision@10", "recall@10", "ndcg@10", "map@10" (Microsoft Recommenders' MAP: divided by
the number of relevant items; "map" alone means "map@k"), "map_min@10" (divided by
min(n_relevant, k)), "hr@10", "mrr" (reciprocal rank of the first relevant item in the full
ranking), "mrr@10" (0 beyond rank 10), "coverage@10", "novelty@10", "diversity@10" (needs
`item_features`). See `metrics.py` for the exact definitions.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LOO_METRICS", "MetricSpec", "default_ranking_metrics", "parse_metric"]

# Accepted spellings -> canonical metric name.
_ALIASES = {
    "p": "precision",
    "prec": "precision",
    "precision": "precision",
    "r": "recall",
    "recall": "recall",
    "ndcg": "ndcg",
    "map": "map",
    "map_min": "map_min",
    "hr": "hr",
    "hit": "hr",
    "hit_rate": "hr",
    "hitrate": "hr",
    "mrr": "mrr",
    "coverage": "coverage",
    "catalog_coverage": "coverage",
    "catalogue_coverage": "coverage",
    "novelty": "novelty",
    "diversity": "diversity",
    "ild": "diversity",
}
# The leave-one-out protocol's default metrics (k = 10).
DEFAULT_LOO_METRICS = ("hr@10", "ndcg@10", "mrr")


@dataclass(frozen=True)
class MetricSpec:
    """One requested metric: output key, metric name and cut-off (None: full ranking, MRR only)."""

    key: str
    name: str
    k: int | None


def parse_metric(text: str, default_k: int = 10) -> MetricSpec:
    """Parse "ndcg@10", "map", "mrr", ... into a MetricSpec with a canonical key.

    Every metric except "mrr" is cut off at k ("map" -> "map@<default_k>"); plain "mrr" is the full
    ranking's reciprocal rank.
    """
    raw = str(text).strip().lower()
    base, _, kk = raw.partition("@")
    name = _ALIASES.get(base.strip())
    if name is None:
        raise ValueError(
            f"metrics: unknown metric {text!r}; known: {', '.join(sorted(set(_ALIASES.values())))}"
        )
    if kk:
        try:
            k = int(kk)
        except ValueError:
            raise ValueError(f"metrics: {text!r} needs an integer after '@'") from None
        if k <= 0:
            raise ValueError(f"metrics: {text!r} needs a positive cut-off")
    elif name == "mrr":
        return MetricSpec("mrr", "mrr", None)
    else:
        k = int(default_k)
    return MetricSpec(f"{name}@{k}", name, k)


def default_ranking_metrics(k: int = 10) -> tuple[str, ...]:
    """Microsoft Recommenders' four: MAP, NDCG@k, Precision@k, Recall@k."""
    return (f"map@{k}", f"ndcg@{k}", f"precision@{k}", f"recall@{k}")
