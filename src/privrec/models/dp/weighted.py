"""Contribution caps and frequency-aware weights for the DP item-item release (issue 16, item 4).

Two ideas from the private matrix-factorisation literature, as options of one release that
is otherwise `release.release_gram` (DP item selection composed with one noisy Gram matrix,
PLD-calibrated, charged before any noise):

- Per-shopper contribution caps (Chien et al. 2021, "Private Alternating Least Squares"; Google's
  DP-ALS settings): keep at most `max_user_items` items per shopper, a uniform sample seeded by
  the model's `seed` (non-noise randomness), then scale the row by `row_scale`:
  ``"unit"`` divides by its L2 norm (light shoppers keep weight 1/sqrt(n), capped ones get
  1/sqrt(k)); ``"uniform"`` divides by max(norm, sqrt(k)), so every kept 0/1 entry weighs
  1/sqrt(k) whatever the shopper's activity.
- Frequency-aware allocation (AdaDPALS: Krichene et al. 2023, "Multi-Task Differential Privacy
  Under Distribution Skew"): each shopper spreads their unit budget unevenly, more of it on rare
  items, whose Gram entries the noise drowns first. The selected item i's column is scaled by
  d_i = (c_i / c_max)^(-a) (c: the release's own noisy selection counts, so a function of what is
  already released; `frequency_exponent` a) before the row scaling above; the released matrix is
  in that scaled space (homogeneous noise) and the model undoes d afterwards (post-processing).

Sensitivity, exactly: whatever the options, every shopper's row has L2 norm <= 1 both over all
items (selection counts: L2 sensitivity 1) and over the selected items after the item scales
(Gram sum_u x_u^T x_u: ||x_u^T x_u||_F = ||x_u||^2 <= 1, upper triangle with the diagonal over
sqrt(2): 1/sqrt(2)). `max_row_norm` states it and the tests check it against removing shoppers.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from privrec.core.errors import ConfigError
from privrec.models.dp.release import (
    GramRelease,
    PrivateFit,
    active_users,
    plan_gram_release,
    select_items,
)
from privrec.privacy.ledger import PrivacyLedger

__all__ = [
    "ROW_SCALES",
    "RowBound",
    "cap_rows",
    "frequency_scales",
    "max_row_norm",
    "release_weighted_gram",
    "scale_rows",
]

ROW_SCALES = ("unit", "uniform")


@dataclass(frozen=True)
class RowBound:
    """How one shopper's row is bounded before the release.

    Attributes:
        max_user_items: at most this many items per shopper (uniform sample); None: all.
        row_scale: "unit" (divide by the L2 norm) or "uniform" (by max(norm, sqrt(k)); needs k).
        frequency_exponent: a >= 0; selected items' columns scaled by (c / c_max)^(-a).
        seed: seeds the per-shopper sample (non-noise randomness).
    """

    max_user_items: int | None = None
    row_scale: str = "unit"
    frequency_exponent: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.row_scale not in ROW_SCALES:
            raise ConfigError(f"row_scale: {self.row_scale!r} is not one of {ROW_SCALES}")
        if self.max_user_items is not None and self.max_user_items < 1:
            raise ConfigError(f"max_user_items: {self.max_user_items} must be >= 1 or None")
        if self.row_scale == "uniform" and self.max_user_items is None:
            raise ConfigError("row_scale: 'uniform' needs max_user_items (the k of 1/sqrt(k))")
        if not (self.frequency_exponent >= 0 and math.isfinite(self.frequency_exponent)):
            raise ConfigError(f"frequency_exponent: {self.frequency_exponent} must be >= 0")

    @property
    def is_default(self) -> bool:
        """Whether this is the plain unit-norm bound of `release.release_gram`."""
        return (
            self.max_user_items is None
            and self.row_scale == "unit"
            and self.frequency_exponent == 0.0
        )

    def describe(self) -> str:
        """The row bound in words (for the ledger's details)."""
        cap = "all items" if self.max_user_items is None else f"<= {self.max_user_items} items"
        scale = (
            "unit L2 norm"
            if self.row_scale == "unit"
            else f"divided by max(L2 norm, sqrt({self.max_user_items}))"
        )
        freq = (
            f", selected columns x (noisy count / max)^-{self.frequency_exponent:g}"
            if self.frequency_exponent
            else ""
        )
        return f"{cap} per user (uniform sample), {scale}{freq}; row L2 norm <= 1"

    def details(self) -> dict[str, Any]:
        """The bound as the release's details record it (see `release.plan_gram_release`)."""
        return {
            "row_bound": self.describe(),
            "max_user_items": self.max_user_items,
            "row_scale": self.row_scale,
            "frequency_exponent": self.frequency_exponent,
        }

    def floor(self) -> float:
        """The norm below which a row is not scaled up ("uniform": sqrt(k); "unit": 0)."""
        if self.row_scale == "uniform" and self.max_user_items is not None:
            return math.sqrt(self.max_user_items)
        return 0.0


def cap_rows(x: sp.csr_matrix, max_items: int | None, seed: int) -> sp.csr_matrix:
    """At most `max_items` stored entries per row: a uniform sample of each longer row.

    A row's sample depends only on `seed` and that row's own items (its randomness is seeded
    by a hash of them), never on other rows or its position: adding or removing a shopper
    leaves every other shopper's sample as it was, which the sensitivity bound needs.
    """
    x = sp.csr_matrix(x, dtype=np.float64, copy=True)
    x.sum_duplicates()
    x.eliminate_zeros()
    x.sort_indices()
    if max_items is None:
        return x
    counts = np.diff(x.indptr)
    if counts.size == 0 or counts.max() <= max_items:
        return x
    keep = np.ones(x.nnz, dtype=bool)
    for r in np.flatnonzero(counts > max_items):
        lo, hi = x.indptr[r], x.indptr[r + 1]
        own = zlib.crc32(x.indices[lo:hi].astype(np.int64).tobytes())
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, own])
        drop = rng.choice(hi - lo, size=hi - lo - max_items, replace=False)
        keep[lo + drop] = False
    rows = np.repeat(np.arange(x.shape[0]), counts)
    return sp.csr_matrix((x.data[keep], (rows[keep], x.indices[keep])), shape=x.shape)


