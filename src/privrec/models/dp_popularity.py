"""DP popularity: user-level differentially private item counts (the floor every model must beat).

Each user's contribution is bounded first: at most `max_items` distinct items per user (their
most recent ones), each counted with a weight in [0, `max_weight`] (1 for `binary=True`). One
user then changes the count vector by at most max_weight * sqrt(max_items) in L2, and Gaussian
noise of that many times the analytic-Gaussian multiplier for (epsilon, delta) is added to every
item's count (including items nobody touched, so the release does not reveal which items exist
in the data beyond the public catalogue). Everything after the noise (clipping at 0, category
blending with the public catalogue categories, ranking) is post-processing.

This module also holds the helpers the DP item-item models share: the default delta, bounding
rows to unit L2 norm, and DP item selection (noisy counts, top m).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field, model_validator

from privrec.core.errors import ConfigError
from privrec.core.rng import DEFAULT_SEED
from privrec.data.dataset import InteractionDataset
from privrec.models.base import register, seed_from
from privrec.models.popularity import Popularity, PopularityConfig
from privrec.privacy.dp import GaussianMechanism, Release, default_delta, gaussian_sigma
from privrec.privacy.ledger import PrivacyLedger

ACCOUNTANT = "analytic gaussian (dp-accounting)"
PLD_ACCOUNTANT = "pld (dp-accounting)"


# ---- shared helpers ----------------------------------------------------------------------------------
def resolve_delta(delta: float | None, n_users: int) -> float:
    """The configured delta, or 1 / (10 * n_users) when None; refuses delta above that bound."""
    bound = default_delta(n_users)
    if delta is None:
        return bound
    if not (0 < delta <= bound * (1 + 1e-9)):
        raise ConfigError(
            f"delta: {delta:g} is above 1/(10 x {n_users} users) = {bound:g}; give a smaller delta or None"
        )
    return float(delta)


def active_users(x: sp.csr_matrix) -> int:
    """Users with at least one interaction (the n of delta = 1/(10 n))."""
    return int(np.count_nonzero(np.diff(x.indptr)))


def most_recent_items(dataset: InteractionDataset, max_items: int) -> sp.csr_matrix:
    """A 0/1 user x item mask of each user's `max_items` most recently touched distinct items."""
    n_u, n_i = dataset.n_users, dataset.n_items
    if dataset.n_events == 0:
        return sp.csr_matrix((n_u, n_i), dtype=np.float64)
    key = dataset.user_idx.astype(np.int64) * n_i + dataset.item_idx.astype(np.int64)
    rev = np.arange(dataset.n_events)[::-1]
    _, first = np.unique(key[rev], return_index=True)
    last = np.sort(
        rev[first]
    )  # each (user, item)'s latest event; the dataset is sorted by (user, ts)
    lu = dataset.user_idx[last].astype(np.int64)
    li = dataset.item_idx[last].astype(np.int64)
    newer = (
        np.searchsorted(lu, lu, side="right") - 1 - np.arange(last.size)
    )  # later distinct items of the user
    keep = newer < max_items
    return sp.csr_matrix((np.ones(int(keep.sum())), (lu[keep], li[keep])), shape=(n_u, n_i))


def unit_rows(x: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to unit L2 norm (empty rows stay empty): one user's row then has norm <= 1."""
    x = sp.csr_matrix(x, dtype=np.float64, copy=True)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(scale) @ x)


_TIE = 1e-6  # weight of the popularity tie-breaker among the selected items


def selected_above_rest(
    part: np.ndarray, selected: np.ndarray, prior: np.ndarray, n_items: int
) -> np.ndarray:
    """Full score rows from scores of the selected items: those items first (noisy popularity
    `prior` in [0, 1] breaks their ties), every other item below them, ranked by `prior`."""
    part = part + _TIE * prior[selected][None, :]
    out = np.empty((part.shape[0], n_items), dtype=np.float64)
    floor = part.min(axis=1, keepdims=True) if part.shape[1] else np.zeros((part.shape[0], 1))
    out[:] = floor - 1.0 + 0.5 * prior[None, :]
    out[:, selected] = part
    return out.astype(np.float32)


def select_items(counts: np.ndarray, top_items: int | None, n_items: int) -> np.ndarray:
    """Indices (sorted) of the `top_items` largest noisy counts; all items when None or too many."""
    if top_items is None or top_items >= n_items:
        return np.arange(n_items, dtype=np.int64)
    order = np.lexsort((np.arange(n_items), -np.asarray(counts, dtype=np.float64)))
    return np.sort(order[: int(top_items)]).astype(np.int64)


def charge(ledger: PrivacyLedger | None, release: Release, model: str) -> None:
    """Record the release in the ledger (raises BudgetExceededError) before any noise is drawn."""
    if ledger is not None and not math.isinf(release.epsilon):
        ledger.charge(release, model=model)


