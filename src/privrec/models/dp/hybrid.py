"""DP hybrid: public item text plus one user-level DP co-occurrence release.

The content model reads no interactions at all: item vectors come from the item text (the shop's
public catalogue) through the pretrained sentence encoder, and a shopper's profile is built from
their own history at request time. Nobody else's data enters it, so it costs no privacy budget.
This is the billboard model of DP recommendation (also the setting of DP item-kNN / DP EASE here):
what is released and shared is differentially private; each shopper's own history is used only
for their own recommendations. The collaborative part is one DP model (`dp_itemknn` or
`dp_ease`), the only release, recorded in the ledger; its noisy selection counts give the
popularity part for free (post-processing).

Score of item i for a history h:

    content_weight * cos(profile(h), e_i)                  (in [-1, 1])
  + cf_weight * s_i(h) / max_j |s_j(h)|                  (DP model, selected items; 0 for the rest)
  + popularity_weight * log1p(1000 p_i) / log1p(1000)    (p: noisy counts / their maximum)

The guarantee is the DP component's (unit: one user; adjacency: add/remove one user). A LoRA
adapter is refused: it is trained on shoppers' interactions, outside the release. At epsilon = inf
nothing is noised (no guarantee); with `fit(..., noise_seed=)` the noise is reproducible and the
model is no DP release either.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field, field_validator

from privrec.core.errors import ConfigError
from privrec.core.rng import DEFAULT_SEED
from privrec.core.types import Explanation, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.base import ModelConfig, Recommender, register, seed_from
from privrec.models.content import ContentRecommender
from privrec.models.dp.blend import ContentDPBlend, row_scaled
from privrec.models.dp.ease import DPEASE
from privrec.models.dp.itemknn import DPItemKNN
from privrec.models.dp.release import DPArtifact
from privrec.models.hybrid import components_meta, components_state, restore_components
from privrec.privacy.dp import Release
from privrec.privacy.ledger import PrivacyLedger

CF_MODELS: dict[str, type[DPEASE] | type[DPItemKNN]] = {"dp_itemknn": DPItemKNN, "dp_ease": DPEASE}
_POP_SCALE = 1000.0  # log1p(1000 p): item counts are heavy-tailed


class DPHybridConfig(ModelConfig):
    """DP hybrid settings.

    Attributes:
        epsilon: user-level budget of the DP component's one release (inf: no noise, no guarantee).
        cf: the DP component, "dp_itemknn" or "dp_ease".
        cf_params: its other parameters (epsilon comes from `epsilon`).
        content_params: parameters of the content component (no `adapter`: see the module
            docstring).
        content_weight, cf_weight, popularity_weight: the blend (see the module docstring).
        seed: kept for the contract; the DP noise is never seeded (see `fit`).
    """

    epsilon: float = Field(default=1.0, gt=0.0)
    cf: str = "dp_itemknn"
    cf_params: dict[str, Any] = Field(default_factory=dict)
    content_params: dict[str, Any] = Field(default_factory=dict)
    content_weight: float = Field(default=1.0, ge=0.0)
    cf_weight: float = Field(default=0.2, ge=0.0)
    popularity_weight: float = Field(default=0.05, ge=0.0)
    seed: int = DEFAULT_SEED

    @field_validator("cf")
    @classmethod
    def _cf_ok(cls, v: str) -> str:
        if v not in CF_MODELS:
            raise ValueError(f"cf: {v!r} is not one of {sorted(CF_MODELS)}")
        return v

    @field_validator("cf_params")
    @classmethod
    def _cf_params_ok(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "epsilon" in v:
            raise ValueError(
                "cf_params: give the budget as the hybrid's `epsilon`, not inside cf_params"
            )
        return v

    @field_validator("content_params")
    @classmethod
    def _content_ok(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v.get("adapter"):
            raise ValueError(
                "content_params.adapter: a LoRA adapter is trained on shoppers' interactions, "
                "outside the DP release; use the pretrained encoder"
            )
        if v.get("model_path"):
            # a fine-tuned encoder folder would carry shoppers' interactions in by another door;
            # which data a folder was trained on cannot be checked, so only the bundled one goes
            raise ValueError(
                "content_params.model_path: only the bundled pretrained encoder is allowed in a "
                "DP model (an encoder fine-tuned on the shop's data would be outside the release)"
            )
        return v


@register
class DPHybrid(DPArtifact, ContentDPBlend):
    """Content (public item text) + one DP collaborative release (see the module docstring)."""

    name = "dp_hybrid"
    Config = DPHybridConfig
    config: DPHybridConfig

    def __init__(self, config: DPHybridConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        c = self.config
        try:
            self.content = ContentRecommender(**c.content_params)
            self.cf: DPEASE | DPItemKNN = CF_MODELS[c.cf](epsilon=c.epsilon, **c.cf_params)
        except ConfigError as exc:
            raise ConfigError(f"{self.name}: {exc}") from exc

    @property
    def release(self) -> Release | None:
        """What the ledger recorded: the DP component's one release (in memory only)."""
        return self.cf.release

    @property
    def components(self) -> dict[str, Recommender]:
        return {"content": self.content, "cf": self.cf}

    def fit(
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
        noise_seed: int | None = None,
    ) -> DPHybrid:
        """Embed the item text (no interactions read), then the DP component's one release.

        Args:
            dataset: the training interactions.
            rng: passed to the DP component (never seeds its noise).
            ledger: charged by the DP component before any noise is drawn.
            noise_seed: tests and benchmarks only: reproducible noise, no DP release.
        """
        self.content.fit(dataset)
        self.cf.fit(
            dataset, rng=seed_from(rng, self.config.seed), ledger=ledger, noise_seed=noise_seed
        )
        self.privacy = self.cf.privacy
        self.reproducible_noise = self.cf.reproducible_noise
        self._mark_fitted(dataset.n_items)
        return self

    # ---- the DP part and the popularity prior (the blend: `blend.ContentDPBlend`) ---------------
    def _cf_scores(self, h: sp.csr_matrix) -> np.ndarray:
        cf = np.zeros((h.shape[0], self.n_items))
        cf[:, self.cf.selected] = row_scaled(self.cf.selected_scores(h))
        return cf

    def _explain_cf(self, history: UserHistory, item: int, h: sp.csr_matrix) -> Explanation:
        return self.cf.explain(history, item)

    def _popularity(self, weight: float) -> np.ndarray:
        p = np.maximum(self.cf.popularity.astype(np.float64), 0.0)
        p = p / p.max() if p.size and p.max() > 0 else p
        return np.asarray(weight * np.log1p(_POP_SCALE * p) / math.log1p(_POP_SCALE))

    # ---- persistence --------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return components_state(self.components)

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        comps = restore_components(arrays, meta["components"])
        self.content = comps["content"]  # type: ignore[assignment]
        self.cf = comps["cf"]  # type: ignore[assignment]
        self._read_marker(meta)

    def _meta(self) -> dict[str, Any]:
        return {"components": components_meta(self.components), **self._marker_meta()}
