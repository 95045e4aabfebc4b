"""Product search in the service: the index of the serving catalogue, and the one search path.

The CLI (`privrec search`), the HTTP API (`POST /v1/search`) and the storefront's search box all
call `Serving.search`, which runs `run_search` here:

1. retrieval from the catalogue's `SearchIndex` (BM25 + MiniLM dense + typo tolerance, fused;
   `privrec.text.search`), restricted to items that may be listed (deleted items never are);
2. for a shopper who consented to personalisation, a re-rank by their own model scores
   (`search_personal_weight` x the min-max normalised score among the hits);
3. the shop rules (`apply_rules`), and an explanation per item ("matches your search 'q'": the
   query the shopper just typed is theirs to see; no product title is ever shown as a search);
4. for that same shopper, the query's embedding is kept sealed (`query_memory`), so the content
   and hybrid models' `UserHistory.query_embeddings` learn from it. No event is stored then: a
   search shows items, it does not choose one. When the shopper acts on a result (a click, cart
   or purchase sent with the list's `recommendation_id`), the feedback log hands the choice to
   `SearchIndexes.record_choices`, which stores the `search` event naming the item they chose,
   through the gate (pseudonyms, consent; query text only where the shop keeps it), so that
   history and "found X through a search" only ever name chosen items. Anonymous and
   purchases-only shoppers leave nothing behind.

The index belongs to a model version's catalogue (the items its vocabulary knows) and lives at
`<data_dir>/search/<model>/<version>/`; a restart loads it instead of encoding again. A
content or hybrid version lends its item vectors (nothing is re-encoded); other versions encode
the catalogue text through the embedding cache under the data directory. A catalogue change
re-embeds only the items whose text changed and takes deleted items out. When the encoder
cannot be loaded, or while a large catalogue is being encoded in the background, search is
lexical and the result's `mode` and `note` say so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import shutil
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from privrec.core.errors import ValidationError
from privrec.core.types import EVENT_CODE, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary
from privrec.events.gate import Gate
from privrec.explain.explanations import explain_items, rule_placed
from privrec.models.base import Recommender
from privrec.privacy import consent as policy
from privrec.service.context import ServiceContext
from privrec.service.lists import check_k
from privrec.service.loaded import LoadedModel
from privrec.service.query_memory import QueryMemory
from privrec.service.results import SearchResult
from privrec.service.rule_spec import rules_from
from privrec.service.rules import apply_rules
from privrec.service.search_events import store_choices
from privrec.text.cache import EmbeddingCache
from privrec.text.encoder import SentenceEncoder

if TYPE_CHECKING:
    from privrec.service.consent import ConsentBook
    from privrec.service.experiments import Experiments
    from privrec.service.history import HistoryIndex, Peers
    from privrec.text.search import SearchIndex

__all__ = [
    "MODES",
    "SearchIndexes",
    "catalogue_text",
    "run_search",
    "text_model",
]

logger = logging.getLogger(__name__)

MODES = ("hybrid", "lexical", "dense")
SYNC_MAX_ITEMS = 500  # above this many texts to encode, the dense part is built in background
_MIN_CANDIDATES = 50
_META = "catalogue.json"
_SEARCH_CODE = EVENT_CODE["search"]


class HasLiveGate(Protocol):
    """What recording a search needs of ingestion (`Ingestion` is one; no import cycle)."""

    @property
    def live_gate(self) -> Gate:
        """The server's gate."""
        ...

    @property
    def serving(self) -> Serving:
        """The serving memory that new events reach."""
        ...


class Serving(Protocol):
    """What the search path needs of serving (`service.serving.Serving`; no import cycle)."""

    ctx: ServiceContext
    consent: ConsentBook
    search_indexes: SearchIndexes
    experiments: Experiments
    history: HistoryIndex
    peers: Peers

    def model(self, name: str | None = None) -> LoadedModel:
        """The active version of the default model."""
        ...

    def history_for(
        self, loaded: LoadedModel, pseudonym: str | None, level: policy.ConsentLevel
    ) -> UserHistory:
        """The shopper's history as their consent allows it used."""
        ...

    def scores(self, loaded: LoadedModel, history: UserHistory) -> np.ndarray:
        """The model's score of every item."""
        ...

    def add_events(self, accepted: pd.DataFrame) -> None:
        """Gated, stored events reach the in-memory histories."""
        ...


