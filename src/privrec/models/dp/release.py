"""What every user-level DP model shares: the opening of a DP fit and the releases themselves.

Privacy semantics (design.md): the unit is one user (all their events) and the neighbouring
relation is add/remove one user (`privacy.guarantee.ADJACENCY`), so the number of users is private
as well. Nothing exact leaves a DP fit: delta comes from a configured `expected_users` (public),
sizes that need the number of users (the automatic number of selected items, DP-SGD's expected
batch) use a noisy count that is part of the charged release, and every count that is kept is
noisy. Noise comes from `privacy.noise.NoiseSource`: fresh OS entropy for every fit; an explicit
`noise_seed` gives a reproducible source for tests and benchmarks, and the model is then marked
as no DP release (`privacy` None, `"reproducible_noise": true` in its saved config.json).

- `start_private_fit`: the checks every DP fit makes before it reads a value (delta from
  `expected_users`), its noise source, `PrivateFit.charge` and `PrivateFit.record`.
- Contribution bounds: `most_recent_items` (at most k items per user), `unit_rows` (each user's
  row scaled to unit L2 norm, so one user moves a column sum by at most 1 in L2).
- `noisy_user_count`, `noisy_item_counts` (Gaussian noise on the column sums of unit-norm user
  rows), `select_items` (keeps the largest).
- `release_gram`: DP item selection composed with one noisy item-item matrix (DP item-kNN,
  DP EASE, and through them DP hybrid); `plan_gram_release`: its budget split and ledger record.
- `DPArtifact`: the marker every DP model writes into its saved config.json.
- `in_public_item_order` (in `item_order`): the dataset over the public catalogue in sorted key
  order, so that no DP artifact or item list saved beside it carries the first-interaction order.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from privrec.core.errors import ConfigError
from privrec.data.dataset import InteractionDataset
from privrec.models.base import Recommender, seed_from
from privrec.models.dp.item_order import in_public_item_order
from privrec.privacy.dp import (
    GaussianMechanism,
    Release,
    calibrate_gaussians,
    composed_spec,
    default_delta,
    gaussian_spec,
    split_ratios,
)
from privrec.privacy.guarantee import ADJACENCY
from privrec.privacy.ledger import PrivacyLedger
from privrec.privacy.noise import NoiseSource, noise_source

log = logging.getLogger(__name__)

ACCOUNTANT = "analytic gaussian (dp-accounting)"
PLD_ACCOUNTANT = "pld (dp-accounting)"
DEFAULT_EXPECTED_USERS = 100_000  # default delta = 1 / (10 x this) = 1e-6
COUNT_SHARE = 0.02  # budget share of the noisy user count where a fit needs a size
REPRODUCIBLE_KEY = "reproducible_noise"  # top-level key of config.json: not a DP release

__all__ = [
    "ACCOUNTANT",
    "COUNT_SHARE",
    "DEFAULT_EXPECTED_USERS",
    "PLD_ACCOUNTANT",
    "REPRODUCIBLE_KEY",
    "DPArtifact",
    "GramPlan",
    "GramRelease",
    "GramStatistics",
    "LocalGramStatistics",
    "PrivateFit",
    "active_users",
    "auto_top_items",
    "in_public_item_order",
    "most_recent_items",
    "noised_item_counts",
    "noised_user_count",
    "noisy_item_counts",
    "noisy_user_count",
    "plan_gram_release",
    "release_gram",
    "resolve_delta",
    "select_items",
    "selected_above_rest",
    "start_private_fit",
    "unit_column_sums",
    "unit_gram",
    "unit_rows",
    "warn_unless_public_order",
    "window_pairs",
]


# ---- the opening of every DP fit ----------------------------------------------------------------
def resolve_delta(delta: float | None, expected_users: int) -> float:
    """The configured delta, or 1 / (10 * expected_users) when None; refuses delta above that.

    `expected_users` is a public, configured number: the exact count of the data is never read
    here (under add/remove-one adjacency it is private).
    """
    bound = default_delta(expected_users)
    if delta is None:
        return bound
    if not (0 < delta <= bound * (1 + 1e-9)):
        raise ConfigError(
            f"delta: {delta:g} is above 1/(10 x {expected_users} expected users) = {bound:g}; "
            "give a smaller delta, None, or a larger expected_users"
        )
    return float(delta)


def active_users(x: sp.csr_matrix) -> int:
    """Users with at least one interaction (exact: only ever released through noise)."""
    return int(np.count_nonzero(np.diff(x.indptr)))


@dataclass
class PrivateFit:
    """What a DP fit has settled before it reads any value: budget, delta, the noise source.

    Attributes:
        epsilon: the user-level budget (inf: nothing is noised and nothing is a DP release).
        delta: the resolved delta (see `resolve_delta`).
        expected_users: the public number delta came from.
        seed: seeds the fit's non-noise randomness (initialisation, negative sampling).
        noise: where the noise comes from (secure unless a `noise_seed` was given).
    """

    epsilon: float
    delta: float
    expected_users: int
    seed: int
    noise: NoiseSource

    @property
    def private(self) -> bool:
        """Whether noise is added at all (epsilon finite)."""
        return not math.isinf(self.epsilon)

    @property
    def reproducible(self) -> bool:
        """Whether the noise can be recomputed from a seed (then this is no DP release)."""
        return self.private and self.noise.is_reproducible

    @property
    def is_release(self) -> bool:
        """A DP release: finite epsilon and secure noise."""
        return self.private and not self.noise.is_reproducible

    def charge(self, ledger: PrivacyLedger | None, release: Release, model: str) -> None:
        """Record `release` in `ledger` (call it before the first noise is drawn).

        Only DP releases are charged: epsilon = inf and reproducible noise are no releases.
        """
        if ledger is not None and self.is_release:
            ledger.charge(release, model=model)

    def record(self, model: Recommender, release: Release | None) -> None:
        """Set the model's `privacy`, `release` and `reproducible_noise` after the fit."""
        ok = self.is_release and release is not None
        model.privacy = release.guarantee() if ok and release is not None else None
        model.release = release if ok else None  # type: ignore[attr-defined]
        model.reproducible_noise = self.reproducible  # type: ignore[attr-defined]


