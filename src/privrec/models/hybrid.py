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

Weights are fitted on a validation split carved out of the training data: each user's last
training event is held out (`validation_split(protocol="leave_one_out")`), the components are
fitted on the rest, and a coordinate search over `grid` (`rounds` passes) maximises NDCG@10 of the
held-out item (full ranking, training items masked) for up to `max_valid_users` sampled users with
more than `cold_user_max_items` items. The cold weights are fitted the same way on validation users
whose history is cut to their last 1..cold_user_max_items events (a simulated new user). The
new-item boost (when `cold_item_boost` is None) is fitted on the warm validation users with a
seeded `cold_item_fraction` of the items made "new" for the occasion (their CF / sequential /
popularity scores neutral, as for a real new item): the boost in `cold_item_boost_grid` with the
best NDCG@10 over all those users, so it trades the new items' chances against the others'. Then
the components are refitted on all the training data (`refit=True`). Fixed `weights` /
`cold_weights` skip the search (and a None boost is then 0).

History rows: the hybrid's `history_matrix` / `input_matrix` are the content model's
(recency- and event-type-weighted, see `privrec.models.content`); binary CF models such as EASE
only see which items are present. A sequential component needs the order, which a matrix row does
not keep: use `score` / `score_histories` (ordered histories) to give it the order; `score_matrix`
passes it the row only.

Attribution and unlearning: `contributions` is None (each component's row is z-scored per user,
which is no sum over history entries); `explain` passes on the strongest component's contributors.
`can_forget` is False: the route weights were fitted on the users' validation events.

