"""DP text-neighbourhood kNN: public item text decides WHERE the release is, shoppers only HOW MUCH.

Issue 16, item 4 ("public item features inside the release: noise only on sufficient statistics,
public features as a prior"). A DP co-occurrence release over a whole catalogue (Beauty: 12,101
items, 73 million pairs) drowns in noise, so `dp_itemknn` / `dp_hybrid` keep only a few hundred
popular items. Here the public catalogue text (MiniLM vectors, no shopper data) fixes a sparse
pattern first: the unordered pairs {i, j} where j is among i's `neighbours` nearest items by text
or i among j's. Only the co-occurrence of those pairs is released, for EVERY item, so the noise is
spread over a few hundred thousand entries instead of tens of millions, and a shopper's budget
goes only to pairs that are plausible a priori. The text says which items could go together;
the DP counts say which of them shoppers actually combine.

One user-level DP release (unit: one user, add/remove adjacency), two Gaussians calibrated
together by dp-accounting's PLD accountant and charged to the ledger once, before any noise:

1. popularity: the column sums of the unit-norm 0/1 user rows (L2 sensitivity 1);
2. pattern co-occurrence: per user, the distinct pattern pairs of items at most `window` events
   apart, each weighted 1 / sqrt(the user's number of such pairs), so one user's vector over the
   pattern has L2 norm exactly 1 however many events they have (`pattern_pairs`).

Post-processing (no further privacy cost): pair values below `threshold` noise standard
deviations are dropped; the score of item i for a history h (the content model's recency
weights) is

    content_weight * cos(profile(h), e_i)                      (public text, in [-1, 1])
  + cf_weight * s_i(h) / max_j |s_j(h)|,  s(h) = h M           (the released pairs, symmetric)
  + popularity_weight * log1p(c_i) / log1p(max c)              (c: the noisy counts, >= 0)

The guarantee is the release's. With `fit(..., noise_seed=)` the noise is reproducible and the
model is no DP release (`privacy` None); at epsilon = inf nothing is noised.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field, field_validator

from privrec.core.errors import ConfigError
from privrec.core.rng import DEFAULT_SEED
from privrec.core.types import Explanation, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.base import ModelConfig, Recommender, history_explanation, register
from privrec.models.content import ContentRecommender
from privrec.models.dp.blend import ContentDPBlend, row_scaled
from privrec.models.dp.release import (
    DEFAULT_EXPECTED_USERS,
    PLD_ACCOUNTANT,
    DPArtifact,
    noised_item_counts,
    start_private_fit,
    unit_column_sums,
    warn_unless_public_order,
)
from privrec.models.hybrid_components import (
    components_meta,
    components_state,
    restore_components,
)
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

__all__ = [
    "DPTextKNN",
    "DPTextKNNConfig",
    "pattern_pairs",
    "text_neighbour_pattern",
]

_BLOCK = 2048  # rows of text similarities computed at once (bounded memory on large catalogues)
_PATTERNS: dict[tuple[bytes, int], np.ndarray] = {}  # public pattern per (text vectors, k)
_MAX_PATTERNS = 4


class DPTextKNNConfig(ModelConfig):
    """DP text-neighbourhood kNN settings.

    Attributes:
        epsilon: user-level budget of the one release (inf: no noise, no guarantee).
        delta: None means 1 / (10 x expected_users).
        expected_users: public, configured number of users delta comes from (never counted).
        neighbours: text neighbours per item that define the released pattern.
        window: largest event distance of a released pair in a user's sequence.
        popularity_share: budget share of the popularity counts (the rest: the pattern).
        threshold: released pair values below this many noise standard deviations are dropped.
        content_params: settings of the content component (the bundled pretrained encoder only).
        content_weight, cf_weight, popularity_weight: the blend (see the module docstring).
        seed: kept for the contract; the DP noise is never seeded (see `fit`).
    """

    epsilon: float = Field(default=1.0, gt=0.0)
    delta: float | None = Field(default=None, gt=0.0, lt=1.0)
    expected_users: int = Field(default=DEFAULT_EXPECTED_USERS, ge=1)
    neighbours: int = Field(default=30, ge=1)
    window: int = Field(default=3, ge=1)
    popularity_share: float = Field(default=0.3, gt=0.0, lt=1.0)
    threshold: float = Field(default=1.0, ge=0.0)
    content_params: dict[str, Any] = Field(default_factory=lambda: {"recency_half_life": 1.0})
    content_weight: float = Field(default=1.0, ge=0.0)
    cf_weight: float = Field(default=0.1, ge=0.0)
    popularity_weight: float = Field(default=0.2, ge=0.0)
    seed: int = DEFAULT_SEED

    @field_validator("content_params")
    @classmethod
    def _content_ok(cls, v: dict[str, Any]) -> dict[str, Any]:
        # the pattern and the text part must come from public text only: an encoder fine-tuned
        # on the shop's interactions would carry shoppers' data in outside the release
        for key in ("adapter", "model_path"):
            if v.get(key):
                raise ValueError(
                    f"content_params.{key}: only the bundled pretrained encoder is allowed in a "
                    "DP model (an adapter or fine-tuned encoder is trained on shoppers' data)"
                )
        return v


# ---- the public pattern ------------------------------------------------------------------------
def text_neighbour_pattern(vectors: np.ndarray, neighbours: int) -> np.ndarray:
    """Sorted keys lo * n + hi (lo < hi) of the pairs where one item is among the other's
    `neighbours` nearest by cosine of its unit text vector (public data only).

    Ties are broken by the lower item index, so the pattern is a function of the text alone; it
    is kept in memory for the same vectors (public data: refits and repeated releases reuse it).
    """
    e = np.ascontiguousarray(vectors, dtype=np.float32)
    n = e.shape[0]
    k = min(int(neighbours), n - 1)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    key = (hashlib.sha256(e.tobytes()).digest(), k)
    if key not in _PATTERNS:
        if len(_PATTERNS) >= _MAX_PATTERNS:
            _PATTERNS.pop(next(iter(_PATTERNS)))
        _PATTERNS[key] = _neighbour_keys(e, k)
    return _PATTERNS[key].copy()


def _neighbour_keys(e: np.ndarray, k: int) -> np.ndarray:
    n = e.shape[0]
    rows, cols = [], []
    for a in range(0, n, _BLOCK):
        b = min(n, a + _BLOCK)
        s = e[a:b] @ e.T
        s[np.arange(b - a), np.arange(a, b)] = -np.inf
        # a stable full sort on (-similarity, index) would be exact but slow; argpartition picks
        # the k largest, then the boundary ties are resolved by index below
        idx = np.argpartition(-s, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(s, idx, axis=1).min(axis=1, keepdims=True)
        above = s > kth
        tie = s == kth
        for r in range(b - a):
            take = np.flatnonzero(above[r])
            need = k - take.size
            if need > 0:
                take = np.concatenate([take, np.flatnonzero(tie[r])[:need]])
            rows.append(np.full(take.size, a + r, dtype=np.int64))
            cols.append(take.astype(np.int64))
    r_all = np.concatenate(rows)
    c_all = np.concatenate(cols)
    lo, hi = np.minimum(r_all, c_all), np.maximum(r_all, c_all)
    return np.unique(lo * n + hi)


def pattern_pairs(
    dataset: InteractionDataset, keys: np.ndarray, window: int
) -> tuple[np.ndarray, np.ndarray]:
    """The exact statistic the pattern release noises, and each user's L2 norm in it.

    Per user, the distinct unordered pairs {a, b} (a != b) of items at most `window` events apart
    that lie in the pattern `keys` (see `text_neighbour_pattern`), each weighted
    1 / sqrt(number of the user's such pairs): one user's vector has L2 norm 1 (0 without pairs).

    Returns:
        (values over `keys`, per-user L2 norms of their contribution: 1 or 0).
    """
    n = dataset.n_items
    u = dataset.user_idx.astype(np.int64)
    it = dataset.item_idx.astype(np.int64)
    us, a, b = [], [], []
    for d in range(1, int(window) + 1):
        same = u[d:] == u[:-d]  # the dataset is sorted by (user, time)
        us.append(u[d:][same])
        a.append(it[:-d][same])
        b.append(it[d:][same])
    values = np.zeros(keys.size, dtype=np.float64)
    if not us or keys.size == 0:
        return values, np.zeros(dataset.n_users, dtype=np.float64)
    uu, aa, bb = np.concatenate(us), np.concatenate(a), np.concatenate(b)
    ok = aa != bb
    uu, lo, hi = uu[ok], np.minimum(aa, bb)[ok], np.maximum(aa, bb)[ok]
    pair = lo * n + hi
    pos = np.searchsorted(keys, pair)
    inside = (pos < keys.size) & (keys[np.minimum(pos, keys.size - 1)] == pair)
    uu, pos = uu[inside], pos[inside]
    # distinct (user, pair): a pair a user repeats counts once
    uniq = np.unique(uu * keys.size + pos)
    pu, pp = uniq // keys.size, uniq % keys.size
    n_pairs = np.bincount(pu, minlength=dataset.n_users).astype(np.float64)
    w = 1.0 / np.sqrt(n_pairs[pu])
    np.add.at(values, pp, w)
    # the contribution bound, checked rather than assumed: sum of w^2 per user is 1
    sq = np.bincount(pu, weights=w * w, minlength=dataset.n_users)
    if np.any(sq > 1.0 + 1e-9):
        raise AssertionError("pattern_pairs: a user's contribution exceeds L2 norm 1")
    return values, np.sqrt(sq)


# ---- the model ---------------------------------------------------------------------------------
@register
class DPTextKNN(DPArtifact, ContentDPBlend):
    """Public text pattern + one user-level DP release of its pair counts and popularity."""

    name = "dp_textknn"
    Config = DPTextKNNConfig
    config: DPTextKNNConfig

    def __init__(self, config: DPTextKNNConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        try:
            self.content = ContentRecommender(**self.config.content_params)
        except ConfigError as exc:
            raise ConfigError(f"{self.name}: {exc}") from exc
        self.pairs = sp.csr_matrix((0, 0), dtype=np.float32)  # symmetric, released values
        self.popularity = np.zeros(0, dtype=np.float32)  # noisy counts
        self.noise_std = 0.0
        self.release: Release | None = None

    @property
    def components(self) -> dict[str, Recommender]:
        return {"content": self.content}

    def fit(
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
        noise_seed: int | None = None,
    ) -> DPTextKNN:
        """Embed the item text, fix the pattern from it, then the one DP release.

        Args:
            dataset: the training interactions (fit on `in_public_item_order(dataset)`).
            rng: unused beyond the contract (nothing random but the noise).
            ledger: charged once before any noise is drawn.
            noise_seed: tests and benchmarks only: reproducible noise, no DP release.
        """
        c = self.config
        warn_unless_public_order(dataset, self.name)
        run = start_private_fit(
            epsilon=c.epsilon,
            delta=c.delta,
            expected_users=c.expected_users,
            rng=rng,
            seed=c.seed,
            noise_seed=noise_seed,
        )
        self.content.fit(dataset)  # public: item text only
        keys = text_neighbour_pattern(self.content.item_embeddings, c.neighbours)
        shares = [c.popularity_share, 1.0 - c.popularity_share]
        if run.private:
            z_pop, z_pair = calibrate_gaussians(split_ratios(shares), run.epsilon, run.delta)
        else:
            z_pop = z_pair = 0.0
        release = Release(
            name=f"{self.name}:popularity+text-pattern-cooccurrence",
            epsilon=run.epsilon,
            delta=run.delta,
            mechanism="gaussian x2 (composed)",
            accountant=PLD_ACCOUNTANT,
            details={
                "noise_multiplier_popularity": z_pop,
                "noise_multiplier_pairs": z_pair,
                "sensitivity_l2_popularity": 1.0,
                "sensitivity_l2_pairs": 1.0,
                "popularity_share": c.popularity_share,
                "pattern": f"text neighbours {c.neighbours} (public item text)",
                "pattern_pairs": int(keys.size),
                "window": c.window,
                "row_bound": "unit L2 norm per user (both statistics)",
                "unit": "user",
                "adjacency": ADJACENCY,
                "expected_users": run.expected_users,
            },
            event=composed_spec([gaussian_spec(z_pop), gaussian_spec(z_pair)]),
        )
        run.charge(ledger, release, self.name)  # before the first noise draw
        exact = not run.private
        x = dataset.matrix(binary=True)
        counts = noised_item_counts(unit_column_sums(x), None if exact else z_pop, run.noise)
        values, _ = pattern_pairs(dataset, keys, c.window)
        mech = GaussianMechanism(z_pair, 1.0)
        if not exact:
            values = mech.add_noise(values, run.noise)
            values[values < c.threshold * mech.sigma] = 0.0
        values[values < 0] = 0.0  # co-occurrences are never negative (post-processing)
        n = dataset.n_items
        lo, hi = keys // max(n, 1), keys % max(n, 1)
        keep = values > 0
        upper = sp.csr_matrix((values[keep], (lo[keep], hi[keep])), shape=(n, n))
        self.pairs = sp.csr_matrix(upper + upper.T, dtype=np.float32)
        self.popularity = np.maximum(counts, 0.0).astype(np.float32)
        self.noise_std = float(mech.sigma)
        run.record(self, release)
        self._mark_fitted(n)
        return self

    # ---- the DP part and the popularity prior (the blend: `blend.ContentDPBlend`) ---------------
    def _cf_scores(self, h: sp.csr_matrix) -> np.ndarray:
        return row_scaled(np.asarray((h @ self.pairs).todense(), dtype=np.float64))

    def _explain_cf(self, history: UserHistory, item: int, h: sp.csr_matrix) -> Explanation:
        hh = self._history_input(h)
        col = np.asarray(self.pairs[:, item].todense()).ravel()
        items = hh.indices.astype(np.int64)
        return history_explanation(history, item, items, hh.data.astype(np.float64) * col[items])

    def _popularity(self, weight: float) -> np.ndarray:
        p = self.popularity.astype(np.float64)
        top = math.log1p(float(p.max())) if p.size else 0.0
        lp = np.log1p(p) / top if top > 0 else np.zeros_like(p)
        return np.asarray(weight * lp)

    # ---- persistence -----------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        s = self.pairs
        return {
            **components_state(self.components),
            "popularity": self.popularity,
            "pairs_data": s.data,
            "pairs_indices": s.indices.astype(np.int32),
            "pairs_indptr": s.indptr.astype(np.int64),
        }

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        comps = restore_components(
            {k: v for k, v in arrays.items() if k.startswith("content.")}, meta["components"]
        )
        self.content = comps["content"]  # type: ignore[assignment]
        self.popularity = arrays["popularity"].astype(np.float32)
        n = self.popularity.size
        self.pairs = sp.csr_matrix(
            (arrays["pairs_data"], arrays["pairs_indices"], arrays["pairs_indptr"]),
            shape=(n, n),
            dtype=np.float32,
        )
        self.noise_std = float(meta.get("noise_std", 0.0))
        self._read_marker(meta)

    def _meta(self) -> dict[str, Any]:
        return {
            "components": components_meta(self.components),
            "noise_std": self.noise_std,
            **self._marker_meta(),
        }