def start_private_fit(
    *,
    epsilon: float,
    delta: float | None,
    expected_users: int,
    rng: int | np.random.Generator | None,
    seed: int,
    noise_seed: int | None = None,
) -> PrivateFit:
    """The common opening of a DP fit: delta resolved, the noise source chosen.

    Args:
        epsilon: the budget (inf: no noise, no release).
        delta: None for 1 / (10 x expected_users).
        expected_users: public, configured (never the data's count).
        rng, seed: the fit's seed for non-noise randomness (never the noise).
        noise_seed: tests and benchmarks only: reproducible noise, and no DP release.
    """
    if not epsilon > 0:
        raise ConfigError(f"epsilon: {epsilon} is not positive; give a budget > 0 (inf: no DP)")
    resolved = resolve_delta(delta, expected_users)
    return PrivateFit(
        float(epsilon),
        resolved,
        int(expected_users),
        seed_from(rng, seed),
        noise_source(noise_seed),
    )


class DPArtifact:
    """Mixin of DP models: the saved config.json says whether the noise was reproducible.

    `"reproducible_noise": true` (top level) marks a version fitted with a `noise_seed`: not a
    DP release, never to be activated or served. The flag also travels in the model's meta, so a
    loaded model knows it.
    """

    reproducible_noise: bool = False

    def _top_level(self) -> dict[str, Any]:
        """The marker at the top level of config.json (sealed or not, as `save` writes it)."""
        doc: dict[str, Any] = {REPRODUCIBLE_KEY: bool(self.reproducible_noise)}
        if self.reproducible_noise:
            doc["privacy"] = None  # never a guarantee, whatever the model held
        return doc

    def _marker_meta(self) -> dict[str, Any]:
        return {REPRODUCIBLE_KEY: bool(self.reproducible_noise)}

    def _read_marker(self, meta: dict[str, Any]) -> None:
        self.reproducible_noise = bool(meta.get(REPRODUCIBLE_KEY, False))


# ---- the public item order ---------------------------------------------------------------------
def warn_unless_public_order(dataset: InteractionDataset, model: str) -> None:
    """Log a warning when the item vocabulary is not sorted (likely first-interaction order).

    The model's arrays and the item list saved beside it follow the vocabulary: in
    first-interaction order they reveal which items shoppers touched first. The fit goes on (the
    caller owns the dataset); `in_public_item_order` is the fix.
    """
    keys = dataset.items.keys
    if any(a > b for a, b in pairwise(keys)):
        log.warning(
            "dp_item_order model=%s ordered=false fix=in_public_item_order "
            "note=the item vocabulary is not in public (sorted) order",
            model,
        )


