"""What every user-level DP model shares: the opening of a DP fit and the releases themselves.

- `start_private_fit`: the checks every DP fit makes before it reads a value (delta within
  1 / (10 n_users)), the seeded noise generator, and `PrivateFit.record` afterwards.
- Contribution bounds: `most_recent_items` (at most k items per user), `unit_rows` (each user's
  row scaled to unit L2 norm, so one user moves a column sum by at most 1 in L2).
- `noisy_item_counts`: Gaussian noise on the column sums of unit-norm user rows (DP selection,
  DP-BPR's popularity prior); `select_items` keeps the largest.
- `release_gram`: DP item selection composed with one noisy item-item matrix (DP item-kNN,
  DP EASE, and through them DP hybrid).
- `charge`: the ledger entry, always made before any noise is drawn.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from privrec.core.errors import ConfigError
from privrec.data.dataset import InteractionDataset
from privrec.models.base import Recommender, seed_from
from privrec.privacy.dp import GaussianMechanism, Release, default_delta, gaussian_sigma
from privrec.privacy.ledger import PrivacyLedger

ACCOUNTANT = "analytic gaussian (dp-accounting)"
PLD_ACCOUNTANT = "pld (dp-accounting)"

__all__ = [
    "ACCOUNTANT",
    "PLD_ACCOUNTANT",
    "GramRelease",
    "PrivateFit",
    "active_users",
    "auto_top_items",
    "charge",
    "choose_top_items",
    "most_recent_items",
    "noisy_item_counts",
    "release_gram",
    "resolve_delta",
    "select_items",
    "selected_above_rest",
    "start_private_fit",
    "unit_rows",
    "window_pairs",
]


# ---- the opening of every DP fit ----------------------------------------------------------------
def resolve_delta(delta: float | None, n_users: int) -> float:
    """The configured delta, or 1 / (10 * n_users) when None; refuses delta above that bound."""
    bound = default_delta(n_users)
    if delta is None:
        return bound
    if not (0 < delta <= bound * (1 + 1e-9)):
        raise ConfigError(
            f"delta: {delta:g} is above 1/(10 x {n_users} users) = {bound:g}; "
            "give a smaller delta or None"
        )
    return float(delta)


def active_users(x: sp.csr_matrix) -> int:
    """Users with at least one interaction (the n of delta = 1/(10 n))."""
    return int(np.count_nonzero(np.diff(x.indptr)))


def charge(ledger: PrivacyLedger | None, release: Release, model: str) -> None:
    """Record the release in the ledger (raises BudgetExceededError) before any noise is drawn."""
    if ledger is not None and not math.isinf(release.epsilon):
        ledger.charge(release, model=model)


@dataclass
class PrivateFit:
    """What a DP fit has settled before it reads any value: budget, delta, the noise generator.

    Attributes:
        epsilon: the user-level budget (inf: nothing is noised and nothing is a DP release).
        delta: the resolved delta (see `resolve_delta`).
        n_users: the users counted for the default delta.
        seed: the seed of this fit (`fit(rng=...)` or the config's).
        gen: the noise generator, seeded by `seed`.
    """

    epsilon: float
    delta: float
    n_users: int
    seed: int
    gen: np.random.Generator = field(repr=False)

    @property
    def private(self) -> bool:
        """Whether this fit is a DP release (epsilon finite)."""
        return not math.isinf(self.epsilon)

    def charge(self, ledger: PrivacyLedger | None, release: Release, model: str) -> None:
        """Record `release` in `ledger` (call it before the first noise is drawn)."""
        charge(ledger, release, model)

    def record(self, model: Recommender, release: Release) -> None:
        """Set the model's `privacy` and `release` (None for both at epsilon = inf)."""
        model.privacy = release.guarantee() if self.private else None
        model.release = release if self.private else None  # type: ignore[attr-defined]


def start_private_fit(
    *,
    epsilon: float,
    delta: float | None,
    n_users: int,
    rng: int | np.random.Generator | None,
    seed: int,
) -> PrivateFit:
    """The common opening of a DP fit: delta checked and resolved, the noise generator seeded."""
    if not epsilon > 0:
        raise ConfigError(f"epsilon: {epsilon} is not positive; give a budget > 0 (inf: no DP)")
    resolved = resolve_delta(delta, n_users)
    s = seed_from(rng, seed)
    return PrivateFit(float(epsilon), resolved, int(n_users), s, np.random.default_rng(s))


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
def noisy_item_counts(
    x: sp.csr_matrix, noise_multiplier: float | None, gen: np.random.Generator
) -> np.ndarray:
    """Column sums of the unit-norm rows of `x` (L2 sensitivity 1) plus N(0, z^2) per item.

    `noise_multiplier` None gives the exact sums (no release); 0 draws nothing either.
    """
    counts = np.asarray(unit_rows(x).sum(axis=0), dtype=np.float64).ravel()
    if noise_multiplier is None:
        return counts
    return GaussianMechanism(float(noise_multiplier), 1.0).add_noise(counts, gen)


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


def auto_top_items(n_users: int, noise_multiplier: float, n_items: int, cap: int) -> int:
    """The default number of selected items: n_users / (4 z), clipped to [50, cap] and n_items."""
    if noise_multiplier <= 0:
        return n_items
    return int(min(n_items, cap, max(50, round(n_users / (4.0 * noise_multiplier)))))


def choose_top_items(
    top: int | None,
    *,
    epsilon: float,
    delta: float,
    selection_share: float,
    n_users: int,
    n_items: int,
    cap: int,
) -> int:
    """`top` if given; else every item without noise, or `auto_top_items` for the Gram noise."""
    if top is not None:
        return top
    if math.isinf(epsilon):
        return n_items
    from privrec.privacy.dp import calibrate_gaussians, split_ratios

    z_gram = (
        calibrate_gaussians(split_ratios([selection_share, 1 - selection_share]), epsilon, delta)[1]
        if gaussian_sigma(epsilon, delta) > 0
        else 0.0
    )
    return auto_top_items(n_users, z_gram, n_items, cap)


# ---- the item-item release shared by DP item-kNN and DP EASE ----------------------------------
@dataclass
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
    """DP item selection (optional) and one noisy item-item matrix, calibrated together.

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
    matrix = "window-cooccurrence" if window else "gram"
    mechanisms = "gaussian x2 (composed)" if select else "gaussian"
    release = Release(
        name=f"{model}:{'selection+' if select else ''}{matrix}",
        epsilon=epsilon,
        delta=delta,
        mechanism=mechanisms,
        accountant=PLD_ACCOUNTANT if select else ACCOUNTANT,
        details={
            "noise_multiplier_selection": z_sel,
            "noise_multiplier_matrix": z_gram,
            "sensitivity_l2_selection": 1.0 if select else None,
            "sensitivity_l2_matrix": sens,
            "top_items": int(top_items) if select and top_items is not None else n_items,
            "selection_share": selection_share if select else 0.0,
            "row_bound": "unit L2 norm per user",
            "window": window,
        },
    )
    charge(ledger, release, model)
    counts = noisy_item_counts(x, float(z_sel or 0.0) if select else None, gen)
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
