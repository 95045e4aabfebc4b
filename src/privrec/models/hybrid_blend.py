"""How the hybrid turns its components' scores into one score.

Per user, each component's scores are normalised over the items (z-score of the row: minus its
mean, divided by its standard deviation; popularity is first log-scaled, log1p(1000 * p), since
item counts are heavy-tailed), and the hybrid score is the weighted sum sum_c w_c z_c. An item
with no training interaction is unknown to CF, sequential and popularity: their normalised score
for it is 0 (the row mean: neither pushed up nor down), only its content score counts, and the
new-item boost is added to it.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from privrec.core.types import UserHistory
from privrec.models.base import Recommender

__all__ = ["blend", "component_z", "normalise_weights", "zscore"]


def zscore(x: np.ndarray) -> np.ndarray:
    """Row-wise (x - mean) / std in float32; constant rows become 0."""
    x = np.asarray(x, dtype=np.float32)
    mean = x.mean(axis=1, keepdims=True, dtype=np.float64)
    std = x.std(axis=1, keepdims=True, dtype=np.float64)
    out = (x - mean.astype(np.float32)) / np.where(std > 1e-12, std, 1.0).astype(np.float32)
    out[np.ravel(std <= 1e-12)] = 0.0
    return out


def normalise_weights(w: dict[str, float], names: list[str]) -> dict[str, float]:
    """A weight for each of `names` (0 where `w` has none), scaled to sum to 1."""
    total = sum(float(w.get(n, 0.0)) for n in names)
    return {n: float(w.get(n, 0.0)) / total for n in names}


def component_z(
    name: str,
    comp: Recommender,
    h: sp.csr_matrix,
    histories: list[UserHistory] | None,
    item_events: np.ndarray,
    n_items: int,
) -> np.ndarray:
    """The normalised scores (rows of `h`, n_items) of component `name`.

    Args:
        name: the component's role ("cf", "sequential", "content", "popularity").
        comp: the fitted component.
        h: the history rows (as the content component weighs them).
        histories: the same histories in order, when known: a sequential component reads the
            order and the content component the search queries, which the rows do not keep.
        item_events: training interactions per item (0: a new item).
        n_items: items in the catalogue.
    """
    if name == "sequential" and histories is not None:
        raw = (
            np.stack([comp.score(x) for x in histories])
            if histories
            else np.zeros((0, n_items), np.float32)
        )
    elif (
        name == "content"
        and histories is not None
        and any(x.query_embeddings is not None and np.size(x.query_embeddings) for x in histories)
    ):
        raw = np.stack([comp.score(x) for x in histories])
    else:
        raw = comp.score_matrix(h)
    if name == "popularity":
        raw = np.log1p(1000.0 * np.maximum(np.asarray(raw, np.float32), 0.0))
    z = zscore(raw)
    if name != "content":
        z[:, item_events == 0] = 0.0  # knows nothing about a new item: neutral
    return z


def blend(
    components: dict[str, Recommender],
    weights: dict[str, float],
    h: sp.csr_matrix,
    histories: list[UserHistory] | None,
    item_events: np.ndarray,
    n_items: int,
    item_boost: float = 0.0,
) -> np.ndarray:
    """sum_c w_c z_c over the weighted components, plus `item_boost` for new items (float32)."""
    s = np.zeros((h.shape[0], n_items), np.float32)
    for name, w in weights.items():
        if w:
            s += np.float32(w) * component_z(
                name, components[name], h, histories, item_events, n_items
            )
    if item_boost:
        s[:, item_events == 0] += np.float32(item_boost)
    return s