# ---- contribution bounds -------------------------------------------------------------------------
def most_recent_items(dataset: InteractionDataset, max_items: int) -> sp.csr_matrix:
    """A 0/1 user x item mask of each user's `max_items` most recently touched distinct items."""
    n_u, n_i = dataset.n_users, dataset.n_items
    if dataset.n_events == 0:
        return sp.csr_matrix((n_u, n_i), dtype=np.float64)
    key = dataset.user_idx.astype(np.int64) * n_i + dataset.item_idx.astype(np.int64)
    rev = np.arange(dataset.n_events)[::-1]
    _, first = np.unique(key[rev], return_index=True)
    # each (user, item)'s latest event; the dataset is sorted by (user, ts)
    last = np.sort(rev[first])
    lu = dataset.user_idx[last].astype(np.int64)
    li = dataset.item_idx[last].astype(np.int64)
    newer = np.searchsorted(lu, lu, side="right") - 1 - np.arange(last.size)
    keep = newer < max_items
    return sp.csr_matrix((np.ones(int(keep.sum())), (lu[keep], li[keep])), shape=(n_u, n_i))


def unit_rows(x: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to unit L2 norm (empty rows stay empty): one user's row then has norm <= 1."""
    x = sp.csr_matrix(x, dtype=np.float64, copy=True)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(scale) @ x)


# ---- noisy counts and selection ------------------------------------------------------------------
def noisy_user_count(x: sp.csr_matrix, noise_multiplier: float | None, noise: NoiseSource) -> float:
    """Users with an interaction plus N(0, z^2) (L2 sensitivity 1), at least 1.

    `noise_multiplier` None gives the exact count (no release: epsilon = inf only).
    """
    return noised_user_count(active_users(x), noise_multiplier, noise)


def noised_user_count(n_users: int, noise_multiplier: float | None, noise: NoiseSource) -> float:
    """An exact user count (however it was summed) plus N(0, z^2), at least 1 (None: exact)."""
    n = float(n_users)
    if noise_multiplier is not None:
        n = float(
            GaussianMechanism(float(noise_multiplier), 1.0).add_noise(np.array([n]), noise)[0]
        )
    return max(n, 1.0)


def noisy_item_counts(
    x: sp.csr_matrix, noise_multiplier: float | None, noise: NoiseSource
) -> np.ndarray:
    """Column sums of the unit-norm rows of `x` (L2 sensitivity 1) plus N(0, z^2) per item.

    `noise_multiplier` None gives the exact sums (no release: epsilon = inf only).
    """
    return noised_item_counts(unit_column_sums(x), noise_multiplier, noise)


def unit_column_sums(x: sp.csr_matrix) -> np.ndarray:
    """Column sums of the unit-norm rows of `x` (float64): the exact selection statistic."""
    return np.asarray(unit_rows(x).sum(axis=0), dtype=np.float64).ravel()


def unit_gram(x: sp.csr_matrix, selected: np.ndarray) -> np.ndarray:
    """sum_u x_u^T x_u over the selected columns, each row re-normalised to unit norm (dense)."""
    xs = unit_rows(x[:, selected])
    return np.asarray((xs.T @ xs).toarray(), dtype=np.float64)


def noised_item_counts(
    counts: np.ndarray, noise_multiplier: float | None, noise: NoiseSource
) -> np.ndarray:
    """Exact unit-row column sums plus N(0, z^2) per item (None: exact, epsilon = inf only)."""
    counts = np.asarray(counts, dtype=np.float64)
    if noise_multiplier is None:
        return counts
    return GaussianMechanism(float(noise_multiplier), 1.0).add_noise(counts, noise)


def select_items(counts: np.ndarray, top_items: int | None, n_items: int) -> np.ndarray:
    """Indices (sorted) of the `top_items` largest noisy counts; all items when None or too many."""
    if top_items is None or top_items >= n_items:
        return np.arange(n_items, dtype=np.int64)
    order = np.lexsort((np.arange(n_items), -np.asarray(counts, dtype=np.float64)))
    return np.sort(order[: int(top_items)]).astype(np.int64)


_TIE = 1e-6  # weight of the popularity tie-breaker among the selected items


def selected_above_rest(
    part: np.ndarray, selected: np.ndarray, prior: np.ndarray, n_items: int
) -> np.ndarray:
    """Full score rows from scores of the selected items.

    The selected items come first (the noisy popularity `prior` in [0, 1] breaks their ties),
    every other item below them, ranked by `prior`.
    """
    part = part + _TIE * prior[selected][None, :]
    out = np.empty((part.shape[0], n_items), dtype=np.float64)
    floor = part.min(axis=1, keepdims=True) if part.shape[1] else np.zeros((part.shape[0], 1))
    out[:] = floor - 1.0 + 0.5 * prior[None, :]
    out[:, selected] = part
    return out.astype(np.float32)


