"""Settings of the hybrid recommender: its components, the route weights and their search.

The components are "cf" (any registered model name), "sequential" (optional), "content" and
"popularity"; see `privrec.models.hybrid` for how they are blended and routed.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from privrec.models.base import ModelConfig

__all__ = ["COLD_COMPONENTS", "COMPONENTS", "HybridConfig"]

COMPONENTS: tuple[str, ...] = ("cf", "sequential", "content", "popularity")
COLD_COMPONENTS: tuple[str, ...] = ("content", "popularity")


class HybridConfig(ModelConfig):
    """Hybrid settings.

    Attributes:
        cf: registered model name of the CF component (None: no CF component).
        cf_params: its parameters.
        sequential: registered model name of an optional sequential component (e.g. "sasrec").
        sequential_params: its parameters.
        content_params: parameters of the content component.
        popularity_params: parameters of the popularity component.
        weights: fixed warm-route weights per component (None: fitted on validation).
        cold_weights: fixed cold-route weights, keys among `cold_components` (None: fitted).
        cold_components: the components the cold-user route uses (default content + popularity;
            add "cf" to let item-item CF serve users with one or two items too).
        cold_user_max_items: histories with at most this many distinct items take the cold route.
        cold_item_boost: added to the score of items with no training interaction (None: fitted).
        cold_item_fraction: share of items treated as new when fitting the boost.
        cold_item_boost_grid: the boosts tried.
        max_valid_users: at most this many validation users for each weight search.
        grid: the weight values the coordinate search tries.
        rounds: passes of the coordinate search.
        refit: refit the components on all training data after the weight search.
        seed: sampling of validation users (and the components' seed when fit() gets none).
        candidates: serving only (`score`, one history at a time): score exactly only the top
            `candidates` items of each component (content's through a nearest-neighbour graph)
            and place the others below them (`privrec.models.hybrid_serving`); None: score
            every item. `score_matrix` / `score_histories` (evaluation) always score every item.
        candidate_ann: content candidates from a usearch HNSW graph (False: an exact product).
    """

    cf: str | None = "ease"
    cf_params: dict[str, Any] = Field(default_factory=dict)
    sequential: str | None = None
    sequential_params: dict[str, Any] = Field(default_factory=dict)
    content_params: dict[str, Any] = Field(default_factory=dict)
    popularity_params: dict[str, Any] = Field(default_factory=dict)
    weights: dict[str, float] | None = None
    cold_weights: dict[str, float] | None = None
    cold_components: tuple[str, ...] = COLD_COMPONENTS
    cold_user_max_items: int = Field(default=2, ge=0)
    cold_item_boost: float | None = None
    cold_item_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)
    cold_item_boost_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
    max_valid_users: int = Field(default=2000, ge=1)
    grid: tuple[float, ...] = (0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
    rounds: int = Field(default=2, ge=1)
    refit: bool = True
    seed: int = 42
    candidates: int | None = Field(default=None, ge=1)
    candidate_ann: bool = True

    @field_validator("grid")
    @classmethod
    def _grid_ok(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v or any(x < 0 for x in v):
            raise ValueError("grid: give at least one non-negative weight")
        return v

    @field_validator("cold_components")
    @classmethod
    def _cold_ok(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [k for k in v if k not in COMPONENTS]
        if bad or not v or len(set(v)) != len(v):
            raise ValueError(f"give distinct components among {list(COMPONENTS)}; got {list(v)}")
        return v

    @field_validator("weights", "cold_weights")
    @classmethod
    def _weights_ok(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        if v is not None:
            bad = [k for k in v if k not in COMPONENTS]
            if bad:
                raise ValueError(f"unknown component(s) {bad}; components are {list(COMPONENTS)}")
            if any(x < 0 for x in v.values()) or not any(x > 0 for x in v.values()):
                raise ValueError("weights must be non-negative with at least one positive")
        return v
