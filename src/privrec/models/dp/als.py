"""DP-ALS: user-level DP alternating least squares (Chien et al. 2021, "Private Alternating Least
Squares: Practical Private Matrix Completion with Tighter Rates"), for implicit feedback.

Joint DP ("billboard") model: only the item factors V are released; a shopper's own factor is
solved from their own history and V, on the training side during the fit and at request time
when serving, and is never released. Each release noises per-item sufficient statistics:

1. DP item selection (as `release.release_gram`: noisy column sums of unit-norm rows, keep the
   `top_items` largest; automatic size from a noisy user count).
2. `epochs` iterations. User step (private to each shopper): u = argmin sum_{j in h}
   (1 - u.v_j)^2 + alpha sum_j (u.v_j)^2 + user_reg |u|^2 over the selected items, clipped to
   |u| <= 1. Item step, one Gaussian release: for every selected item j,
   A_j = sum_{u: j in h_u} w_u u u^T and b_j = sum_{u: j in h_u} w_u u, plus the global
   G = sum_u w_u u u^T (the implicit "unobserved" term), with w_u = 1/sqrt(n_u) for a shopper
   with n_u kept items (at most `max_user_items`, a seeded uniform sample). Then
   v_j = PSD(A_j + alpha G + lambda I)^-1 b_j with lambda = reg + reg_noise * (noise edge).

Sensitivity of one iteration's release, exactly: a shopper adds w_u u u^T to n_u matrices
(Frobenius sqrt(n_u) w_u |u|^2 <= 1, upper triangles with the diagonal over sqrt(2): 1/sqrt(2)),
w_u u to n_u vectors (L2 <= 1) and w_u u u^T to G (<= 1/sqrt(2)), so the concatenation moves by at
most sqrt(1/2 + 1 + 1/2) = sqrt(2). Selection and the `epochs` releases are Gaussians composed by
the PLD accountant to (epsilon, delta) and charged once, before any noise. The random initial V is
seeded (public randomness); noise only from `privacy.noise`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from privrec.core.rng import DEFAULT_SEED
from privrec.data.dataset import InteractionDataset
from privrec.models.base import InputConfig, Recommender, register
from privrec.models.dp.release import (
    COUNT_SHARE,
    DEFAULT_EXPECTED_USERS,
    PLD_ACCOUNTANT,
    DPArtifact,
    PrivateFit,
    active_users,
    auto_top_items,
    noised_item_counts,
    noised_user_count,
    select_items,
    selected_above_rest,
    start_private_fit,
    unit_column_sums,
    unit_gram,
    warn_unless_public_order,
)
from privrec.models.dp.weighted import cap_rows
from privrec.privacy.dp import (
    GaussianMechanism,
    Release,
    calibrate_gaussians,
    composed_spec,
    gaussian_spec,
    split_ratios,
)
from privrec.privacy.guarantee import ADJACENCY
from privrec.privacy.ledger import PrivacyLedger

__all__ = ["ALS_SENSITIVITY", "DPALS", "DPALSConfig", "item_statistics", "solve_users"]

ALS_SENSITIVITY = math.sqrt(2.0)  # one iteration's (A upper / sqrt 2, b, G upper / sqrt 2)


class DPALSConfig(InputConfig):
    """DP-ALS settings (see the module docstring).

    Attributes:
        epsilon: user-level budget of the whole fit (inf: no noise, no guarantee).
        delta: None means 1 / (10 x expected_users).
        expected_users: public number delta is set from.
        embedding_size: d, the factor dimension.
        epochs: ALS iterations, each one Gaussian release of the item statistics.
        reg: ridge of the item solve; reg_noise: extra ridge per unit of the noise edge.
        user_reg: ridge of each shopper's own solve (never released).
        unobserved_weight: alpha, weight of every unobserved (user, item) pair.
        max_user_items: at most this many items per shopper (uniform sample; None: all).
        top_items, max_items_auto, selection_share: DP item selection (as DP EASE).
        init_share: 0 starts from a seeded random V; > 0 spends this share of what the
            selection leaves on one noisy unit-row Gram of the selected items whose top
            eigenvectors (shrunk as DP EASE's spectral denoising) start V (Chien et al.'s
            private initialisation, one noisy power-iteration step from the full Gram).
        seed: seeds the initial V and the per-shopper sample (never the noise).
    """

    epsilon: float = Field(default=1.0, gt=0.0)
    delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    expected_users: int = Field(default=DEFAULT_EXPECTED_USERS, ge=1)
    embedding_size: int = Field(default=32, ge=1, le=256)
    epochs: int = Field(default=2, ge=1, le=20)
    reg: float = Field(default=1.0, gt=0.0)
    reg_noise: float = Field(default=1.0, ge=0.0)
    user_reg: float = Field(default=0.1, gt=0.0)
    unobserved_weight: float = Field(default=0.1, ge=0.0)
    max_user_items: int | None = Field(default=None, ge=1)
    top_items: int | None = Field(default=None, ge=1)
    max_items_auto: int = Field(default=2000, ge=10)
    selection_share: float = Field(default=0.15, gt=0.0, lt=1.0)
    init_share: float = Field(default=0.0, ge=0.0, lt=1.0)
    seed: int = DEFAULT_SEED
    binary: bool = True


def solve_users(
    h: sp.csr_matrix, v: np.ndarray, alpha: float, reg: float, clip: bool
) -> np.ndarray:
    """Each row's factor u = (V_h^T V_h + alpha V^T V + reg I)^-1 V_h^T h (0/1 rows of `h`).

    `clip` scales each u to norm <= 1 (the contribution bound of the item release).
    """
    n, d = h.shape[0], v.shape[1]
    vv = (v[:, :, None] * v[:, None, :]).reshape(v.shape[0], d * d)
    a = np.asarray(h @ vv).reshape(n, d, d)
    a += alpha * (v.T @ v)[None] + reg * np.eye(d)[None]
    b = np.asarray(h @ v)
    u = np.linalg.solve(a, b[..., None])[..., 0]
    if clip:
        norms = np.linalg.norm(u, axis=1, keepdims=True)
        u = u / np.maximum(norms, 1.0)
    return u


def item_statistics(x: sp.csr_matrix, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact (A, b, G) of one item step: x 0/1 rows over the selected items, u clipped factors.

    A[j] = sum_u w_u u u^T over the shoppers of item j, b[j] = sum_u w_u u, G = sum_u w_u u u^T,
    w_u = 1/sqrt(items in the row) (0 for empty rows).
    """
    n_items, d = x.shape[1], u.shape[1]
    nu = np.diff(x.indptr).astype(np.float64)
    w = np.divide(1.0, np.sqrt(nu), out=np.zeros_like(nu), where=nu > 0)
    xw = sp.csr_matrix(sp.diags(w) @ x)
    uu = (u[:, :, None] * u[:, None, :]).reshape(u.shape[0], d * d)
    a = np.asarray(xw.T @ uu).reshape(n_items, d, d)
    b = np.asarray(xw.T @ u)
    g = (u * w[:, None]).T @ u
    return a, b, g