def scale_rows(x: sp.csr_matrix, floor: float = 0.0) -> sp.csr_matrix:
    """Each row divided by max(its L2 norm, floor): every row's norm is then <= 1."""
    x = sp.csr_matrix(x, dtype=np.float64, copy=True)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    div = np.maximum(norms, floor)
    scale = np.divide(1.0, div, out=np.zeros_like(div), where=div > 0)
    return sp.csr_matrix(sp.diags(scale) @ x)


def max_row_norm(x: sp.csr_matrix) -> float:
    """The largest row L2 norm (the contribution bound the release relies on: <= 1)."""
    if x.nnz == 0:
        return 0.0
    return float(np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).max()))


def frequency_scales(counts: np.ndarray, exponent: float) -> np.ndarray:
    """d_i = (c_i / c_max)^(-a) from noisy counts (clipped to [c_max / 1000, c_max]); a=0: ones."""
    c = np.asarray(counts, dtype=np.float64)
    if exponent == 0 or c.size == 0:
        return np.ones(c.size)
    top = max(float(c.max()), 1e-12)
    rel = np.clip(c / top, 1e-3, 1.0)
    return np.asarray(rel ** (-float(exponent)), dtype=np.float64)


def release_weighted_gram(
    x: sp.csr_matrix,
    bound: RowBound,
    *,
    model: str,
    run: PrivateFit,
    top_items: int | None,
    max_items_auto: int,
    selection_share: float,
    ledger: PrivacyLedger | None,
) -> tuple[GramRelease, np.ndarray]:
    """`release.release_gram` (whole-history Gram) with the row bound `bound`.

    Returns the release (its `gram` in the item-scaled space) and the item scales d of the
    selected items (ones without a frequency exponent): d_i d_j G_ij is what was noised.
    """
    n_items = x.shape[1]
    # the matrix's sensitivity is the plan's default 1/sqrt(2): the upper triangle of
    # sum_u x_u^T x_u, every row's norm <= 1 (see the module docstring)
    plan = plan_gram_release(
        model=model,
        run=run,
        top_items=top_items,
        selection_share=selection_share,
        row_bound=bound.details(),
        matrix="gram (weighted rows)",
    )
    run.charge(ledger, plan.release, model)
    capped = cap_rows(x, bound.max_user_items, bound.seed)
    top = plan.top_items(lambda: active_users(capped), top_items, n_items, max_items_auto)
    rows = scale_rows(capped, bound.floor())
    counts = plan.noisy_counts(np.asarray(rows.sum(axis=0), dtype=np.float64).ravel())
    selected = select_items(counts, top, n_items)
    d = frequency_scales(np.maximum(counts[selected], 0.0), bound.frequency_exponent)
    xs = scale_rows(sp.csr_matrix(capped[:, selected] @ sp.diags(d)), bound.floor())
    g = np.asarray((xs.T @ xs).toarray(), dtype=np.float64)
    return plan.finish(selected, counts, g), d