Saving: one `state.safetensors` holds every component's arrays under "<component>.<name>" and
config.json holds each component's model name, config and metadata, so `Recommender.load` restores
the whole hybrid (and the shared conformance suite's two-file layout holds).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field, field_validator

from privrec.core.errors import ConfigError
from privrec.core.types import Explanation, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.data.splitters import validation_split
from privrec.models.base import ModelConfig, Recommender, model_class, register, seed_from, top_k
from privrec.models.content import ContentRecommender
from privrec.models.ease import EASE  # noqa: F401  (registers "ease", the default CF component)
from privrec.models.itemknn import ItemKNN  # noqa: F401  (registers "itemknn", the other item-item CF)
from privrec.models.popularity import Popularity
from privrec.privacy.guarantee import PrivacyGuarantee

if TYPE_CHECKING:
    from privrec.privacy.ledger import PrivacyLedger

log = logging.getLogger(__name__)

__all__ = ["COMPONENTS", "HybridConfig", "HybridRecommender", "HybridResult"]

COMPONENTS: tuple[str, ...] = ("cf", "sequential", "content", "popularity")
COLD_COMPONENTS: tuple[str, ...] = ("content", "popularity")
ROUTES: tuple[str, ...] = ("warm", "cold_user", "cold_item-boost")


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


@dataclass
class HybridResult:
    """Recommendations with the route that produced them.

    Attributes:
        items, scores: the top-k item indices and hybrid scores, best first.
        route: "warm" or "cold_user" (the user's route).
        item_routes: per item, "cold_item-boost" for items with no training interaction, else the
            user's route.
        weights: the component weights the route used.
    """

    items: np.ndarray
    scores: np.ndarray
    route: str
    item_routes: list[str] = field(default_factory=list)
    weights: dict[str, float] = field(default_factory=dict)


def _component_class(name: str) -> type[Recommender]:
    """The registered class of a component; its module must have been imported (the zoo imports
    every model module; this module imports the classic ones itself)."""
    try:
        return model_class(name)
    except ConfigError as exc:
        raise ConfigError(
            f"{exc}; import privrec.models.zoo (or the model's module) to register every model"
        ) from None


# ---- components inside one artifact (also used by `dp_hybrid`) ---------------------------------
def components_state(
    components: dict[str, Recommender], *, derived: bool = False
) -> dict[str, np.ndarray]:
    """Every component's arrays (or derived arrays) under "<component>.<name>"."""
    return {
        f"{name}.{key}": arr
        for name, comp in components.items()
        for key, arr in (comp._derived() if derived else comp._state()).items()
    }


def components_meta(components: dict[str, Recommender]) -> dict[str, Any]:
    """What `restore_components` needs besides the arrays: model name, config, privacy, metadata."""
    return {
        name: {
            "model": comp.name,
            "config": comp.config.model_dump(mode="json"),
            "n_items": comp.n_items,
            "privacy": comp.privacy.to_dict() if comp.privacy else None,
            "meta": comp._meta(),
        }
        for name, comp in components.items()
    }


def restore_components(
    arrays: dict[str, np.ndarray], docs: dict[str, Any]
) -> dict[str, Recommender]:
    """Fitted components rebuilt from `components_state` arrays and `components_meta` documents."""
    comps: dict[str, Recommender] = {}
    for name, doc in docs.items():
        klass = _component_class(doc["model"])
        comp = klass(klass.Config(**doc["config"]))
        comp.n_items = int(doc["n_items"])
        if doc.get("privacy"):
            comp.privacy = PrivacyGuarantee(**doc["privacy"])
        prefix = f"{name}."
        comp._set_state(
            {k[len(prefix) :]: v for k, v in arrays.items() if k.startswith(prefix)},
            doc.get("meta", {}),
        )
        comp._fitted = True
        comps[name] = comp
    return comps


def _zscore(x: np.ndarray) -> np.ndarray:
    """Row-wise (x - mean) / std in float32; constant rows become 0."""
    x = np.asarray(x, dtype=np.float32)
    mean = x.mean(axis=1, keepdims=True, dtype=np.float64)
    std = x.std(axis=1, keepdims=True, dtype=np.float64)
    out = (x - mean.astype(np.float32)) / np.where(std > 1e-12, std, 1.0).astype(np.float32)
    out[np.ravel(std <= 1e-12)] = 0.0
    return out


@register
class HybridRecommender(Recommender):
    """CF + sequential + content + popularity, validation-fitted weights, cold-start routes."""

    name = "hybrid"
    Config = HybridConfig
    config: HybridConfig

    def __init__(self, config: HybridConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.components: dict[str, Recommender] = self._build_components()
        self.weights: dict[str, float] = {}
        self.cold_weights: dict[str, float] = {}
        self.item_boost = 0.0  # added to new items' scores (config.cold_item_boost or fitted)
        self.item_events = np.zeros(0, np.int64)  # training interactions per item (0: a new item)
        self.tuning: dict[str, Any] = {}

    # ---- components -------------------------------------------------------------------------
    def _build_components(self) -> dict[str, Recommender]:
        c = self.config
        out: dict[str, Recommender] = {}
        try:
            if c.cf is not None:
                out["cf"] = _component_class(c.cf)(**c.cf_params)
            if c.sequential is not None:
                out["sequential"] = _component_class(c.sequential)(**c.sequential_params)
            out["content"] = ContentRecommender(**c.content_params)
            out["popularity"] = Popularity(**c.popularity_params)
        except ConfigError as exc:
            raise ConfigError(f"hybrid: {exc}") from exc
        for key in (*(c.weights or {}), *(c.cold_weights or {})):
            if key not in out:
                raise ConfigError(
                    f"hybrid.weights: {key!r} is not a component of this hybrid ({list(out)})"
                )
        missing = [k for k in c.cold_components if k not in out]
        if missing:
            raise ConfigError(
                f"hybrid.cold_components: {missing} not among this hybrid's components "
                f"({list(out)})"
            )
        if c.cold_weights is not None and any(k not in c.cold_components for k in c.cold_weights):
            raise ConfigError(
                f"hybrid.cold_weights: the cold route uses only {list(c.cold_components)} "
                "(cold_components)"
            )
        return out

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
        self.components = self._build_components()
        if c.weights is not None and c.cold_weights is not None:
            self._fit_components(dataset, seed, content=True, ledger=ledger)
            self.weights = self._full(c.weights, list(self.components))
            self.cold_weights = self._full(c.cold_weights, list(c.cold_components))
            self.item_boost = float(c.cold_item_boost or 0.0)
            self.tuning = {"fixed": True}
        else:
            sub, valid = validation_split(dataset, protocol="leave_one_out")
            self._fit_components(sub, seed, content=True, ledger=ledger)
            self._set_item_events(sub)
            self._mark_fitted(dataset.n_items)
            weights, cold, boost, info = self._tune(sub, valid, seed)
            self.item_boost = float(c.cold_item_boost) if c.cold_item_boost is not None else boost
            self.weights = (
                self._full(c.weights, list(self.components)) if c.weights is not None else weights
            )
            self.cold_weights = (
                self._full(c.cold_weights, list(c.cold_components))
                if c.cold_weights is not None
                else cold
            )
            self.tuning = info
            if c.refit:
                self._fit_components(dataset, seed, content=False, ledger=ledger)
        self._set_item_events(dataset)
        self._mark_fitted(dataset.n_items)
        self.tuning["fit_seconds"] = round(time.perf_counter() - t0, 3)
        log.info("hybrid fitted weights=%s cold_weights=%s", self.weights, self.cold_weights)
        return self

    def _fit_components(
        self,
        dataset: InteractionDataset,
        seed: int,
        *,
        content: bool,
        ledger: PrivacyLedger | None = None,
    ) -> None:
        for name, comp in self.components.items():
            if name == "content" and not content:
                continue  # item embeddings depend on item text only, not on the interactions
            t0 = time.perf_counter()
            # only a given ledger is passed on: a component written before `ledger` joined the
            # contract still fits
            extra = {"ledger": ledger} if ledger is not None else {}
            comp.fit(dataset, rng=seed, **extra)
            log.info("hybrid component=%s fit_seconds=%.2f", name, time.perf_counter() - t0)

    def _set_item_events(self, dataset: InteractionDataset) -> None:
        self.item_events = np.bincount(dataset.item_idx, minlength=dataset.n_items).astype(np.int64)

    @staticmethod
    def _full(w: dict[str, float], names: list[str]) -> dict[str, float]:
        total = sum(float(w.get(n, 0.0)) for n in names)
        return {n: float(w.get(n, 0.0)) / total for n in names}

    # ---- weight search ----------------------------------------------------------------------
    def _histories_of(
        self, ds: InteractionDataset, users: np.ndarray, last: np.ndarray | None = None
    ) -> list[UserHistory]:
        """Chronological UserHistory of each user (only the `last[i]` latest events when given)."""
        off = ds.user_offsets()
        w = ds.event_weight_array()
        out = []
        for i, u in enumerate(users.tolist()):
            a, b = int(off[u]), int(off[u + 1])
            if last is not None:
                a = max(a, b - int(last[i]))
            out.append(
                UserHistory(
                    items=ds.item_idx[a:b].astype(np.int64),
                    weights=w[a:b],
                    event_types=ds.event_type[a:b],
                )
            )
        return out

    def _tune(
        self, sub: InteractionDataset, valid: InteractionDataset, seed: int
    ) -> tuple[dict[str, float], dict[str, float], float, dict[str, Any]]:
        c = self.config
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        users = valid.user_idx.astype(np.int64)
        targets = valid.item_idx.astype(np.int64)
        distinct = np.diff(sub.matrix(binary=True).indptr)[users]
        info: dict[str, Any] = {}

        warm = np.nonzero(distinct > c.cold_user_max_items)[0]
        names = list(self.components)
        boost = 0.0
        if (c.weights is None or c.cold_item_boost is None) and warm.size:
            pick = np.sort(rng.choice(warm, size=min(c.max_valid_users, warm.size), replace=False))
            hist = self._histories_of(sub, users[pick])
            known = np.nonzero(self.item_events > 0)[0]
            pseudo = np.zeros(self.n_items, bool)
            pseudo[
                rng.choice(
                    known, size=max(1, round(c.cold_item_fraction * known.size)), replace=False
                )
            ] = True
            fixed = self._full(c.weights, names) if c.weights is not None else None
            weights, boost, res = self._search(
                names,
                hist,
                targets[pick],
                fixed=fixed,
                pseudo_new=pseudo if c.cold_item_boost is None else None,
            )
            info["warm"] = res
        else:
            weights = self._full(c.weights or {n: 1.0 for n in names}, names)

        cold_names = list(c.cold_components)
        has = np.nonzero(distinct > 0)[0]
        if c.cold_weights is None and c.cold_user_max_items > 0 and has.size:
            pick = np.sort(rng.choice(has, size=min(c.max_valid_users, has.size), replace=False))
            last = 1 + (np.arange(pick.size) % c.cold_user_max_items)
            hist = self._histories_of(sub, users[pick], last)
            # every component's own score on these simulated new users is reported, for the record
            cold, _, res = self._search(
                cold_names, hist, targets[pick], cold_route=True, report=names
            )
            info["cold"] = res
        elif c.cold_weights is None:  # only empty histories are cold: content has nothing to say
            cold = self._full(
                {n: float(n != "content") for n in cold_names}
                if cold_names != ["content"]
                else {"content": 1.0},
                cold_names,
            )
        else:
            cold = self._full(c.cold_weights, cold_names)
        info["seconds"] = round(time.perf_counter() - t0, 2)
        return weights, cold, boost, info

    def _search(
        self,
        names: list[str],
        histories: list[UserHistory],
        targets: np.ndarray,
        *,
        cold_route: bool = False,
        report: list[str] | None = None,
        fixed: dict[str, float] | None = None,
        pseudo_new: np.ndarray | None = None,
    ) -> tuple[dict[str, float], float, dict[str, Any]]:
        """Coordinate search of the weights of `names` (unless `fixed`) maximising NDCG@10 of
        `targets`, then, with `pseudo_new` (items to treat as new), of the new-item boost.

        Returns (weights, boost, report); the report also holds each component's NDCG@10 alone
        (for `names` and `report`)."""
        c = self.config
        h = self.history_matrix(histories)
        if cold_route:  # a simulated new user keeps at most cold_user_max_items distinct items
            keep = np.diff(h.indptr) <= c.cold_user_max_items
        else:
            keep = np.ones(h.shape[0], bool)
        rows = np.arange(h.shape[0])
        keep &= (
            np.asarray(h[rows, targets]).ravel() == 0
        )  # a target already in the history cannot be ranked
        idx = np.nonzero(keep)[0]
        h = h[idx]
        histories = [histories[i] for i in idx.tolist()]
        targets = targets[idx]
        if h.shape[0] == 0:  # nobody to learn from: equal weights
            return fixed or self._full({n: 1.0 for n in names}, names), 0.0, {"users": 0}
        shown = list(dict.fromkeys([*names, *(report or [])]))
        z = {n: self._component_z(n, h, histories) for n in shown}
        mask = h.copy()
        mask.data[:] = 1.0
        mask_rows = np.repeat(np.arange(h.shape[0]), np.diff(mask.indptr))
        ar = np.arange(h.shape[0])

        def ndcg(s: np.ndarray) -> float:
            s[mask_rows, mask.indices] = -np.inf
            t = s[ar, targets][:, None]
            rank = (s > t).sum(axis=1) + 0.5 * ((s == t).sum(axis=1) - 1)
            return float(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0).mean())

        def combined(w: dict[str, float], zs: dict[str, np.ndarray]) -> np.ndarray:
            s = np.zeros((h.shape[0], self.n_items), np.float32)
            for n in w:
                if w[n]:
                    s += np.float32(w[n]) * zs[n]
            return s

        def objective(w: dict[str, float]) -> float:
            if not any(v > 0 for v in w.values()):
                return -1.0
            return ndcg(combined(w, z))

        alone = {n: objective({n: 1.0}) for n in shown}
        w = dict(fixed) if fixed is not None else {n: 1.0 for n in names}
        best = objective(w)
        for _ in range(c.rounds if fixed is None else 0):
            improved = False
            for n in names:
                for g in c.grid:
                    if g == w[n]:
                        continue
                    trial = {**w, n: float(g)}
                    val = objective(trial)
                    if val > best + 1e-12:
                        best, w, improved = val, trial, True
            if not improved:
                break
        weights = self._full(w, names)
        res: dict[str, Any] = {
            "users": int(h.shape[0]),
            "ndcg@10": round(best, 5),
            "alone": {k: round(v, 5) for k, v in alone.items()},
        }
        boost = 0.0
        if pseudo_new is not None and pseudo_new.any():
            # the same users with some items made "new": only their text score still speaks
            zn = {
                n: (a if n == "content" else np.where(pseudo_new[None, :], np.float32(0.0), a))
                for n, a in z.items()
            }
            base = combined(weights, zn)
            by_boost = {}
            for b in c.cold_item_boost_grid:
                by_boost[float(b)] = ndcg(
                    base + np.float32(b) * pseudo_new[None, :].astype(np.float32)
                )
            boost = max(by_boost, key=lambda b: (by_boost[b], -b))
            res["new_item_boost"] = {
                "boost": boost,
                "ndcg@10": round(by_boost[boost], 5),
                "ndcg@10_no_boost": round(by_boost.get(0.0, float("nan")), 5),
                "pseudo_new_items": int(pseudo_new.sum()),
                "targets_new": int(pseudo_new[targets].sum()),
            }
        return weights, boost, res

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
        comp = self.components[name]
        if name == "sequential" and histories is not None:
            raw = (
                np.stack([comp.score(x) for x in histories])
                if histories
                else np.zeros((0, self.n_items), np.float32)
            )
        elif (
            name == "content"
            and histories is not None
            and any(
                x.query_embeddings is not None and np.size(x.query_embeddings) for x in histories
            )
        ):
            raw = np.stack([comp.score(x) for x in histories])
        else:
            raw = comp.score_matrix(h)
        if name == "popularity":
            raw = np.log1p(1000.0 * np.maximum(np.asarray(raw, np.float32), 0.0))
        z = _zscore(raw)
        if name != "content":
            z[:, self.item_events == 0] = 0.0  # knows nothing about a new item: neutral
        return z

    def _combine(
        self, h: sp.csr_matrix, histories: list[UserHistory] | None, weights: dict[str, float]
    ) -> np.ndarray:
        s = np.zeros((h.shape[0], self.n_items), np.float32)
        for name, w in weights.items():
            if w:
                s += np.float32(w) * self._component_z(name, h, histories)
        if self.item_boost:
            s[:, self.item_events == 0] += np.float32(self.item_boost)
        return s

    def _cold_rows(self, h: sp.csr_matrix) -> np.ndarray:
        return np.diff(h.indptr) <= self.config.cold_user_max_items

    def _score(self, h: sp.csr_matrix, histories: list[UserHistory] | None) -> np.ndarray:
        h = self._history_input(h)
        cold = self._cold_rows(h)
        out = np.empty((h.shape[0], self.n_items), np.float32)
        for rows, weights in (
            (np.nonzero(~cold)[0], self.weights),
            (np.nonzero(cold)[0], self.cold_weights),
        ):
            if rows.size:
                hs = None if histories is None else [histories[i] for i in rows.tolist()]
                out[rows] = self._combine(h[rows], hs, weights)
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
        """Hybrid scores of all items (or of `items`) for one history."""
        s = self.score_histories([history])[0]
        return s if items is None else s[np.asarray(items, dtype=np.int64)]

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
        item = int(item)
        return not (0 <= item < self.item_events.shape[0]) or self.item_events[item] == 0

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
        item_routes = [
            "cold_item-boost" if route == "warm" and self.is_new_item(i) else route
            for i in items.tolist()
        ]
        weights = self.cold_weights if route == "cold_user" else self.weights
        return HybridResult(
            items=items, scores=scores, route=route, item_routes=item_routes, weights=dict(weights)
        )

    def explain(self, history: UserHistory, item: int) -> Explanation:
        """The route (kind "cold_user", "cold_item" or the strongest component's kind) and why."""
        self._check_fitted()
        item = int(item)
        route = self.route_for(history, item)
        weights = self.cold_weights if route == "cold_user" else self.weights
        h = self.history_matrix([history])
        parts = {
            n: float(w * self._component_z(n, h, [history])[0, item])
            for n, w in weights.items()
            if w
        }
        if route == "cold_user":
            best = max(parts, key=lambda n: parts[n]) if parts else "popularity"
            if best != "popularity":
                e = self.components[best].explain(history, item)
                if e.kind in ("history", "search"):
                    return Explanation(
                        item=item,
                        kind="cold_user",
                        text=f"new here: {e.text}",
                        contributors=e.contributors,
                        actions=e.actions,
                    )
            return Explanation(
                item=item, kind="cold_user", text="new here: popular in the shop", contributors=[]
            )
        if route == "cold_item-boost":
            e = self.content.explain(history, item)
            text = (
                f"new in the shop, {e.text}"
                if e.kind in ("history", "search")
                else "new in the shop"
            )
            return Explanation(
                item=item,
                kind="cold_item",
                text=text,
                contributors=e.contributors,
                actions=e.actions,
            )
        best = max(parts, key=lambda n: parts[n]) if parts else "popularity"
        e = self.components[best].explain(history, item)
        if (
            e.kind == "model" and best != "content"
        ):  # the strongest part cannot say why: try the text
            alt = self.content.explain(history, item)
            if alt.kind != "model":
                return alt
        return e

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