def text_model(model: Recommender) -> Any:
    """The content model whose text space a model scores in (content, hybrid), else None."""
    if getattr(model, "name", "") == "content" and hasattr(model, "item_embeddings"):
        return model
    content = (
        getattr(model, "components", {}).get("content") if hasattr(model, "components") else None
    )
    return content if content is not None and hasattr(content, "item_embeddings") else None


def catalogue_text(items: Vocabulary, catalogue: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(title, text) per item of a version's vocabulary, from the store's catalogue.

    The text is what `InteractionDataset.item_text` gives the content model (description, else
    title, category path and brand), so a content version's vectors describe the same text.
    """
    meta = InteractionDataset._align_meta(items, catalogue)
    n = len(meta)

    def col(name: str) -> list[Any]:
        return meta[name].tolist() if name in meta else [None] * n

    titles, texts = [], []
    for key, base, t, c, br in zip(
        meta["item"].tolist(), col("text"), col("title"), col("category"), col("brand"), strict=True
    ):
        title = t if isinstance(t, str) and t else ""
        titles.append(title or str(key))
        if isinstance(base, str) and base:
            texts.append(base)
        else:
            texts.append(". ".join(str(x) for x in (t, c, br) if isinstance(x, str) and x))
    return titles, texts


def _hashes(titles: list[str], texts: list[str]) -> list[str]:
    return [
        hashlib.sha256(f"{a}\x1f{b}".encode()).hexdigest()[:16]
        for a, b in zip(titles, texts, strict=True)
    ]


@dataclass
class _Entry:
    """A version's index and what it was built from."""

    index: SearchIndex
    hashes: list[str]
    encoder: SentenceEncoder | None
    note: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class SearchIndexes:
    """The search index of each loaded model version's catalogue, built, saved and kept fresh.

    Args:
        ctx: the data directory's context.
        sync_max_items: build the dense part in the request only up to this many texts to
            encode; above it, search is lexical until a background build finishes.
    """

    def __init__(self, ctx: ServiceContext, *, sync_max_items: int = SYNC_MAX_ITEMS) -> None:
        self.ctx = ctx
        self.sync_max_items = sync_max_items
        self.memory = QueryMemory(
            ctx.data_dir, ctx.sidecar_key, generation=lambda: ctx.pseudonymiser.generation
        )
        self._entries: dict[tuple[str, str], _Entry] = {}
        self._lock = threading.Lock()
        self._builders: dict[tuple[str, str], threading.Thread] = {}
        self._ingestion: HasLiveGate | None = None

    def attach(self, ingestion: HasLiveGate) -> None:
        """The ingestion whose gate stores shoppers' search events; the feedback log hands it the
        choices shoppers make from search lists."""
        self._ingestion = ingestion
        ingestion.serving.experiments.feedback.on_search_choice = self.record_choices

    # ---- where and with what --------------------------------------------------------------
    def directory(self, name: str, version: str) -> Path:
        """`<data_dir>/search/<model>/<version>`."""
        return self.ctx.data_dir / "search" / name / version

    def _cache(self) -> EmbeddingCache:
        return EmbeddingCache(self.ctx.data_dir / "cache" / "embeddings")

    def encoder_for(self, loaded: LoadedModel) -> tuple[SentenceEncoder | None, str | None]:
        """The encoder of the version's text space (or the bundled MiniLM), or None and why."""
        tm = text_model(loaded.model)
        try:
            if tm is not None:
                c = tm.config
                enc = SentenceEncoder(
                    c.model_path,
                    adapter=c.adapter,
                    adapters_dir=c.adapters_dir or self.ctx.data_dir,
                    device=c.device,
                    max_seq_length=c.max_seq_length,
                    cache=self._cache(),
                )
            else:
                enc = SentenceEncoder(cache=self._cache())
            enc.model_id  # noqa: B018 (hashes the weights: a missing file fails here)
        except Exception as exc:  # serving never fails for want of an encoder
            logger.warning("search encoder unavailable error=%s", type(exc).__name__)
            return None, f"the text encoder is unavailable ({type(exc).__name__}); lexical only"
        return enc, None

    # ---- the index of a version -----------------------------------------------------------
    def get(self, loaded: LoadedModel) -> _Entry:
        """The version's index: in memory, else loaded from disk, else built (and saved)."""
        key = (loaded.name, loaded.version)
        got = self._entries.get(key)
        if got is not None:
            return got
        with self._lock:
            got = self._entries.get(key)
            if got is None:
                got = self._open(loaded)
                self._entries[key] = got
        return got

    def _open(self, loaded: LoadedModel) -> _Entry:
        from privrec.text.search import SearchIndex

        titles, texts = catalogue_text(loaded.items, self.ctx.store.items())
        hashes = _hashes(titles, texts)
        encoder, why = self.encoder_for(loaded)
        folder = self.directory(loaded.name, loaded.version)
        meta_path = folder / _META
        if meta_path.exists():
            try:
                meta = json.loads(meta_path.read_text())
                same_encoder = meta.get("encoder") == (encoder.model_id if encoder else None)
                if same_encoder or encoder is None:
                    index = SearchIndex.load(folder, encoder)
                    entry = _Entry(index, list(meta["hashes"]), encoder, why)
                    self._refresh(loaded, entry, titles, texts, hashes)
                    return entry
            except Exception as exc:  # a damaged or older index is rebuilt
                logger.warning("search index unreadable; rebuilding error=%s", type(exc).__name__)
        return self._build(loaded, titles, texts, hashes, encoder, why)

    def _build(
        self,
        loaded: LoadedModel,
        titles: list[str],
        texts: list[str],
        hashes: list[str],
        encoder: SentenceEncoder | None,
        why: str | None,
    ) -> _Entry:
        from privrec.text.search import SearchIndex

        vectors = self._reusable_vectors(loaded, encoder)
        if encoder is not None and vectors is None and len(texts) > self.sync_max_items:
            # lexical now; the dense index follows from a worker and replaces it when ready
            entry = _Entry(
                SearchIndex.build(titles, texts, None),
                hashes,
                None,
                "the semantic index is being built; lexical results for now",
            )
            self._background(loaded, titles, texts, hashes, encoder)
            self._hide(loaded, entry)
            return entry
        try:
            index = SearchIndex.build(titles, texts, encoder, vectors=vectors)
        except Exception as exc:  # the encoder failed while encoding: lexical, and say so
            logger.warning("search dense build failed error=%s", type(exc).__name__)
            index = SearchIndex.build(titles, texts, None)
            encoder, why = None, f"the text encoder failed ({type(exc).__name__}); lexical only"
        entry = _Entry(index, hashes, encoder, why)
        self._hide(loaded, entry)
        self._save(loaded, entry)
        self.drop_unused()  # a new version's index: those of deleted versions go
        return entry

    def _background(
        self,
        loaded: LoadedModel,
        titles: list[str],
        texts: list[str],
        hashes: list[str],
        encoder: SentenceEncoder,
    ) -> None:
        key = (loaded.name, loaded.version)

        def work() -> None:
            from privrec.text.search import SearchIndex

            try:
                index = SearchIndex.build(titles, texts, encoder)
            except Exception as exc:
                logger.warning("search background build failed error=%s", type(exc).__name__)
                return
            entry = _Entry(index, hashes, encoder, None)
            self._hide(loaded, entry)
            with self._lock:
                self._entries[key] = entry
            if not self.ctx.store_is_open:  # the service closed meanwhile: never reopen it
                return
            try:  # catalogue changes made while it was built (else saves it unchanged)
                now_titles, now_texts = catalogue_text(loaded.items, self.ctx.store.items())
                self._refresh(loaded, entry, now_titles, now_texts, _hashes(now_titles, now_texts))
                self._save(loaded, entry)
            except Exception as exc:
                logger.warning("search index not refreshed error=%s", type(exc).__name__)
            logger.info("search index ready model=%s version=%s", *key)

        t = threading.Thread(target=work, name="privrec-search-index", daemon=True)
        self._builders[key] = t
        t.start()

    def wait(self) -> None:
        """Wait for background index builds (tests, shutdown)."""
        for t in list(self._builders.values()):
            t.join()

    @staticmethod
    def _reusable_vectors(
        loaded: LoadedModel, encoder: SentenceEncoder | None
    ) -> np.ndarray | None:
        """A content/hybrid version's own item vectors, when the encoder makes the same space."""
        tm = text_model(loaded.model)
        if tm is None or encoder is None:
            return None
        vecs = np.asarray(tm.item_embeddings, np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(loaded.items.keys):
            return None
        if tm.encoder_id and tm.encoder_id != encoder.model_id:
            return None
        return vecs

    def _hide(self, loaded: LoadedModel, entry: _Entry) -> None:
        if loaded.hidden is not None and loaded.hidden.any():
            entry.index.remove(np.flatnonzero(loaded.hidden))

    def _save(self, loaded: LoadedModel, entry: _Entry) -> None:
        folder = self.directory(loaded.name, loaded.version)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            entry.index.save(folder)
            meta = {
                "hashes": entry.hashes,
                "encoder": entry.encoder.model_id if entry.encoder is not None else None,
            }
            (folder / _META).write_text(json.dumps(meta))
        except Exception as exc:  # an index that cannot be saved is rebuilt next start
            logger.warning("search index not saved error=%s", type(exc).__name__)

    # ---- catalogue changes ----------------------------------------------------------------
    def catalogue_changed(self, loaded: LoadedModel) -> None:
        """Re-embed the items of `loaded` whose text changed; take hidden items out."""
        entry = self._entries.get((loaded.name, loaded.version))
        if entry is None:
            return
        titles, texts = catalogue_text(loaded.items, self.ctx.store.items())
        self._refresh(loaded, entry, titles, texts, _hashes(titles, texts))

    def _refresh(
        self,
        loaded: LoadedModel,
        entry: _Entry,
        titles: list[str],
        texts: list[str],
        hashes: list[str],
    ) -> None:
        with entry.lock:
            changed = [
                i for i, (a, b) in enumerate(zip(entry.hashes, hashes, strict=True)) if a != b
            ]
            hidden = loaded.hidden if loaded.hidden is not None else np.zeros(len(hashes), bool)
            changed = [i for i in changed if not hidden[i]]
            if changed:
                idx = np.asarray(changed, np.int64)
                try:
                    entry.index.update(
                        idx, [titles[i] for i in changed], [texts[i] for i in changed]
                    )
                except Exception as exc:  # no encoder for a dense index: rebuilt on next load
                    logger.warning("search index update failed error=%s", type(exc).__name__)
                    return
            if hidden.any():
                entry.index.remove(np.flatnonzero(hidden))
            entry.hashes = hashes
            if changed or hidden.any():
                self._save(loaded, entry)

    def drop_unused(self) -> int:
        """Delete the saved indexes of model versions that no longer exist (an erasure deletes
        old versions); returns how many were deleted."""
        n = 0
        for meta in (self.ctx.data_dir / "search").glob(f"*/*/{_META}"):
            folder = meta.parent
            if not (self.ctx.models_dir / folder.parent.name / folder.name).is_dir():
                shutil.rmtree(folder, ignore_errors=True)
                n += 1
        return n

    def queries_of(
        self, model: Recommender, pseudonym: str, level: policy.ConsentLevel
    ) -> np.ndarray | None:
        """The shopper's recent query embeddings for a text-space model (content, hybrid) where
        their consent lets serving use searches; None otherwise."""
        tm = text_model(model)
        if tm is None or not policy.uses(level, np.asarray([_SEARCH_CODE], np.int8))[0]:
            return None
        dim = int(np.shape(tm.item_embeddings)[1])
        return self.memory.recent(pseudonym, self.ctx.settings.search_query_history, dim=dim)

    # ---- a shopper's searches -------------------------------------------------------------
    def remember(self, pseudonym: str, search_id: str, query: str, vector: np.ndarray) -> None:
        """Keep a consenting shopper's query embedding sealed (the text only where the shop keeps
        query text); no event: the search has not chosen an item."""
        keep = query if self.ctx.settings.keep_query_text else None
        self.memory.add(pseudonym, search_id, time.time(), vector, query=keep)

    def record_choices(self, choices: Sequence[Mapping[str, Any]]) -> int:
        """Store the `search` event of each item a shopper chose from a search list (the
        feedback log's `on_search_choice`; see `search_events.store_choices`)."""
        if self._ingestion is None:
            return 0
        return store_choices(self._ingestion, self.memory, self.ctx.store, choices)


def _mode(mode: str) -> str:
    if mode not in MODES:
        raise ValidationError(
            "mode", f"{mode!r} is not a search mode; use one of {', '.join(MODES)}"
        )
    return mode


def run_search(
    serving: Serving,
    query: str,
    k: int = 10,
    *,
    user_id: str | None = None,
    rules: Mapping[str, Any] | None = None,
    mode: str = "hybrid",
) -> SearchResult:
    """The one search path (see the module docstring); `Serving.search` calls it."""
    query = " ".join((query or "").split())
    if not query:
        raise ValidationError("query", "is empty; type what you are looking for")
    check_k(k)
    asked = _mode(mode)
    indexes: SearchIndexes = serving.search_indexes
    loaded = serving.model()
    entry = indexes.get(loaded)
    note = entry.note
    used = asked
    qv: np.ndarray | None = None
    if asked != "lexical":
        if entry.encoder is None or not entry.index.has_dense:
            used = "lexical"
            note = note or "the semantic index is unavailable; lexical only"
        else:
            try:
                qv = np.asarray(entry.index.query_vector(query), np.float32)
            except Exception as exc:  # the encoder failed on this query: lexical, and say so
                logger.warning("search query encoding failed error=%s", type(exc).__name__)
                used, note = "lexical", "the text encoder failed; lexical only"
    allowed = ~loaded.hidden if loaded.hidden is not None else None
    n_candidates = max(4 * k, _MIN_CANDIDATES)
    hits = entry.index.search(query, n_candidates, mode=used, allowed=allowed, query_vector=qv)  # type: ignore[arg-type]
    p = serving.ctx.pseudonymise(user_id) if user_id else None
    level = serving.consent.level(p) if p else policy.ConsentLevel.ANONYMOUS
    history = serving.history_for(loaded, p, level)
    personal = len(history) > 0
    items = np.asarray(hits.items, np.int64)
    s = np.full(loaded.table.n_items, -np.inf)
    if len(items):
        fused = np.asarray(hits.scores, np.float64)
        s[items] = fused
        weight = float(serving.ctx.settings.search_personal_weight)
        if personal and weight > 0:
            ps = np.asarray(serving.scores(loaded, history), np.float64)[items]
            ok = np.isfinite(ps)
            lo, hi = (float(ps[ok].min()), float(ps[ok].max())) if ok.any() else (0.0, 0.0)
            if hi > lo:
                # the shopper's score, min-max normalised among the hits, scaled to the spread
                # of the fused retrieval scores: `weight` means the same whatever the fusion
                span = float(fused.max() - fused.min()) or 1.0
                share = np.where(ok, (np.where(ok, ps, lo) - lo) / (hi - lo), 0.0)
                s[items] += weight * span * share
    if loaded.hidden is not None:
        s[loaded.hidden] = -np.inf
    spec = {**dict(rules or {}), "exclude_seen": False, "exclude_purchased": False}
    res = apply_rules(s, k, _rules(spec, loaded.index), loaded.table, floor=-np.inf)
    exps = explain_items(
        loaded.model if personal else None,
        history,
        res.items,
        loaded.table,
        personalized=personal,
        query=query,
        matched=np.ones(len(res.items), bool),
    )
    exps = rule_placed(exps, res.pinned)  # a pinned item is the shop's doing, not a match
    match = _match_of(hits)
    out = []
    for i, sc, e in zip(res.items.tolist(), res.scores.tolist(), exps, strict=True):
        d = loaded.item_dict(i, sc, e.to_dict())
        if i in match:
            d["match"] = match[i]
        out.append(d)
    rec_id = secrets.token_hex(8)  # the list id; a click on a result sends it back
    if p is not None and qv is not None and out and "search" in policy.allowed_types(level):
        try:  # only the embedding: the event waits for the shopper's choice (record_choices)
            indexes.remember(p, rec_id, query, qv)
            serving.history.bump(p)  # their next list must see the query (content, hybrid)
            serving.peers.shoppers([p], "events")  # and so must the other API workers'
        except Exception as exc:  # the search is answered even if it cannot be kept
            logger.warning("search query not kept error=%s", type(exc).__name__)
    return SearchResult(
        query=query,
        mode=used,
        note=note,
        personalized=personal,
        model=loaded.name,
        version=loaded.version,
        items=out,
        corrected_query=hits.corrected_query,
        recommendation_id=rec_id,
    )


def _rules(spec: Mapping[str, Any], index: Mapping[str, int]) -> Any:
    """`rules_from`, with a value of the wrong type named as a ValidationError (the CLI's
    --rule values are not checked by a schema as the HTTP API's are)."""
    try:
        return rules_from(spec, index)
    except ValidationError:
        raise
    except (TypeError, ValueError):
        for key, value in spec.items():
            try:
                rules_from({key: value}, index)
            except ValidationError:
                raise
            except (TypeError, ValueError):
                raise ValidationError(key, "has a value of the wrong type for this rule") from None
        raise


def _match_of(hits: Any) -> dict[int, dict[str, Any]]:
    """Per hit: whether its words matched and its cosine with the query."""
    out = {}
    lex = np.asarray(hits.lexical, bool) if hits.lexical is not None else None
    den = np.asarray(hits.dense, np.float64) if hits.dense is not None else None
    for r, i in enumerate(np.asarray(hits.items, np.int64).tolist()):
        m: dict[str, Any] = {}
        if lex is not None and r < len(lex):
            m["lexical"] = bool(lex[r])
        if den is not None and r < len(den) and np.isfinite(den[r]):
            m["semantic"] = round(float(den[r]), 4)
        out[i] = m
    return out