def auto_top_items(n_users: float, noise_multiplier: float, n_items: int, cap: int) -> int:
    """The default number of selected items: n_users / (4 z), clipped to [50, cap] and n_items.

    `n_users` is the noisy count of the release (post-processing), never the exact one.
    """
    if noise_multiplier <= 0:
        return n_items
    return int(min(n_items, cap, max(50, round(n_users / (4.0 * noise_multiplier)))))


# ---- the item-item release shared by DP item-kNN and DP EASE ----------------------------------
class GramStatistics(Protocol):
    """The exact statistics `release_gram` noises, however they are computed.

    Each is a sum over users, so it can be computed per user shard and summed once
    (`models/sharded.py`); the release adds its noise after that one sum, exactly as on the
    single-process path (`LocalGramStatistics`).
    """

    def active_users(self) -> int:
        """Users with at least one interaction."""
        ...

    def unit_column_sums(self) -> np.ndarray:
        """Column sums of the unit-norm user rows (see `unit_column_sums`)."""
        ...

    def unit_gram(self, selected: np.ndarray) -> np.ndarray:
        """The Gram matrix of the unit-norm rows over `selected` (see `unit_gram`)."""
        ...

    def window_pairs(self, selected: np.ndarray, window: int) -> np.ndarray:
        """The window co-occurrence of `window_pairs`, dense."""
        ...


@dataclass
class LocalGramStatistics:
    """`GramStatistics` of one in-memory user x item matrix (the single-process path)."""

    dataset: InteractionDataset
    x: sp.csr_matrix

    def active_users(self) -> int:
        """Users with at least one interaction."""
        return active_users(self.x)

    def unit_column_sums(self) -> np.ndarray:
        """Column sums of the unit-norm user rows."""
        return unit_column_sums(self.x)

    def unit_gram(self, selected: np.ndarray) -> np.ndarray:
        """The Gram matrix of the unit-norm rows over `selected`."""
        return unit_gram(self.x, selected)

    def window_pairs(self, selected: np.ndarray, window: int) -> np.ndarray:
        """The window co-occurrence, dense."""
        return np.asarray(window_pairs(self.dataset, selected, window).toarray())


@dataclass
class GramRelease:
    """The outcome of `release_gram`: DP item selection and one noisy item-item matrix.

    Attributes:
        selected: the item indices the matrix covers (sorted).
        counts: noisy selection counts of every item (exact only at epsilon = inf).
        gram: the noisy symmetric m x m matrix (float64).
        noise_std: std of its off-diagonal noise.
        noise_multipliers: {"count": z or None, "selection": z, "gram": z} (std per unit of
            L2 sensitivity).
        release: what the ledger recorded.
    """

    selected: np.ndarray
    counts: np.ndarray
    gram: np.ndarray
    noise_std: float
    noise_multipliers: dict[str, float | None]
    release: Release


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


def plan_gram_release(
    *,
    model: str,
    run: PrivateFit,
    top_items: int | None,
    selection_share: float,
    row_bound: dict[str, Any],
    matrix: str = "gram",
    sensitivity: float = 1.0 / math.sqrt(2.0),
) -> GramPlan:
    """The budget split, calibration and ledger record of a selection + matrix release.

    Fixed budget shares: a noisy user count (COUNT_SHARE, only when `top_items` is None), the
    selection (`selection_share` of the rest) and the matrix; dp-accounting's PLD accountant
    calibrates them together to (epsilon, delta). Nothing is noised or charged here.

    Args:
        row_bound: the details' "row_bound" (in words), then that bound's settings if any.
        matrix: the released matrix, in the release's name.
        sensitivity: the matrix's L2 sensitivity (the selection counts' is 1).
    """
    if not (0 < selection_share < 1):
        raise ConfigError(f"selection_share: {selection_share} is not in (0, 1)")
    auto = top_items is None
    shares = [selection_share, 1 - selection_share]
    if auto:
        shares = [COUNT_SHARE] + [(1 - COUNT_SHARE) * s for s in shares]
    zs = [0.0] * len(shares)
    if run.private:
        zs = calibrate_gaussians(split_ratios(shares), run.epsilon, run.delta)
    release = Release(
        name=f"{model}:{'count+' if auto else ''}selection+{matrix}",
        epsilon=run.epsilon,
        delta=run.delta,
        mechanism=f"gaussian x{len(zs)} (composed)",
        accountant=PLD_ACCOUNTANT,
        details={
            "noise_multiplier_count": zs[0] if auto else None,
            "noise_multiplier_selection": zs[-2],
            "noise_multiplier_matrix": zs[-1],
            "sensitivity_l2_count": 1.0 if auto else None,
            "sensitivity_l2_selection": 1.0,
            "sensitivity_l2_matrix": sensitivity,
            "top_items": "auto: noisy users / (4 z_matrix)" if auto else int(top_items or 0),
            "selection_share": selection_share,
            "count_share": COUNT_SHARE if auto else 0.0,
            **row_bound,
            "unit": "user",
            "adjacency": ADJACENCY,
            "expected_users": run.expected_users,
        },
        event=composed_spec([gaussian_spec(z) for z in zs]),
    )
    return GramPlan(run, release, zs[0] if auto else None, zs[-2], zs[-1], sensitivity)


