"""Hybrid recommender with explicit cold-start routing.

Components (each an ordinary privrec model, fitted on the same data):
    "cf"          collaborative filtering (EASE by default; any registered model name);
    "sequential"  optional, e.g. "sasrec" when that model is available (None: left out);
    "content"     the text model (`ContentRecommender`), always present;
    "popularity"  the `Popularity` model.

Per user, each component's scores are normalised over the items (z-score of the row: minus its
mean, divided by its standard deviation; popularity is first log-scaled, log1p(1000 * p), since
item counts are heavy-tailed), and the hybrid score is the weighted sum sum_c w_c z_c.

Routing (visible in `route_for`, `recommend_with_route` and the kind of `explain`):
    "cold_user"       a history with at most `cold_user_max_items` (default 2) distinct items,
                      an empty one included: served from `cold_components` only (default content +
                      popularity), with their own weights (`cold_weights`);
    "warm"            everything else: all components with the warm `weights`;
    "cold_item-boost" (per item, for a warm user) an item with no training interaction: CF,
                      sequential and popularity know nothing about it, so their normalised score
                      for it is set to 0 (the row mean: neither pushed up nor down), its content
                      score counts as usual, and a boost is added (`cold_item_boost`, or fitted:
                      see below). The same treatment applies to new items in the cold-user route.

Weights and the new-item boost are fitted on a validation split carved out of the training data
(`models.hybrid_tuning`), then the components are refitted on all the training data
(`refit=True`). Fixed `weights` / `cold_weights` skip the search (and a None boost is then 0).

History rows: the hybrid's `history_matrix` / `input_matrix` are the content model's
(recency- and event-type-weighted, see `privrec.models.content`); binary CF models such as EASE
only see which items are present. A sequential component needs the order, which a matrix row does
not keep: use `score` / `score_histories` (ordered histories) to give it the order; `score_matrix`
passes it the row only.

Attribution and unlearning: `contributions` is None (each component's row is z-scored per user,
which is no sum over history entries); `explain` passes on the strongest component's contributors.
`can_forget` is False: the route weights were fitted on the users' validation events.

Saving: one `state.safetensors` holds every component's arrays under "<component>.<name>" and
config.json each component's model name, config and metadata (`models.hybrid_components`), so
`Recommender.load` restores the whole hybrid.

Serving (`score`, one history per request): `config.candidates` = N scores only the components'
top N exactly (None, the default: every item, the same numbers as `score_histories`), and the
request's scoring is kept for its explanations (`hybrid_serving`).

Where the parts live: settings in `hybrid_config`, building / fitting / saving the components in
`hybrid_components`, z-scores and the weighted sum in `hybrid_blend`, the weight search in
`hybrid_tuning`, routes and their explanations in `hybrid_routes`, per-request serving in
`hybrid_serving`; this module holds the model.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from privrec.core.types import Explanation, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.data.splitters import validation_split
from privrec.models.base import Recommender, register, seed_from, top_k
from privrec.models.content import ContentRecommender
from privrec.models.hybrid_blend import blend, component_z, normalise_weights
from privrec.models.hybrid_components import (
    build_components,
    components_meta,
    components_state,
    fit_components,
    restore_components,
)
from privrec.models.hybrid_config import HybridConfig
from privrec.models.hybrid_routes import (
    HybridResult,
    cold_rows,
    explain_route,
    is_new_item,
    item_routes,
)
from privrec.models.hybrid_serving import (
    RequestView,
    ServingState,
    ViewComponents,
    ViewMemo,
    score_view,
)
from privrec.models.hybrid_tuning import WeightSearch

if TYPE_CHECKING:
    from privrec.privacy.ledger import PrivacyLedger

log = logging.getLogger(__name__)

# components_meta, components_state and restore_components are used here and stay importable from
# here: the DP hybrid imports them from this module.
__all__ = [
    "HybridConfig",
    "HybridRecommender",
    "HybridResult",
    "components_meta",
    "components_state",
    "restore_components",
]


@register
class HybridRecommender(Recommender):
    """CF + sequential + content + popularity, validation-fitted weights, cold-start routes."""

    name = "hybrid"
    Config = HybridConfig
    config: HybridConfig

    def __init__(self, config: HybridConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.components: dict[str, Recommender] = build_components(self.config)
        self.weights: dict[str, float] = {}
        self.cold_weights: dict[str, float] = {}
        self.item_boost = 0.0  # added to new items' scores (config.cold_item_boost or fitted)
        self.item_events = np.zeros(0, np.int64)  # training interactions per item (0: a new item)
        self.tuning: dict[str, Any] = {}
        # serving state (never saved): see `privrec.models.hybrid_serving`
        self._views = ViewMemo()
        self._serving: ServingState | None = None

    @property
    def content(self) -> ContentRecommender:
        """The content component."""
        return self.components["content"]  # type: ignore[return-value]

    # ---- training ---------------------------------------------------------------------------
    def fit(
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
    ) -> HybridRecommender:
        """Fit the components, fit the route weights on a validation split, refit (see module
        docstring). A given `ledger` is passed to every component fit (a DP component charges it
        for each of its fits)."""
        c = self.config
        seed = seed_from(rng, c.seed)
        t0 = time.perf_counter()
        self.components = build_components(c)
        if c.weights is not None and c.cold_weights is not None:
            fit_components(self.components, dataset, seed, content=True, ledger=ledger)
            self.weights = normalise_weights(c.weights, list(self.components))
            self.cold_weights = normalise_weights(c.cold_weights, list(c.cold_components))
            self.item_boost = float(c.cold_item_boost or 0.0)
            self.tuning = {"fixed": True}
        else:
            sub, valid = validation_split(dataset, protocol="leave_one_out")
            fit_components(self.components, sub, seed, content=True, ledger=ledger)
            self._set_item_events(sub)
            self._mark_fitted(dataset.n_items)
            weights, cold, boost, info = WeightSearch(
                c, self.components, self.item_events, self.n_items
            ).tune(sub, valid, seed)
            self.item_boost = float(c.cold_item_boost) if c.cold_item_boost is not None else boost
            self.weights = (
                normalise_weights(c.weights, list(self.components))
                if c.weights is not None
                else weights
            )
            self.cold_weights = (
                normalise_weights(c.cold_weights, list(c.cold_components))
                if c.cold_weights is not None
                else cold
            )
            self.tuning = info
            if c.refit:
                fit_components(self.components, dataset, seed, content=False, ledger=ledger)
        self._set_item_events(dataset)
        self._mark_fitted(dataset.n_items)
        self.tuning["fit_seconds"] = round(time.perf_counter() - t0, 3)
        log.info("hybrid fitted weights=%s cold_weights=%s", self.weights, self.cold_weights)
        return self

    def _set_item_events(self, dataset: InteractionDataset) -> None:
        self.item_events = np.bincount(dataset.item_idx, minlength=dataset.n_items).astype(np.int64)

    # ---- scoring ------------------------------------------------------------------------------
    def history_matrix(self, histories: list[UserHistory]) -> sp.csr_matrix:
        """History rows as the content component weighs them (recency and event type)."""
        return self.content.history_matrix(histories)

    def input_matrix(self, dataset: InteractionDataset) -> sp.csr_matrix:
        """Every user's history row as the content component weighs it."""
        return self.content.input_matrix(dataset)

    def _component_z(
        self, name: str, h: sp.csr_matrix, histories: list[UserHistory] | None
    ) -> np.ndarray:
        return component_z(
            name, self.components[name], h, histories, self.item_events, self.n_items
        )

    def _score(self, h: sp.csr_matrix, histories: list[UserHistory] | None) -> np.ndarray:
        h = self._history_input(h)
        cold = cold_rows(h, self.config.cold_user_max_items)
        out = np.empty((h.shape[0], self.n_items), np.float32)
        for rows, weights in (
            (np.nonzero(~cold)[0], self.weights),
            (np.nonzero(cold)[0], self.cold_weights),
        ):
            if rows.size:
                hs = None if histories is None else [histories[i] for i in rows.tolist()]
                out[rows] = blend(
                    self.components,
                    weights,
                    h[rows],
                    hs,
                    self.item_events,
                    self.n_items,
                    self.item_boost,
                )
        return out

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        """Hybrid scores per history row: cold-user rows by content + popularity, others by all."""
        self._check_fitted()
        return self._score(histories, None)

    def score_histories(self, histories: list[UserHistory]) -> np.ndarray:
        """Like score_matrix, from ordered histories (a sequential component sees the order,
        the content component the search queries)."""
        self._check_fitted()
        return self._score(self.history_matrix(histories), histories)

    def score(self, history: UserHistory, items: np.ndarray | None = None) -> np.ndarray:
        """Hybrid scores of all items (or of `items`) for one history: the serving path.

        With `config.candidates` unset every item is scored (the same numbers as
        `score_histories`); with it set, the candidates are scored exactly and the rest placed
        below them (`privrec.models.hybrid_serving`). The scoring is kept for this thread's
        explanations of the same history object.
        """
        s = self.serve_view(history).scores
        return s if items is None else s[np.asarray(items, dtype=np.int64)]

    def serve_view(self, history: UserHistory) -> RequestView:
        """Score one history for serving (see `score`) and keep the view for its explanations."""
        self._check_fitted()
        view = score_view(self, history, self._serving_state(), self.config.candidates)
        self._views.put(view)
        return view

    def _serving_state(self) -> ServingState | None:
        """Candidate scoring's state (None when candidates are off), rebuilt when the content
        model's item vectors or the sequential network were replaced."""
        if self.config.candidates is None:
            return None
        got = self._serving
        if got is None or not got.valid_for(self):
            got = self._serving = ServingState(self)
        return got

    def prepare_serving(self) -> None:
        """Build candidate scoring's state and graphs now rather than on the first request."""
        state = self._serving_state()
        if state is not None:
            state.content.index()

    def reset_serving(self) -> None:
        """Drop the serving state (call after item vectors were changed in place)."""
        self._serving = None
        self._views.clear()

    # ---- routes -------------------------------------------------------------------------------
    def route_for(self, history: UserHistory, item: int | None = None) -> str:
        """ "cold_user" for a history of at most `cold_user_max_items` distinct items; else
        "cold_item-boost" when `item` has no training interaction; else "warm"."""
        self._check_fitted()
        if self.history_matrix([history]).nnz <= self.config.cold_user_max_items:
            return "cold_user"
        if item is not None and self.is_new_item(item):
            return "cold_item-boost"
        return "warm"

    def is_new_item(self, item: int) -> bool:
        """True for an item with no training interaction."""
        return is_new_item(self.item_events, item)

    def recommend_with_route(
        self,
        history: UserHistory,
        k: int = 10,
        *,
        exclude: np.ndarray | list[int] | None = None,
        exclude_history: bool = True,
    ) -> HybridResult:
        """`recommend`, plus the route taken for the user and for each item."""
        self._check_fitted()
        s = self.score(history).astype(np.float64, copy=True)
        if exclude_history and len(history):
            ok = (history.items >= 0) & (history.items < self.n_items)
            s[history.items[ok]] = -np.inf
        if exclude is not None:
            s[np.asarray(exclude, dtype=np.int64)] = -np.inf
        items, scores = top_k(s, k)
        route = self.route_for(history)
        weights = self.cold_weights if route == "cold_user" else self.weights
        return HybridResult(
            items=items,
            scores=scores,
            route=route,
            item_routes=item_routes(route, items, self.item_events),
            weights=dict(weights),
        )

    def explain(self, history: UserHistory, item: int) -> Explanation:
        """The route (kind "cold_user", "cold_item" or the strongest component's kind) and why."""
        self._check_fitted()
        item = int(item)
        view = self._views.get(history)
        if view is not None and view.explainable and 0 <= item < self.n_items:
            # the same request's scoring: no second pass over the components (same results)
            route = view.route
            if route == "warm" and self.is_new_item(item):
                route = "cold_item-boost"
            parts = {n: float(w * view.z(n, item)) for n, w in view.weights.items() if w}
            comps = ViewComponents(self, view, self._serving)
            return explain_route(route, parts, comps, history, item)
        route = self.route_for(history, item)
        weights = self.cold_weights if route == "cold_user" else self.weights
        h = self.history_matrix([history])
        parts = {
            n: float(w * self._component_z(n, h, [history])[0, item])
            for n, w in weights.items()
            if w
        }
        return explain_route(route, parts, self.components, history, item)

    # ---- persistence --------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        return {"item_events": self.item_events, **components_state(self.components)}

    def _derived(self) -> dict[str, np.ndarray]:
        return components_state(self.components, derived=True)

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.item_events = arrays["item_events"].astype(np.int64)
        self.components = restore_components(arrays, meta["components"])
        self.weights = {str(k): float(v) for k, v in meta["weights"].items()}
        self.cold_weights = {str(k): float(v) for k, v in meta["cold_weights"].items()}
        self.item_boost = float(meta.get("item_boost", 0.0))
        self.tuning = dict(meta.get("tuning", {}))

    def _meta(self) -> dict[str, Any]:
        return {
            "components": components_meta(self.components),
            "weights": self.weights,
            "cold_weights": self.cold_weights,
            "item_boost": self.item_boost,
            "tuning": self.tuning,
        }
