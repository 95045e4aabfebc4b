"""Content-based recommender: items and users in the sentence encoder's text space.

Item i gets e_i, the unit embedding of its text (`InteractionDataset.item_text()`: title,
category path, brand), from `privrec.text.SentenceEncoder` (all-MiniLM-L6-v2 by default, a LoRA
adapter optionally). Every item of the dataset's vocabulary gets one, with or without training
interactions, so new items are served from day one; `add_items` embeds items that arrive later.

A user's profile is the weighted sum of their history's item embeddings,

    p = sum_j w_j e_j,   w_j = event-type weight (view 1 < cart 3 < favorite 4 < purchase 5)
                               * 0.5 ** (events after j / recency_half_life)

(the strongest such weight per item is kept, as `aggregate="max"`), plus, when the history carries
search-query embeddings, `query_weight` * the unit mean of those queries (scaled to the item
part's length). The score of item i is the cosine cos(p, e_i), in [-1, 1]; an empty history scores
every item 0.

The recency weights are part of the history rows: `history_matrix` and `input_matrix` build them
from the chronological order, and `score_matrix` reads row values as final weights.

Training reads no interactions at all (only item text), so the model holds no personal data and
an erasure changes nothing in it (`can_forget` is True and `forget` has nothing to do); user
profiles exist only at request time. With a LoRA adapter (trained on shoppers' co-interactions)
that no longer holds: the model then cannot forget exactly and owes a retrain after an erasure.

Without search queries the score is a sum over history entries, cos(p, e_i) =
sum_j w_j (e_j . e_i) / ||p||, so `contributions` gives each entry's exact share.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from privrec.core.errors import ConfigError, ValidationError
from privrec.core.types import EVENT_TYPES, Explanation, UserHistory, strongest, strongest_actions
from privrec.data.dataset import InteractionDataset
from privrec.models.base import InputConfig, Recommender, register, top_k
from privrec.models.unlearning import UnlearningResult
from privrec.text.cache import EmbeddingCache
from privrec.text.encoder import ProgressCallback, SentenceEncoder

if TYPE_CHECKING:
    from privrec.privacy.ledger import PrivacyLedger

log = logging.getLogger(__name__)

__all__ = ["ContentConfig", "ContentRecommender", "recency_decay"]

_TITLE_CHARS = 80


def text_explanation(
    item: int,
    hist_items: np.ndarray,
    contrib: np.ndarray,
    query_part: float,
    titles: Sequence[str],
    did: Mapping[int, str],
) -> Explanation:
    """The content explanation from each history item's contribution to `item`'s score.

    The three largest positive contributors (ties by item index) are named; kind "search" when
    the shopper's kept searches contribute at least as much as the first of them. Shared by the
    content model and the hybrid's serving path, which computes the contributions its own way.
    """
    order = [j for j in np.lexsort((hist_items, -contrib)) if contrib[j] > 0][:3]
    contributors = [(int(hist_items[j]), float(contrib[j])) for j in order]
    actions = {i: did[i] for i, _ in contributors if i in did}
    if query_part > 0 and (not contributors or query_part >= contributors[0][1]):
        return Explanation(
            item=item,
            kind="search",
            text="matches your recent searches",
            contributors=contributors,
            actions=actions,
        )
    if not contributors:
        return Explanation(
            item=item, kind="model", text="no item in your history points to this one"
        )
    names = " and ".join(f"'{titles[i]}'" for i, _ in contributors[:2])
    return Explanation(
        item=item,
        kind="history",
        text=f"similar to {names} from your history",
        contributors=contributors,
        actions=actions,
    )


class ContentConfig(InputConfig):
    """Content model settings.

    Attributes:
        model_path: a sentence-transformers model folder (None: the bundled all-MiniLM-L6-v2).
        adapter: name of a LoRA adapter (see privrec.text.lora) to apply to the encoder.
        adapters_dir: the folder above `adapters/` (None: the settings' data directory).
        device: "auto" (CUDA when available, else CPU), "cpu" or "cuda".
        max_seq_length: token limit of item texts (None: the model's).
        batch_size: texts per forward pass.
        cache: keep item embeddings in the on-disk embedding cache (search queries never are).
        cache_dir: the cache folder (None: $PRIVREC_TEXT_CACHE_DIR or <data_dir>/cache/embeddings).
        recency_half_life: an event's weight halves every this many later events (None: no decay).
        query_weight: weight of the search-query part of the profile relative to the item part.
        search_personal_weight: in `search` with a history, the share of the user's profile score.
        binary, use_ratings, event_weights, aggregate: how events weigh (see InputConfig);
            binary=True makes every history item count the same (and disables recency).
    """

    model_path: str | None = None
    adapter: str | None = None
    adapters_dir: str | None = None
    device: str = "auto"
    max_seq_length: int | None = Field(default=None, ge=8)
    batch_size: int = Field(default=32, ge=1)
    cache: bool = True
    cache_dir: str | None = None
    recency_half_life: float | None = Field(default=8.0, gt=0)
    query_weight: float = Field(default=1.0, ge=0.0)
    search_personal_weight: float = Field(default=0.3, ge=0.0, le=1.0)


def recency_decay(after: np.ndarray, half_life: float | None) -> np.ndarray:
    """0.5 ** (after / half_life) per event, where `after` counts the user's later events."""
    if half_life is None:
        return np.ones(np.shape(after), np.float32)
    return np.exp2(-np.asarray(after, np.float64) / float(half_life)).astype(np.float32)


def _aggregate(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int], how: str
) -> sp.csr_matrix:
    """A CSR matrix keeping the max (or sum) of duplicate (row, col) values."""
    if rows.size == 0:
        return sp.csr_matrix(shape, dtype=np.float32)
    key = rows.astype(np.int64) * shape[1] + cols.astype(np.int64)
    s = pd.DataFrame({"k": key, "v": vals.astype(np.float32)}).groupby("k", sort=True)["v"]
    agg = s.sum() if how == "sum" else s.max()
    k = agg.index.to_numpy()
    m = sp.csr_matrix(
        (agg.to_numpy(np.float32), (k // shape[1], k % shape[1])), shape=shape, dtype=np.float32
    )
    m.eliminate_zeros()
    return m


def _unit_rows(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(n > 0, x / np.where(n > 0, n, 1.0), 0.0).astype(np.float32)


@register
class ContentRecommender(Recommender):
    """Recommends items whose text is close to the text of the user's history (module docstring)."""

    name = "content"
    Config = ContentConfig
    config: ContentConfig

    def __init__(self, config: ContentConfig | None = None, **params: Any) -> None:
        super().__init__(config, **params)
        self.item_embeddings = np.zeros((0, 0), np.float32)
        self.item_titles: list[str] = []
        self.event_weights: dict[str, float] = {}
        self.encoder_id: str = ""
        self._encoder: SentenceEncoder | None = None

    # ---- the encoder -----------------------------------------------------------------------------
    @property
    def encoder(self) -> SentenceEncoder:
        """The sentence encoder this model's config names (built on first use)."""
        if self._encoder is None:
            c = self.config
            cache = EmbeddingCache(c.cache_dir) if c.cache else None
            self._encoder = SentenceEncoder(
                c.model_path,
                adapter=c.adapter,
                adapters_dir=c.adapters_dir,
                device=c.device,
                max_seq_length=c.max_seq_length,
                cache=cache,
            )
        return self._encoder

    def _checked_encoder(self) -> SentenceEncoder:
        enc = self.encoder
        if self.encoder_id and enc.model_id != self.encoder_id:
            raise ConfigError(
                f"content.model_path/adapter: item vectors were made by {self.encoder_id!r} but "
                f"the configured encoder is {enc.model_id!r}; refit the model (or restore that "
                "model/adapter) before encoding new text"
            )
        return enc

    def encode_texts(
        self,
        texts: Sequence[str],
        *,
        use_cache: bool = True,
        progress: ProgressCallback | None = None,
    ) -> np.ndarray:
        """Unit vectors of `texts` in this model's item space (same encoder as the items)."""
        return self._checked_encoder().encode(
            list(texts),
            batch_size=self.config.batch_size,
            use_cache=use_cache and self.config.cache,
            progress=progress,
        )

    # ---- training --------------------------------------------------------------------------------
    def fit(
        self,
        dataset: InteractionDataset,
        *,
        rng: int | np.random.Generator | None = None,
        ledger: PrivacyLedger | None = None,
        progress: ProgressCallback | None = None,
    ) -> ContentRecommender:
        """Embed every item's text; `rng` and `ledger` are unused (deterministic, no user data)."""
        texts = dataset.item_text()
        enc = self.encoder
        self.encoder_id = enc.model_id
        self.item_embeddings = enc.encode(
            texts, batch_size=self.config.batch_size, progress=progress
        )
        titles = (
            dataset.item_meta["title"].tolist()
            if "title" in dataset.item_meta
            else [None] * len(texts)
        )
        self.item_titles = [
            self._short(t if isinstance(t, str) and t else x)
            for t, x in zip(titles, texts, strict=True)
        ]
        self.event_weights = dict(self.config.event_weights or dataset.event_weights)
        self._mark_fitted(dataset.n_items)
        return self

    @staticmethod
    def _short(text: str) -> str:
        text = " ".join(str(text).split())
        return text if len(text) <= _TITLE_CHARS else text[: _TITLE_CHARS - 1].rstrip() + "…"

    # ---- new items -------------------------------------------------------------------------------
    def add_items(self, texts: Sequence[str], titles: Sequence[str] | None = None) -> np.ndarray:
        """Embed items that arrived after training; returns their new indices (appended at the end).

        Their scores, similar items and search results are available at once. Indices must match
        the catalogue's vocabulary: add items in the order the vocabulary assigns them.
        """
        self._check_fitted()
        texts = list(texts)
        vecs = self.encode_texts(texts)
        start = self.n_items
        self.item_embeddings = np.vstack([self.item_embeddings, vecs]).astype(np.float32)
        names = list(titles) if titles is not None else texts
        self.item_titles += [self._short(t) for t in names]
        self.n_items = start + len(texts)
        return np.arange(start, self.n_items, dtype=np.int64)

    def set_item_text(self, items: Sequence[int] | np.ndarray, texts: Sequence[str]) -> None:
        """Re-embed existing items from new text (e.g. an item that had no description before)."""
        self._check_fitted()
        idx = np.asarray(items, dtype=np.int64)
        texts = list(texts)
        if idx.shape[0] != len(texts):
            raise ValidationError(
                "texts", f"{len(texts)} texts for {idx.shape[0]} items; give one text per item"
            )
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_items):
            raise ValidationError("items", f"an index is outside 0..{self.n_items - 1}")
        self.item_embeddings[idx] = self.encode_texts(texts)
        for i, t in zip(idx.tolist(), texts, strict=True):
            self.item_titles[i] = self._short(t)

    # ---- histories -------------------------------------------------------------------------------
    def _type_weights(self) -> np.ndarray:
        w = self.event_weights or self.config.event_weights or {}
        return np.array([float(w.get(t, 1.0)) for t in EVENT_TYPES], dtype=np.float32)

    def _history_weights(self, h: UserHistory) -> np.ndarray:
        """Per-event weights of one history: event weight (given, or from event types) * recency."""
        n = len(h)
        if self.config.binary:
            return np.ones(n, np.float32)
        if h.weights is not None:
            w = np.asarray(h.weights, np.float32)
        elif h.event_types is not None and len(h.event_types) == n:
            codes = np.clip(np.asarray(h.event_types, np.int64), 0, len(EVENT_TYPES) - 1)
            w = self._type_weights()[codes]
        else:
            w = np.ones(n, np.float32)
        return w * recency_decay(np.arange(n)[::-1], self.config.recency_half_life)

    def history_matrix(self, histories: list[UserHistory]) -> sp.csr_matrix:
        """Stack histories into rows of recency- and event-weighted item weights."""
        rows, cols, vals = [], [], []
        for r, h in enumerate(histories):
            w = self._history_weights(h)
            items = np.asarray(h.items, np.int64)
            ok = (items >= 0) & (items < self.n_items)
            rows.append(np.full(int(ok.sum()), r))
            cols.append(items[ok])
            vals.append(w[ok])
        if not histories:
            return sp.csr_matrix((0, self.n_items), dtype=np.float32)
        return _aggregate(
            np.concatenate(rows),
            np.concatenate(cols),
            np.concatenate(vals),
            (len(histories), self.n_items),
            self.config.aggregate,
        )

    def input_matrix(self, dataset: InteractionDataset) -> sp.csr_matrix:
        """Every user's history row as `history_matrix` builds it (recency counted in events)."""
        c = self.config
        if c.binary:
            return dataset.matrix(binary=True)
        w = dataset.event_weight_array(c.event_weights, use_ratings=c.use_ratings)
        off = dataset.user_offsets()
        after = off[1:][dataset.user_idx] - 1 - np.arange(dataset.n_events)
        vals = w * recency_decay(after, c.recency_half_life)
        return _aggregate(
            dataset.user_idx,
            dataset.item_idx,
            vals,
            (dataset.n_users, dataset.n_items),
            c.aggregate,
        )

    # ---- scoring ---------------------------------------------------------------------------------
    def profiles(self, histories: sp.csr_matrix) -> np.ndarray:
        """Unit profile vectors (rows; zero for empty histories) of weighted history rows."""
        h = self._history_input(histories)
        return _unit_rows(np.asarray(h @ self.item_embeddings, dtype=np.float32))

    def score_matrix(self, histories: sp.csr_matrix) -> np.ndarray:
        """cos(profile, item) for every row (history weights taken as given) and item."""
        p = self.profiles(histories)
        return np.asarray(p @ self.item_embeddings.T, dtype=np.float32)

    def _profile(self, history: UserHistory) -> tuple[np.ndarray, np.ndarray, float, float]:
        """(unnormalised profile, history row, item-part norm, query-part weight) of one history."""
        h = self._history_input(self.history_matrix([history]))
        raw = np.asarray(h @ self.item_embeddings, dtype=np.float64)[0]
        n_items_part = float(np.linalg.norm(raw))
        q_w = 0.0
        q = history.query_embeddings
        if q is not None and np.size(q) and self.config.query_weight > 0:
            qm = np.asarray(q, np.float64).reshape(-1, self.item_embeddings.shape[1]).mean(axis=0)
            qn = float(np.linalg.norm(qm))
            if qn > 0:
                # the query part gets query_weight times the item part's length (1 without items)
                q_w = self.config.query_weight * (n_items_part if n_items_part > 0 else 1.0) / qn
                raw = raw + q_w * qm
        return raw, h.toarray()[0], n_items_part, q_w

    def score(self, history: UserHistory, items: np.ndarray | None = None) -> np.ndarray:
        """Scores for one history, with its search-query embeddings when it has them."""
        self._check_fitted()
        if history.query_embeddings is None or not np.size(history.query_embeddings):
            return super().score(history, items)
        raw, _, _, _ = self._profile(history)
        n = np.linalg.norm(raw)
        p = (raw / n if n > 0 else raw).astype(np.float32)
        s = self.item_embeddings @ p
        return (
            s.astype(np.float32)
            if items is None
            else s[np.asarray(items, dtype=np.int64)].astype(np.float32)
        )

    # ---- similar items and search ----------------------------------------------------------------
    def similar_items(
        self, item: int, k: int = 10, *, exclude: Sequence[int] | np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The k items whose text is closest to `item`'s (itself excluded), best first."""
        self._check_fitted()
        item = int(item)
        if not 0 <= item < self.n_items:
            raise ValidationError("item", f"{item} is outside 0..{self.n_items - 1}")
        s = (self.item_embeddings @ self.item_embeddings[item]).astype(np.float64)
        s[item] = -np.inf
        if exclude is not None:
            s[np.asarray(exclude, dtype=np.int64)] = -np.inf
        return top_k(s, k)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        history: UserHistory | None = None,
        exclude: Sequence[int] | np.ndarray | None = None,
        personal_weight: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Semantic product search: items whose text is closest to `query`, best first.

        With a non-empty `history` the results are re-ranked for the user:
        (1 - beta) * cos(query, item) + beta * cos(profile, item), beta = `personal_weight`
        (default: config.search_personal_weight). The query text is encoded and forgotten: it
        is never cached or stored.
        """
        self._check_fitted()
        if not isinstance(query, str) or not query.strip():
            raise ValidationError("query", "is empty; give some words to search for")
        q = self.encode_texts([query], use_cache=False)[0]
        s = (self.item_embeddings @ q).astype(np.float64)
        beta = (
            self.config.search_personal_weight
            if personal_weight is None
            else float(personal_weight)
        )
        if history is not None and len(history) and beta > 0:
            s = (1.0 - beta) * s + beta * self.score(history).astype(np.float64)
        if exclude is not None:
            s[np.asarray(exclude, dtype=np.int64)] = -np.inf
        return top_k(s, k)

    def query_embedding(self, query: str) -> np.ndarray:
        """The unit embedding of a search query (for UserHistory.query_embeddings); never cached."""
        return self.encode_texts([query], use_cache=False)[0]

    # ---- contributions and explanations ----------------------------------------------------------
    def _entry_weights(self, history: UserHistory) -> np.ndarray:
        """Per history entry, the weight it puts into the profile (0 for entries that add none)."""
        items = np.asarray(history.items, dtype=np.int64)
        inside = np.flatnonzero((items >= 0) & (items < self.n_items))
        out = np.zeros(len(items), np.float64)
        if not inside.size:
            return out
        w = self._history_weights(history)[inside].astype(np.float64)
        if self.config.aggregate == "sum" and not self.config.binary:
            out[inside] = w
            return out
        # "max" (and binary): the entry holding each item's strongest weight carries it
        _, top, pos = strongest(items[inside], w)
        out[inside[pos]] = 1.0 if self.config.binary else top
        return out

    def contributions(self, history: UserHistory, items: np.ndarray) -> np.ndarray | None:
        """w_j (e_j . e_i) / ||p|| per history entry j, or None for a history with search
        queries (the query part of the profile is no entry's)."""
        self._check_fitted()
        if history.query_embeddings is not None and np.size(history.query_embeddings):
            return None
        targets = np.asarray(items, dtype=np.int64)
        raw, _, _, _ = self._profile(history)
        norm = float(np.linalg.norm(raw))
        out = np.zeros((len(targets), len(history)), np.float64)
        w = self._entry_weights(history)
        used = np.flatnonzero(w)
        if norm == 0 or not used.size or not len(targets):
            return out
        e = self.item_embeddings.astype(np.float64)
        sims = e[targets] @ e[np.asarray(history.items, dtype=np.int64)[used]].T
        out[:, used] = sims * (w[used] / norm)[None, :]
        return out

    def explain(self, history: UserHistory, item: int) -> Explanation:
        """The history items most similar in text (ranked by their share of the score), or kind
        "search" when the user's search queries contribute most."""
        self._check_fitted()
        item = int(item)
        raw, row, _, q_w = self._profile(history)
        norm = float(np.linalg.norm(raw))
        if norm == 0 or not 0 <= item < self.n_items:
            return Explanation(
                item=item, kind="model", text="no item in your history points to this one"
            )
        e = self.item_embeddings[item].astype(np.float64)
        hist_items = np.nonzero(row)[0]
        contrib = row[hist_items] * (self.item_embeddings[hist_items].astype(np.float64) @ e) / norm
        query_part = 0.0
        if q_w > 0:
            qm = (
                np.asarray(history.query_embeddings, np.float64)
                .reshape(-1, e.shape[0])
                .mean(axis=0)
            )
            query_part = float(q_w * (qm @ e) / norm)
        return text_explanation(
            item, hist_items, contrib, query_part, self.item_titles, strongest_actions(history)
        )

    def explain_search(self, query: str, item: int) -> Explanation:
        """Why `item` is a result of `query`: "matches your search 'q'"."""
        q = " ".join(str(query).split())[:_TITLE_CHARS]
        return Explanation(item=int(item), kind="search", text=f"matches your search '{q}'")

    # ---- exact unlearning ------------------------------------------------------------------------
    @property
    def can_forget(self) -> bool:
        """True: training reads item text only, so no user is in the model.

        False with a LoRA adapter: the adapter was trained on shoppers' co-interactions and
        cannot unlearn them, so an erasure makes the model owe a retrain (with a refitted
        adapter). A subclass that fits differently does not inherit this: it must say so itself.
        """
        return type(self).fit is ContentRecommender.fit and self.config.adapter is None

    def forget(self, removed: InteractionDataset) -> UnlearningResult:
        """Nothing to remove: the item vectors depend on item text only."""
        t0 = time.perf_counter()
        if not self.can_forget:
            return super().forget(removed)
        self._check_fitted()
        return UnlearningResult(
            self.name,
            int(np.unique(removed.user_idx).size),
            0,
            time.perf_counter() - t0,
            "exact: trained on item text only, nothing to remove",
        )

    # ---- persistence -----------------------------------------------------------------------------
    def _state(self) -> dict[str, np.ndarray]:
        blobs = [t.encode("utf-8") for t in self.item_titles]
        offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
        titles = (
            np.frombuffer(b"".join(blobs), dtype=np.uint8)
            if blobs and offsets[-1]
            else np.zeros(0, np.uint8)
        )
        return {
            "item_embeddings": self.item_embeddings,
            "title_bytes": titles.copy(),
            "title_offsets": offsets,
        }

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.item_embeddings = arrays["item_embeddings"].astype(np.float32)
        raw = arrays["title_bytes"].tobytes()
        off = arrays["title_offsets"].astype(np.int64)
        self.item_titles = [raw[off[i] : off[i + 1]].decode("utf-8") for i in range(len(off) - 1)]
        self.event_weights = {str(k): float(v) for k, v in meta.get("event_weights", {}).items()}
        self.encoder_id = str(meta.get("encoder_id", ""))

    def _meta(self) -> dict[str, Any]:
        return {"event_weights": self.event_weights, "encoder_id": self.encoder_id}