@dataclass(frozen=True)
class GramPlan:
    """A calibrated release before any noise: charge `release`, then call `top_items`,
    `noisy_counts` and `finish` in that order (the order the noise is drawn in)."""

    run: PrivateFit
    release: Release
    z_count: float | None
    z_selection: float
    z_matrix: float
    sensitivity: float

    def top_items(self, active: Callable[[], int], top: int | None, n_items: int, cap: int) -> int:
        """`top`, or when None n_users / (4 z_matrix) from a noisy count of `active()` users."""
        if top is not None:
            return int(top or n_items)
        exact = not self.run.private
        n_hat = noised_user_count(active(), None if exact else self.z_count, self.run.noise)
        return n_items if exact else auto_top_items(n_hat, self.z_matrix, n_items, cap)

    def noisy_counts(self, column_sums: np.ndarray) -> np.ndarray:
        """The exact selection statistic plus its noise (exact at epsilon = inf)."""
        z = self.z_selection if self.run.private else None
        return noised_item_counts(column_sums, z, self.run.noise)

    def finish(self, selected: np.ndarray, counts: np.ndarray, matrix: np.ndarray) -> GramRelease:
        """`matrix` (float64, exact, over `selected`) noised in place; the whole release."""
        mech = GaussianMechanism(self.z_matrix, self.sensitivity)
        mech.add_symmetric_noise(matrix, self.run.noise, out=matrix)
        multipliers = {"count": self.z_count, "selection": self.z_selection, "gram": self.z_matrix}
        return GramRelease(selected, counts, matrix, mech.sigma, multipliers, self.release)


def release_gram(
    dataset: InteractionDataset,
    x: sp.csr_matrix,
    *,
    model: str,
    run: PrivateFit,
    top_items: int | None,
    max_items_auto: int,
    selection_share: float,
    ledger: PrivacyLedger | None,
    window: int | None = None,
    stats: GramStatistics | None = None,
) -> GramRelease:
    """DP item selection and one noisy item-item matrix, calibrated together.

    0. When `top_items` is None (automatic): a noisy count of users (share COUNT_SHARE of the
       budget) sets it to n / (4 z_gram) (see `auto_top_items`).
    1. Selection, always: noisy column sums of the unit-norm user rows (L2 sensitivity 1) of
       every item, keep the `top_items` largest (every item when `top_items` >= the number of
       items: the counts kept are noisy all the same).
    2. The matrix on the selected items, with user rows re-normalised to unit norm over them:
       the Gram matrix sum_u x_u^T x_u (`window=None`; released with symmetric noise, whose
       upper-triangle sensitivity is 1/sqrt(2)), or the window co-occurrence of `window_pairs`
       (sensitivity 1).

    Budget split and calibration: `plan_gram_release`. The ledger is charged once, before any
    noise is drawn. With epsilon = inf nothing is noised.
    `stats` (default: computed from `x` in this process) supplies the exact sums, e.g. reduced
    once from user shards (`models/sharded.py`); the noise is the same either way.
    """
    n_items = x.shape[1]
    if stats is None:
        stats = LocalGramStatistics(dataset, x)
    plan = plan_gram_release(
        model=model,
        run=run,
        top_items=top_items,
        selection_share=selection_share,
        row_bound={"row_bound": "unit L2 norm per user", "window": window},
        matrix="window-cooccurrence" if window else "gram",
        sensitivity=1.0 if window else 1.0 / math.sqrt(2.0),
    )
    run.charge(ledger, plan.release, model)
    top = plan.top_items(stats.active_users, top_items, n_items, max_items_auto)
    counts = plan.noisy_counts(stats.unit_column_sums())
    selected = select_items(counts, top, n_items)
    if window:
        g = np.array(stats.window_pairs(selected, window), dtype=np.float64)
    else:
        g = np.array(stats.unit_gram(selected), dtype=np.float64)
    out = plan.finish(selected, counts, g)
    if window:
        np.fill_diagonal(out.gram, 0.0)  # no signal there (post-processing)
    return out