def _psd(m: np.ndarray) -> np.ndarray:
    """The nearest positive semi-definite matrices (negative eigenvalues set to 0), batched."""
    w, q = np.linalg.eigh(m)
    return np.matmul(q * np.maximum(w, 0.0)[..., None, :], np.swapaxes(q, -1, -2))


@register
class DPALS(DPArtifact, Recommender):
    """User-level DP alternating least squares (see the module docstring)."""

    name = "dp_als"
    Config = DPALSConfig
    config: DPALSConfig

    def __init__(self, config: DPALSConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.selected = np.zeros(0, np.int64)
        self.popularity = np.zeros(0, np.float32)
        self.item_factors = np.zeros((0, 0), np.float32)
        self.noise_std = 0.0
        self.release: Release | None = None

    def fit(
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
        noise_seed: int | None = None,
    ) -> DPALS:
        """Selection and `epochs` item releases (charged before any noise), local user solves.

        Args:
            dataset: the training interactions.
            rng: unused (the initial V is seeded by `seed`); kept for the contract.
            ledger: charged once, before any noise is drawn.
            noise_seed: tests and benchmarks only: reproducible noise, then no DP release.
        """
        warn_unless_public_order(dataset, self.name)
        c = self.config
        x = self.input_matrix(dataset).astype(np.float64)
        x.data[:] = 1.0
        run = start_private_fit(
            epsilon=c.epsilon,
            delta=c.delta,
            expected_users=c.expected_users,
            rng=rng,
            seed=c.seed,
            noise_seed=noise_seed,
        )
        auto = c.top_items is None
        rest = 1 - c.selection_share
        init = [rest * c.init_share] if c.init_share > 0 else []
        shares = [c.selection_share, *init] + [rest * (1 - c.init_share) / c.epochs] * c.epochs
        if auto:
            shares = [COUNT_SHARE] + [(1 - COUNT_SHARE) * s for s in shares]
        zs = (
            calibrate_gaussians(split_ratios(shares), run.epsilon, run.delta)
            if run.private
            else [0.0] * len(shares)
        )
        z_count = zs[0] if auto else None
        z_sel, z_als = zs[1 if auto else 0], zs[-1]
        z_init = zs[(2 if auto else 1)] if c.init_share > 0 else None
        release = self._describe(run, zs, z_count, z_sel, z_als)
        release.details["noise_multiplier_init_gram"] = z_init
        release.details["sensitivity_l2_init_gram"] = 1 / math.sqrt(2) if z_init else None
        run.charge(ledger, release, self.name)
        exact = not run.private
        x = cap_rows(x, c.max_user_items, c.seed)
        n_items = x.shape[1]
        if auto:
            n_hat = noised_user_count(active_users(x), None if exact else z_count, run.noise)
            top = n_items if exact else auto_top_items(n_hat, z_als, n_items, c.max_items_auto)
        else:
            top = int(c.top_items or n_items)
        counts = noised_item_counts(unit_column_sums(x), None if exact else z_sel, run.noise)
        self.selected = select_items(counts, top, n_items)
        self.popularity = np.maximum(counts, 0.0).astype(np.float32)
        xs = sp.csr_matrix(x[:, self.selected])
        m, d = self.selected.size, c.embedding_size
        v = np.random.default_rng(c.seed).normal(0.0, 1.0 / math.sqrt(d), (m, d))
        if z_init is not None:
            v = self._initial_factors(xs, v, GaussianMechanism(z_init, 1 / math.sqrt(2)), run)
        mech = GaussianMechanism(z_als, ALS_SENSITIVITY)
        self.noise_std = mech.sigma
        # the noise edge of a d x d GOE matrix of off-diagonal std sigma
        ridge = c.reg + c.reg_noise * 2.0 * mech.sigma * math.sqrt(d)
        for _ in range(c.epochs):
            u = solve_users(xs, v, c.unobserved_weight, c.user_reg, clip=True)
            a, b, g = item_statistics(xs, u)
            if run.private:
                for j in range(m):
                    mech.add_symmetric_noise(a[j], run.noise, out=a[j])
                b = mech.add_noise(b, run.noise)
                mech.add_symmetric_noise(g, run.noise, out=g)
            lhs = _psd(a + c.unobserved_weight * g[None]) + ridge * np.eye(d)[None]
            v = np.linalg.solve(lhs, b[..., None])[..., 0]
        self.item_factors = v.astype(np.float32)
        run.record(self, release)
        self._mark_fitted(dataset.n_items)
        return self

    @staticmethod
    def _initial_factors(
        xs: sp.csr_matrix, v: np.ndarray, mech: GaussianMechanism, run: PrivateFit
    ) -> np.ndarray:
        """V from the top eigenpairs of one noisy unit-row Gram (random V where none survive).

        Each shopper's unit row moves the Gram's upper triangle (diagonal over sqrt 2) by at
        most 1/sqrt(2): the mechanism's sensitivity. Eigenvalues are shrunk as in
        `dp.ease.spectral_denoise`; V is scaled so its median item norm is 1 (post-processing).
        """
        from scipy.linalg import eigh

        m, d = v.shape
        g = unit_gram(xs, np.arange(m))
        if run.private:
            mech.add_symmetric_noise(g, run.noise, out=g)
        s = mech.sigma if run.private else 0.0
        w, q = eigh(g, subset_by_index=(max(m - d, 0), m - 1))
        w, q = w[::-1], q[:, ::-1]
        edge = 2.0 * s * math.sqrt(m)
        theta = np.zeros_like(w)
        ok = w > edge
        lam = w[ok]
        th = (lam + np.sqrt(np.maximum(lam * lam - edge * edge, 0.0))) / 2.0
        theta[ok] = np.maximum(th - s * s * m / np.maximum(th, 1e-12), 0.0)
        out = v * 1e-3
        k = int(np.count_nonzero(theta > 0))
        if k == 0:
            return v
        out[:, :k] = q[:, :k] * np.sqrt(theta[:k])
        norms = np.linalg.norm(out, axis=1)
        med = float(np.median(norms[norms > 0])) if np.any(norms > 0) else 1.0
        return out / med

    def _describe(
        self,
        run: PrivateFit,
        zs: list[float],
        z_count: float | None,
        z_sel: float,
        z_als: float,
    ) -> Release:
        c = self.config
        return Release(
            name=f"{self.name}:{'count+' if z_count is not None else ''}selection+"
            f"{c.epochs}x item statistics",
            epsilon=run.epsilon,
            delta=run.delta,
            mechanism=f"gaussian x{len(zs)} (composed)",
            accountant=PLD_ACCOUNTANT,
            details={
                "noise_multiplier_count": z_count,
                "noise_multiplier_selection": z_sel,
                "noise_multiplier_item_statistics": z_als,
                "sensitivity_l2_selection": 1.0,
                "sensitivity_l2_item_statistics": ALS_SENSITIVITY,
                "epochs": c.epochs,
                "embedding_size": c.embedding_size,
                "max_user_items": c.max_user_items,
                "row_bound": "user factor |u| <= 1, weight 1/sqrt(n_u) per kept item",
                "unit": "user",
                "adjacency": ADJACENCY,
                "expected_users": run.expected_users,
            },
            event=composed_spec([gaussian_spec(z) for z in zs]),
        )

    # ---- scoring: the shopper's own factor, solved from their history and V -----------------
    def _prior(self) -> np.ndarray:
        top = float(self.popularity.max()) if self.popularity.size else 0.0
        return (self.popularity / top if top > 0 else self.popularity).astype(np.float64)

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        """V u on the selected items (u from the history alone); other items by popularity."""
        h = self._history_input(histories)
        hs = sp.csr_matrix(h[:, self.selected], dtype=np.float64)
        hs.data[:] = 1.0
        c = self.config
        v = self.item_factors.astype(np.float64)
        u = solve_users(hs, v, c.unobserved_weight, c.user_reg, clip=False)
        return selected_above_rest(u @ v.T, self.selected, self._prior(), self.n_items)

    def _state(self) -> dict[str, np.ndarray]:
        return {
            "selected": self.selected,
            "item_factors": self.item_factors,
            "popularity": self.popularity,
        }

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.selected = arrays["selected"].astype(np.int64)
        self.item_factors = arrays["item_factors"].astype(np.float32)
        self.popularity = arrays["popularity"].astype(np.float32)
        self.noise_std = float(meta.get("noise_std", 0.0))
        self._read_marker(meta)

    def _meta(self) -> dict[str, Any]:
        return {"noise_std": self.noise_std, **self._marker_meta()}