# ---- the model -----------------------------------------------------------------------------------------
class DPPopularityConfig(PopularityConfig):
    """DP popularity settings (plus everything of `PopularityConfig` except time decay).

    Attributes:
        epsilon: the user-level privacy budget of the release (inf: exact counts, no guarantee).
        delta: the failure probability; None means 1 / (10 x number of users).
        max_items: each user's most recent distinct items that count (contribution bound).
        max_weight: each counted item's weight is clipped to [0, max_weight] (binary: weight 1).
        seed: seeds the noise; `fit(rng=...)` overrides it.
    """

    epsilon: float = Field(default=1.0, gt=0.0)
    delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    max_items: int = Field(default=64, ge=1)
    max_weight: float = Field(default=1.0, gt=0.0)
    binary: bool = True
    seed: int = DEFAULT_SEED

    @model_validator(mode="after")
    def _no_decay(self) -> DPPopularityConfig:
        if self.half_life_days is not None:
            raise ValueError(
                "half_life_days: time decay is not supported by dp_popularity; leave it None"
            )
        return self


@register
class DPPopularity(Popularity):
    """Popularity from user-level DP noisy counts (see the module docstring)."""

    name = "dp_popularity"
    Config = DPPopularityConfig
    config: DPPopularityConfig

    def __init__(self, config: DPPopularityConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.noise_std = 0.0
        self.sensitivity = 0.0
        self.release: Release | None = None  # what the ledger recorded (in memory only)

    def fit(
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
    ) -> DPPopularity:
        """Bound each user's contribution, release noisy counts (recorded in `ledger` first)."""
        c = self.config
        x = self.input_matrix(dataset).astype(np.float64)
        x.data = np.minimum(x.data, c.max_weight)
        mask = most_recent_items(dataset, c.max_items)
        x = sp.csr_matrix(x.multiply(mask))
        n_users = active_users(x)
        delta = resolve_delta(c.delta, n_users)
        self.sensitivity = float(c.max_weight * math.sqrt(c.max_items))
        z = gaussian_sigma(c.epsilon, delta)
        mech = GaussianMechanism(z, self.sensitivity)
        self.noise_std = mech.sigma
        release = Release(
            name=f"{self.name}:counts",
            epsilon=c.epsilon,
            delta=delta,
            mechanism="gaussian",
            accountant=ACCOUNTANT,
            details={
                "sensitivity_l2": self.sensitivity,
                "noise_std": mech.sigma,
                "max_items": c.max_items,
                "n_items": dataset.n_items,
            },
        )
        charge(ledger, release, self.name)
        counts = np.asarray(x.sum(axis=0), dtype=np.float64).ravel()
        gen = np.random.default_rng(seed_from(rng, c.seed))
        noisy = mech.add_noise(counts, gen)
        self.popularity = np.maximum(noisy, 0.0).astype(np.float32)
        self.item_category, self.categories = self._categories(dataset)
        self.privacy = None if math.isinf(c.epsilon) else release.guarantee()
        self.release = None if math.isinf(c.epsilon) else release
        self._mark_fitted(dataset.n_items)
        return self

    def _meta(self) -> dict[str, Any]:
        return {**super()._meta(), "noise_std": self.noise_std, "sensitivity": self.sensitivity}

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super()._set_state(arrays, meta)
        self.noise_std = float(meta.get("noise_std", 0.0))
        self.sensitivity = float(meta.get("sensitivity", 0.0))


# ---- the item-item release shared by DP item-kNN and DP EASE ------------------------------------------------
class GramRelease:
    """The outcome of `release_gram`: DP item selection and one noisy item-item matrix.

    Attributes:
        selected: the item indices the matrix covers (sorted).
        counts: noisy selection counts of every item (sum over users of unit-norm rows), or the
            exact ones when there was no selection step (then `selected` is every item).
        gram: the noisy symmetric m x m matrix (float64).
        noise_std: std of its off-diagonal noise.
        noise_multipliers: {"selection": z or None, "gram": z} (std per unit of L2 sensitivity).
        release: what the ledger recorded.
    """

    def __init__(
        self,
        selected: np.ndarray,
        counts: np.ndarray,
        gram: np.ndarray,
        noise_std: float,
        noise_multipliers: dict[str, float | None],
        release: Release,
    ) -> None:
        self.selected = selected
        self.counts = counts
        self.gram = gram
        self.noise_std = noise_std
        self.noise_multipliers = noise_multipliers
        self.release = release


def window_pairs(dataset: InteractionDataset, selected: np.ndarray, window: int) -> sp.csr_matrix:
    """Per user, the distinct unordered pairs of selected items at most `window` events apart.

    Returns the symmetric co-occurrence matrix sum_u w_u P_u (zero diagonal) where P_u marks the
    user's distinct pairs (both orientations) and w_u = 1 / sqrt(number of the user's pairs), so
    one user's upper triangle has L2 norm 1.
    """
    m = selected.size
    local = np.full(dataset.n_items, -1, dtype=np.int64)
    local[selected] = np.arange(m)
    it = local[dataset.item_idx]
    keep = it >= 0
    u = dataset.user_idx[keep].astype(np.int64)
    it = it[keep]
    us, a, b = [], [], []
    for d in range(1, int(window) + 1):
        same = u[d:] == u[:-d]
        us.append(u[d:][same])
        a.append(it[:-d][same])
        b.append(it[d:][same])
    if not us:
        return sp.csr_matrix((m, m), dtype=np.float64)
    uu, aa, bb = np.concatenate(us), np.concatenate(a), np.concatenate(b)
    ok = aa != bb
    uu, lo, hi = uu[ok], np.minimum(aa, bb)[ok], np.maximum(aa, bb)[ok]
    key = np.unique((uu * m + lo) * m + hi)
    pu = key // (m * m)
    lo, hi = (key // m) % m, key % m
    n_pairs = np.bincount(pu, minlength=dataset.n_users).astype(np.float64)
    w = 1.0 / np.sqrt(n_pairs[pu])
    upper = sp.csr_matrix((w, (lo, hi)), shape=(m, m))
    return sp.csr_matrix(upper + upper.T)


def release_gram(
    dataset: InteractionDataset,
    x: sp.csr_matrix,
    *,
    model: str,
    epsilon: float,
    delta: float,
    top_items: int | None,
    selection_share: float,
    gen: np.random.Generator,
    ledger: PrivacyLedger | None,
    window: int | None = None,
) -> GramRelease:
    """DP item selection (optional) and one noisy item-item matrix, composed and calibrated together.

    1. Selection (when `top_items` < number of items): noisy column sums of the unit-norm user
       rows (L2 sensitivity 1), keep the `top_items` largest.
    2. The matrix on the selected items, with user rows re-normalised to unit norm over them:
       the Gram matrix sum_u x_u^T x_u (`window=None`; released with symmetric noise, whose
       upper-triangle sensitivity is 1/sqrt(2)), or the window co-occurrence of `window_pairs`
       (sensitivity 1).

    The two Gaussian releases get shares `selection_share` and 1 - selection_share of the budget;
    the PLD accountant of dp-accounting calibrates both together to (epsilon, delta). The ledger
    is charged once, before any noise is drawn. With epsilon = inf nothing is noised.
    """
    from privrec.privacy.dp import calibrate_gaussians, split_ratios

    n_items = x.shape[1]
    private = not math.isinf(epsilon)
    select = top_items is not None and top_items < n_items
    if select and not (0 < selection_share < 1):
        raise ConfigError(f"selection_share: {selection_share} is not in (0, 1)")
    if private and select:
        z_sel, z_gram = calibrate_gaussians(
            split_ratios([selection_share, 1 - selection_share]), epsilon, delta
        )
    elif private:
        z_sel, z_gram = None, gaussian_sigma(epsilon, delta)
    else:
        z_sel, z_gram = (0.0 if select else None), 0.0
    sens = 1.0 if window else 1.0 / math.sqrt(2.0)
    mechanisms = "gaussian x2 (composed)" if select else "gaussian"
    release = Release(
        name=f"{model}:{'selection+' if select else ''}{'window-cooccurrence' if window else 'gram'}",
        epsilon=epsilon,
        delta=delta,
        mechanism=mechanisms,
        accountant=PLD_ACCOUNTANT if select else ACCOUNTANT,
        details={
            "noise_multiplier_selection": z_sel,
            "noise_multiplier_matrix": z_gram,
            "sensitivity_l2_selection": 1.0 if select else None,
            "sensitivity_l2_matrix": sens,
            "top_items": int(top_items) if select else n_items,
            "selection_share": selection_share if select else 0.0,
            "row_bound": "unit L2 norm per user",
            "window": window,
        },
    )
    charge(ledger, release, model)
    counts = np.asarray(unit_rows(x).sum(axis=0), dtype=np.float64).ravel()
    if select:
        counts = GaussianMechanism(float(z_sel or 0.0), 1.0).add_noise(counts, gen)
    selected = select_items(counts, top_items if select else None, n_items)
    if window:
        g = window_pairs(dataset, selected, window).toarray()
    else:
        xs = unit_rows(x[:, selected])
        g = np.asarray((xs.T @ xs).toarray(), dtype=np.float64)
    mech = GaussianMechanism(z_gram, sens)
    mech.add_symmetric_noise(g, gen, out=g)
    if window:
        np.fill_diagonal(g, 0.0)  # no signal there (post-processing)
    return GramRelease(
        selected, counts, g, mech.sigma, {"selection": z_sel, "gram": z_gram}, release
    )
