"""The one serving path: candidates -> scores -> business rules -> explanations.

The CLI, the HTTP API and the web pages all call `Serving`; nothing else turns a shopper into a
list. Requests are served from memory: every shopper's history (by pseudonym), the loaded
model versions with their compiled catalogue, and a cache of finished lists keyed by the
shopper's history generation. The store is only read at start-up (and on demand above
`PRELOAD_MAX_EVENTS`).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from privrec.core.errors import NotFoundError
from privrec.core.types import EVENT_CODE, EVENT_TYPES, UserHistory
from privrec.explain.explanations import explain_items, popular, rule_placed
from privrec.privacy import consent as policy
from privrec.service.consent import ConsentBook
from privrec.service.context import ServiceContext
from privrec.service.experiments import Experiments
from privrec.service.history import PRELOAD_MAX_EVENTS, HistoryIndex, ListCache, Peers
from privrec.service.lists import check_k, visible, with_context
from privrec.service.loaded import LoadedModel, load_version
from privrec.service.registry import ModelRegistry
from privrec.service.results import ExplainedItem, RecommendationList, SearchResult
from privrec.service.rule_spec import freeze, rules_from
from privrec.service.rules import apply_rules
from privrec.service.search import SearchIndexes, run_search

logger = logging.getLogger(__name__)

DP_POPULARITY = "dp_popularity"
_PURCHASE = EVENT_CODE["purchase"]
_VERSIONS_KEPT = 2  # loaded versions kept per model, so a swap back is instant


@dataclass(frozen=True)
class _Ranked:
    """A finished list and how it was ranked (cached together)."""

    items: list[dict[str, Any]]
    personal: bool  # ranked from the shopper's own history
    by_model: bool  # ranked by the model (history or context item), not by popularity


class Serving:
    """Serving state and the recommendation pipeline of one data directory.

    Args:
        ctx: the data directory's context (settings, keys, store).
        registry: the model versions on disk.
        consent: the consent levels.
        experiments: the A/B experiments.
    """

    def __init__(
        self,
        ctx: ServiceContext,
        registry: ModelRegistry,
        consent: ConsentBook,
        experiments: Experiments,
    ) -> None:
        self.ctx = ctx
        self.registry = registry
        self.consent = consent
        self.experiments = experiments
        self.history = HistoryIndex()
        self.cache = ListCache()
        self.peers = Peers()  # the other API workers of a shared store (coordination.py)
        self.loaded: dict[str, LoadedModel] = {}
        self._versions: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._default: str | None = None
        self._load_lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self.search_indexes = SearchIndexes(ctx)  # the search index of each version's catalogue
        weight_of = ctx.settings.event_weights
        # weight of each event type code, for building histories without a lookup per event
        self._weights = np.array([float(weight_of.get(t, 1.0)) for t in EVENT_TYPES], np.float32)

    # ---- models ---------------------------------------------------------------------------------
    def warm(self, *, preload_max_events: int = PRELOAD_MAX_EVENTS) -> dict[str, Any]:
        """Load histories and every active model before serving; returns what was loaded."""
        self.history.load(self.ctx.store, preload_max_events=preload_max_events)
        loaded = {}
        for name, info in self.registry.models().items():
            if info.active:
                try:
                    loaded[name] = self.model(name).version
                except Exception as exc:  # a broken artifact must not stop the others
                    logger.warning("model load failed model=%s error=%s", name, type(exc).__name__)
        return {"users": self.history.n_users, "events": self.history.n_events, "models": loaded}

    def default_model_name(self) -> str:
        """The model served when a request names none (read once; `refresh` re-reads it)."""
        if self._default is None:
            name = self.registry.default_name()
            if name is None:
                raise NotFoundError(
                    "no model has been trained yet; run `privrec train` or `privrec demo`"
                )
            self._default = name
        return self._default

    def forget_default(self) -> None:
        """Re-read the default model's name on the next request."""
        self._default = None

    def model(self, name: str | None = None) -> LoadedModel:
        """The active version of a model with its compiled catalogue, loaded once."""
        name = name or self.default_model_name()
        got = self.loaded.get(name)
        if got is not None:
            return got
        with self._load_lock:
            got = self.loaded.get(name)
            if got is None:
                got = self._load(name, self.registry.require_active(name))
                self.loaded[name] = got
        return got

    def _load(self, name: str, version: str) -> LoadedModel:
        """Load a version (or reuse a recently loaded one) with its compiled catalogue."""
        got = self._versions.get((name, version))
        if got is not None:
            return got
        if not self.history.loaded:
            self.history.load(self.ctx.store)
        got = load_version(
            self.registry, name, version, self.ctx.store.items(), self.history, self._deleted()
        )
        getattr(got.model, "prepare_serving", lambda: None)()  # e.g. the hybrid's ANN graph
        self._versions[(name, version)] = got
        for key in [key for key in self._versions if key[0] == name][:-_VERSIONS_KEPT]:
            self._versions.pop(key, None)
        return got

    def activate(self, name: str, version: str) -> dict[str, Any]:
        """Hot swap: load `version` fully, then switch the pointer and the served reference.

        Requests that already hold the old version finish on it; requests that start after the
        swap get the new one; none waits for the load or fails during it.
        """
        with self._swap_lock:
            previous = self.loaded.get(name)
            loaded = self._load(name, version)  # the slow part, outside any lock requests take
            self.registry.activate(name, version)
            self.loaded[name] = loaded  # one reference assignment: atomic for readers
        return {
            "model": name,
            "active": version,
            "previous": previous.version if previous else None,
            "load_seconds": loaded.load_seconds,
        }

    def activate_pointer(self, name: str, version: str) -> None:
        """Activate `version`: hot-swapped where this process serves `name`, else the pointer."""
        if name in self.loaded:
            self.activate(name, version)
        else:
            self.registry.activate(name, version)

    def refresh(self) -> list[str]:
        """Pick up versions activated by another process (and a new default); swapped names."""
        self._default = None
        swapped = []
        for name, info in self.registry.models().items():
            cur = self.loaded.get(name)
            if cur is not None and info.active and info.active != cur.version:
                self.activate(name, info.active)
                swapped.append(name)
        return swapped

    def versions(self) -> dict[str, dict[str, Any]]:
        """Every saved model: versions, the active one, the one served here, its guarantee."""
        out = {}
        for name, info in self.registry.models().items():
            cur = self.loaded.get(name)
            out[name] = {**info.to_dict(), "served": cur.version if cur else None}
        return out

    def configure(self, *, cache_entries: int | None = None) -> None:
        """Serving options: how many finished lists the cache keeps (0 turns it off)."""
        if cache_entries is not None:
            self.cache.max_entries = max(0, int(cache_entries))

    def stats(self) -> dict[str, Any]:
        """Counters for the metrics endpoint (no personal data)."""
        return {
            "cache_hits": self.cache.hits,
            "cache_misses": self.cache.misses,
            "cache_entries": len(self.cache),
            "users_in_memory": self.history.n_users,
            "events_in_memory": self.history.n_events,
            "models": {n: m.version for n, m in self.loaded.items()},
        }

    def _deleted(self) -> set[str]:
        """Items deleted from the catalogue (kept in the store's metadata)."""
        from privrec.service.catalogue import DELETED_META_KEY

        raw = self.ctx.store.meta().get(DELETED_META_KEY)
        return set(json.loads(raw)) if raw else set()

    def refresh_popularity(self) -> None:
        """Recount item popularity from the in-memory histories (new events move it)."""
        for loaded in list(self.loaded.values()):
            pop = self.history.popularity_for(loaded.table.keys)
            if loaded.hidden is not None:
                pop[loaded.hidden] = -np.inf  # a deleted item stays last
            loaded.table.popularity[:] = pop
            loaded.pop_ranking = loaded.table.popularity_ranking()

    def refresh_catalogue(self, deleted: Collection[str] = ()) -> list[str]:
        """Recompile every loaded version's catalogue from the store after a catalogue change.

        Titles, prices and stock are read again, the artifacts are not; items in `deleted` are
        kept out of lists (see `catalogue.recompiled`). Returns each "name@version" recompiled.
        """
        from privrec.service.catalogue import recompiled

        catalogue = self.ctx.store.items()
        done = []
        with self._swap_lock:
            for key, old in list(self._versions.items()):
                pop = self.history.popularity_for(old.items.keys)
                new = recompiled(old, catalogue, pop, deleted)
                self._versions[key] = new
                if self.loaded.get(key[0]) is old:
                    self.loaded[key[0]] = new  # one reference assignment: atomic for readers
                self.search_indexes.catalogue_changed(new)  # re-embeds changed text only
                done.append(f"{key[0]}@{key[1]}")
            self.cache.clear()
        self.peers.catalogue()
        return done

    # ---- shoppers' data in memory -------------------------------------------------------------
    def add_events(self, accepted: pd.DataFrame) -> None:
        """Gated, stored events reach the in-memory histories (their lists are invalidated)."""
        self.history.add(accepted)
        self.peers.shoppers(accepted["user"].astype(str).unique().tolist(), "events")

    def reload_history(self) -> None:
        """Re-read the histories from the store on next use (after a bulk ingest)."""
        # query embeddings live only as long as their search events (retention, consent, keys)
        self.search_indexes.memory.sweep(self.ctx.store)
        if self.history.loaded:
            self.history = HistoryIndex()
            self.cache.clear()
        self.peers.histories()

    def consent_changed(self, pseudonym: str) -> None:
        """Invalidate a shopper's cached lists after a consent change."""
        if "search" not in policy.allowed_types(self.consent.level(pseudonym)):
            self.search_indexes.memory.forget(pseudonym)
        self.history.bump(pseudonym)
        self.peers.shoppers([pseudonym], "consent")

    def forget(self, pseudonym: str) -> bool:
        """Drop a shopper's in-memory history, cached lists and query embeddings; whether any
        history was held."""
        self.search_indexes.memory.forget(pseudonym)
        self.peers.shoppers([pseudonym], "erase")
        return self.history.drop(pseudonym)

    # ---- the pipeline ---------------------------------------------------------------------------
    def history_for(
        self, loaded: LoadedModel, pseudonym: str | None, level: policy.ConsentLevel
    ) -> UserHistory:
        """The shopper's history in the model's index space, as their consent allows it used."""
        if pseudonym is None or not policy.personalised(level):
            return UserHistory.of([])
        if not self.history.loaded:
            self.history.load(self.ctx.store)
        keys, types = self.history.get(pseudonym)
        if not keys:
            return UserHistory.of([])
        codes = np.asarray(types, dtype=np.int8)
        idx = np.fromiter((loaded.index.get(k, -1) for k in keys), np.int64, count=len(keys))
        keep = (idx >= 0) & policy.uses(level, codes)
        weights = self._weights[codes[keep]]
        # a text-space model (content, hybrid) also reads the shopper's recent queries
        queries = self.search_indexes.queries_of(loaded.model, pseudonym, level)
        return UserHistory(
            items=idx[keep], weights=weights, event_types=codes[keep], query_embeddings=queries
        )

    @staticmethod
    def scores(loaded: LoadedModel, history: UserHistory) -> np.ndarray:
        """The model's score of every item for this history."""
        return np.asarray(loaded.model.score(history))

    def _ranked(
        self,
        loaded: LoadedModel,
        pseudonym: str | None,
        level: policy.ConsentLevel,
        k: int,
        rules_spec: Mapping[str, Any],
        context_item: str | None,
        *,
        base_scores: np.ndarray | None = None,
    ) -> _Ranked:
        """The finished list (items with explanations), from the cache when nothing changed.

        `base_scores` replaces the catalogue popularity for non-personal lists (the DP release).
        """
        gen = self.history.generation(pseudonym) if pseudonym else 0
        key = (
            pseudonym,
            loaded.name,
            loaded.version,
            gen,
            level,
            k,
            freeze(rules_spec),
            context_item,
            base_scores is not None,
        )
        hit: _Ranked | None = self.cache.get(key)
        if hit is not None:
            return hit
        rules = rules_from(rules_spec, loaded.index)
        table = loaded.table
        history = self.history_for(loaded, pseudonym, level)
        ctx = None
        if context_item is not None:
            ctx = loaded.index.get(context_item, -1)
            if ctx < 0:
                raise NotFoundError(f"context_item: {context_item!r} is not in the catalogue")
        personal = len(history) > 0
        types = history.event_types
        purchased = history.items[types == _PURCHASE] if personal and types is not None else None
        seen = history.items if personal else None
        if personal or ctx is not None:
            h = history
            if ctx is not None:
                h = with_context(history, ctx, self.ctx.settings.event_weights)
                seen = np.append(seen if seen is not None else np.empty(0, np.int64), ctx)
            s = visible(self.scores(loaded, h), loaded.hidden)
            res = apply_rules(s, k, rules, table, purchased=purchased, seen=seen)
            exps = explain_items(
                loaded.model,
                h,
                res.items,
                table,
                personalized=True,
                filled=res.filled,
                context_item=ctx,
            )
        elif base_scores is not None:  # the DP release: nothing exact may shape the reply
            dp = visible(base_scores, loaded.hidden)
            res = apply_rules(dp, k, rules, table, purchased=purchased, seen=seen)
            exps = [popular(table, i) for i in res.items.tolist()]
        else:
            pop, ranking = table.popularity, loaded.pop_ranking
            res = apply_rules(pop, k, rules, table, purchased=purchased, seen=seen, ranking=ranking)
            exps = explain_items(None, history, res.items, table, personalized=False)
        exps = rule_placed(exps, res.pinned)  # a pin is the shop's doing, never the shopper's
        items = [
            loaded.item_dict(i, sc, e.to_dict())
            for i, sc, e in zip(res.items.tolist(), res.scores.tolist(), exps, strict=True)
        ]
        out = _Ranked(items, personal, personal or ctx is not None)
        self.cache.put(key, out)
        return out

    def _dp_popularity(self) -> tuple[LoadedModel, np.ndarray] | None:
        """The active dp_popularity model and its released (noisy) counts, or None."""
        if self.registry.active(DP_POPULARITY) is None:
            return None
        loaded = self.model(DP_POPULARITY)
        if loaded.model.privacy is None:  # epsilon = inf (or no release): nothing to hide behind
            return None
        pop = getattr(loaded.model, "popularity", None)
        return (loaded, np.asarray(pop, dtype=np.float64)) if pop is not None else None

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        *,
        model: str | None = None,
        rules: Mapping[str, Any] | None = None,
        context_item: str | None = None,
        experiment: str | None = None,
        anonymous: bool = False,
    ) -> RecommendationList:
        """Top-k for a raw user id with business rules, explanations and A/B assignment.

        Args:
            user_id: the shop's user id (pseudonymised here, never stored raw).
            k: 1 to 1000 items.
            model: a model name (default: the default model, or the experiment variant's).
            rules: request rule fields (see `rule_spec.RULE_FIELDS`).
            context_item: the item the shopper is looking at.
            experiment: a running experiment's name: the variant decides model and rules.
            anonymous: serve the list of an anonymous shopper (the caller could not show who).
        """
        check_k(k)
        p = None if anonymous else self.ctx.pseudonymise(user_id)
        level = self.consent.level(p) if p else policy.ConsentLevel.ANONYMOUS
        rules = dict(rules or {})
        exp = None
        variant = None
        note = None
        if experiment:
            exp = self.experiments.running(experiment)
            if exp is None:
                note = "experiment is stopped; serving the default"
            elif p is None or not policy.enrolled_in_experiments(level):
                note = "shoppers at this consent level are not enrolled in experiments"
                exp = None
            else:
                v = self.experiments.variant_of(exp, p)
                variant = v.name
                model = v.model or model
                rules = {**rules, **v.params}
        base_scores = None
        if not policy.personalised(level):
            # nothing personal: the DP popularity release where one is trained (its noisy
            # counts bound any one shopper's influence), else the catalogue popularity
            dp = self._dp_popularity()
            if dp is not None:
                loaded, base_scores = dp
            else:
                loaded = self.model(model)
                note = note or "no dp_popularity model is trained; serving catalogue popularity"
        else:
            loaded = self.model(model)
        ranked = self._ranked(loaded, p, level, k, rules, context_item, base_scores=base_scores)
        rec_id = secrets.token_hex(8)
        shown = [r["item"] for r in ranked.items]
        if exp is not None and variant is not None and p is not None:
            self.experiments.log_exposure(rec_id, exp, variant, p, shown)
        self.experiments.feedback.log(  # the impression, logged where the list is served
            rec_id,
            kind="recommend",
            shopper=p,
            model=loaded.name,
            version=loaded.version,
            items=shown,
            experiment=exp.name if exp is not None else None,
            arm=variant,
            tracked=level is not policy.ConsentLevel.ANONYMOUS,
        )
        used = loaded.name if ranked.by_model or base_scores is not None else "popularity"
        return RecommendationList(
            recommendation_id=rec_id,
            model=used,
            version=loaded.version,
            personalized=ranked.personal,
            consent=level.value,
            experiment=exp.name if exp is not None else None,
            variant=variant,
            items=ranked.items,
            note=note,
        )

    def similar(
        self,
        item: str,
        k: int = 10,
        *,
        model: str | None = None,
        rules: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Items like `item` for a product page (no personal data involved)."""
        check_k(k)
        loaded = self.model(model)
        if loaded.index.get(item, -1) < 0:
            raise NotFoundError(f"item: {item!r} is not in the catalogue of model {loaded.name!r}")
        spec = {**dict(rules or {}), "exclude_items": [item]}
        ranked = self._ranked(loaded, None, policy.ConsentLevel.ANONYMOUS, k, spec, item)
        rec_id = secrets.token_hex(8)
        self.experiments.feedback.log(
            rec_id,
            kind="similar",
            shopper=None,
            model=loaded.name,
            version=loaded.version,
            items=[r["item"] for r in ranked.items],
        )
        return {
            "recommendation_id": rec_id,
            "item": item,
            "model": loaded.name,
            "version": loaded.version,
            "items": ranked.items,
        }

    def log_search(self, result: SearchResult, user_id: str | None) -> None:
        """Log a served search result as an impression (its list id is `recommendation_id`)."""
        p = self.ctx.pseudonymise(user_id) if user_id else None
        level = self.consent.level(p) if p else None
        self.experiments.feedback.log(
            result.recommendation_id,
            kind="search",
            shopper=p,
            model=result.model,
            version=result.version,
            items=[r["item"] for r in result.items],
            tracked=level is not policy.ConsentLevel.ANONYMOUS,
        )

    def catalogue_size(self) -> int | None:
        """Items in the default model's catalogue (None before any model is trained)."""
        try:
            return int(self.model().table.n_items)
        except NotFoundError:
            return None

    def explain(self, user_id: str, item: str, *, model: str | None = None) -> ExplainedItem:
        """Why `item` would be shown to this shopper: their score, rank and the explanation."""
        loaded = self.model(model)
        i = loaded.index.get(item, -1)
        if i < 0:
            raise NotFoundError(f"item: {item!r} is not in the catalogue of model {loaded.name!r}")
        p = self.ctx.pseudonymise(user_id)
        level = self.consent.level(p)
        history = self.history_for(loaded, p, level)
        personal = len(history) > 0
        scores = self.scores(loaded, history) if personal else loaded.table.popularity
        s = float(scores[i])
        rank = int(np.count_nonzero(scores > s)) + 1
        exp = explain_items(
            loaded.model if personal else None, history, [i], loaded.table, personalized=personal
        )[0]
        return ExplainedItem(
            item=item,
            model=loaded.name if personal else "popularity",
            version=loaded.version,
            score=s,
            rank=rank,
            personalized=personal,
            explanation=exp.to_dict(),
        )

    # ---- catalogue and search -----------------------------------------------------------------
    def catalogue(
        self, *, q: str | None = None, category: str | None = None, limit: int = 24, offset: int = 0
    ) -> dict[str, Any]:
        """Browse the default model's catalogue: optional title filter and category prefix."""
        loaded = self.model()
        t = loaded.table
        mask = np.ones(t.n_items, bool)
        if category:
            mask &= t.category_mask([category])
        if q:
            mask &= loaded.title_match(q) > 0
        idx = np.flatnonzero(mask)
        idx = idx[np.lexsort((idx, -t.popularity[idx]))]
        page = idx[offset : offset + limit]
        return {
            "total": len(idx),
            "offset": offset,
            "limit": limit,
            "items": [loaded.item_dict(int(i)) for i in page],
        }

    def categories(self) -> list[dict[str, Any]]:
        """Categories of the default model's catalogue with their item counts."""
        t = self.model().table
        counts = np.bincount(t.category[t.category >= 0], minlength=len(t.categories))
        return [
            {"category": c, "items": int(n)}
            for c, n in zip(t.categories, counts.tolist(), strict=True)
        ]

    def item(self, item: str) -> dict[str, Any]:
        """One catalogue item (public data)."""
        loaded = self.model()
        i = loaded.index.get(item, -1)
        if i < 0:
            raise NotFoundError(f"item: {item!r} is not in the catalogue")
        return loaded.item_dict(i)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        user_id: str | None = None,
        rules: Mapping[str, Any] | None = None,
        mode: str = "hybrid",
    ) -> SearchResult:
        """Product search: hybrid (lexical + semantic) retrieval of visible items, re-ranked by
        the shopper's own model scores with consent, shop rules, explanations (see
        `privrec.service.search.run_search`); `mode` is hybrid, lexical or dense."""
        return run_search(self, query, k, user_id=user_id, rules=rules, mode=mode)
