"""DP EASE shrunk towards a public text prior (issue 16, item 4: public item features as a prior).

The release is DP EASE's own (`dp.ease`, unchanged: selection and one noisy Gram, charged before
any noise). Only the post-processing differs: EASE's ridge pulls B towards a prior B0 built from
public item text instead of towards 0,

    B = argmin ||X - X B||^2 + lambda ||B - B0||^2,  diag(B) = 0
      = I - lambda P + lambda P B0 - P diag(mu),  P = (G + lambda I)^-1,

with mu making the diagonal 0 and G the denoised released Gram. B0 = beta S: S holds the cosine
similarities of the selected items' MiniLM title vectors (each column's `prior_k` largest kept,
diagonal 0), and beta = tr(G S) / tr(S G S) is the least-squares scale of S under the EASE loss
on the released G (post-processing of the release: no tuned weight). lambda is DP EASE's
noise-adapted ridge. Item text is public (the catalogue); it never carries a shopper's data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field

from privrec.core.errors import ConfigError
from privrec.data.dataset import InteractionDataset
from privrec.models.base import register
from privrec.models.dp.ease import DPEASE, DPEASEConfig
from privrec.models.ease import ease_weights
from privrec.privacy.ledger import PrivacyLedger

__all__ = ["DPEASEPrior", "DPEASEPriorConfig", "ease_towards_prior", "text_prior"]


class DPEASEPriorConfig(DPEASEConfig):
    """DP EASE with a text prior (plus the settings of `DPEASEConfig`).

    Attributes:
        prior_k: nearest text neighbours kept per item in S.
        content_params: settings of the content model that encodes the item text (e.g.
            cache_dir, model_path); see `models.content.ContentConfig`.
    """

    prior_k: int = Field(default=20, ge=1)
    content_params: dict[str, Any] = Field(default_factory=dict)


def text_prior(vectors: np.ndarray, k: int) -> np.ndarray:
    """S: cosine similarities of unit `vectors`, each column's k largest kept, diagonal 0."""
    e = np.asarray(vectors, dtype=np.float64)
    s = e @ e.T
    np.fill_diagonal(s, -np.inf)
    m = s.shape[0]
    k = min(int(k), m - 1)
    out = np.zeros_like(s)
    if k <= 0:
        return out
    idx = np.argpartition(-s, k - 1, axis=0)[:k]
    cols = np.broadcast_to(np.arange(m), idx.shape)
    out[idx, cols] = np.maximum(s[idx, cols], 0.0)
    return out


def ease_towards_prior(gram: np.ndarray, ridge: float, prior: np.ndarray) -> np.ndarray:
    """B minimising ||X - XB||^2 + ridge ||B - beta S||^2 with diag(B) = 0 (float32).

    beta = tr(G S) / tr(S^T G S), clipped at 0 (S = `prior`); beta = 0 gives plain EASE.
    """
    g = np.asarray(gram, dtype=np.float64)
    s = np.asarray(prior, dtype=np.float64)
    gs = g @ s
    den = float(np.sum(s * gs))
    beta = max(float(np.trace(gs)) / den, 0.0) if den > 0 else 0.0
    if beta == 0.0:
        return ease_weights(g, ridge)
    m = g.shape[0]
    p = np.linalg.inv(g + ridge * np.eye(m))
    b = np.eye(m) - ridge * p + ridge * beta * (p @ s)
    b -= p * (np.diag(b) / np.diag(p))[None, :]
    np.fill_diagonal(b, 0.0)
    return b.astype(np.float32)


@register
class DPEASEPrior(DPEASE):
    """DP EASE whose ridge shrinks towards a public item-text prior (module docstring)."""

    name = "dp_ease_prior"
    Config = DPEASEPriorConfig
    config: DPEASEPriorConfig

    def __init__(self, config: DPEASEPriorConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self._vectors: np.ndarray | None = None  # every item's text vector (fit only)
        # B without the prior from the same release (in memory only): a paired diagnostic
        self.plain_weights: np.ndarray | None = None

    def fit(
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
        noise_seed: int | None = None,
    ) -> DPEASEPrior:
        """Encode the public item text, then DP EASE's release and the prior-shrunk solve."""
        from privrec.models.content import ContentRecommender

        if not dataset.item_meta.drop(columns=["item"], errors="ignore").notna().any().any():
            raise ConfigError(
                "dp_ease_prior: the dataset has no item text (titles, descriptions) to build "
                "the prior from; use dp_ease"
            )
        content = ContentRecommender(**{"binary": True, **self.config.content_params})
        self._vectors = content.fit(dataset).item_embeddings
        try:
            super().fit(dataset, rng=rng, ledger=ledger, noise_seed=noise_seed)
        finally:
            self._vectors = None
        return self

    def _solve(self, gram: np.ndarray, ridge: float) -> np.ndarray:
        if self._vectors is None:
            raise ConfigError("dp_ease_prior: fit it through fit(); the text vectors are missing")
        s = text_prior(self._vectors[self.selected], self.config.prior_k)
        d = self.item_scale
        if d is not None:  # the solve is in the item-scaled space: B' = D^-1 B D
            s = s * d[None, :] / d[:, None]
        self.plain_weights = ease_weights(gram, ridge)
        d = self.item_scale
        if d is not None and not np.all(d == 1.0):
            self.plain_weights = (d[:, None] * self.plain_weights / d[None, :]).astype(np.float32)
        return ease_towards_prior(gram, ridge, s)
