"""Semantic product search: BM25 + MiniLM nearest neighbours + typo correction, fused.

A `SearchIndex` holds, per item row, its title and text (title, brand, category, description:
public catalogue data), a BM25 index of the texts (`privrec.text.lexical`, bm25s) and the texts'
unit MiniLM vectors in an exact or approximate nearest-neighbour index (`privrec.text.ann`,
usearch above `ann_min_items` items). A query is

1. typo-corrected: words the catalogue does not know are replaced by the closest catalogue word
   ("lipstik" -> "lipstick"; rapidfuzz, edit distance bounded by the word's length);
2. scored by BM25 over every allowed item (the `candidates` best kept) and encoded by MiniLM,
   whose `candidates` nearest allowed items are found;
3. fused over the union of both candidate lists (`privrec.text.fusion`): by default a blend
   `w * (bm25 / idf(query)) ** p + (1 - w) * cosine` (`fusion="blend"`), where idf(query), the
   sum of the query tokens' idf, scales BM25 to how much of the query an item covers, and
   (p, w) depend on the query: when some candidate holds most of the query's words (a share
   `match_share` of their idf, counting the words the catalogue knows) BM25 leads
   (`lexical_power` 1, `lexical_weight` 0.9) and the cosine orders items that match equally
   well; otherwise the shopper described the product in other words and the coverage is raised
   to `partial_power` 4, so an item sharing one word of a sentence counts for little and a
   semantic match can rank above it. Or reciprocal-rank fusion (`fusion="rrf"`). The defaults
   were chosen on the validation queries of `benchmarks/search.py` and judged on separate test
   queries (see `benchmarks/RESULTS.md`, "Semantic product search").

Query text is personal data: it is encoded without the embedding cache and never stored; only
item vectors go through `privrec.text.cache.EmbeddingCache` (the encoder's cache).

`save` writes JSON (config, titles, texts), one `.npz` (vectors, masks; loaded without pickle)
and usearch's own index file.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from privrec.core.errors import ConfigError, NotFoundError, ValidationError
from privrec.text.ann import VectorIndex
from privrec.text.encoder import SentenceEncoder
from privrec.text.fusion import blend, choose_blend, rrf, top_k
from privrec.text.lexical import LexicalIndex, TypoCorrection, words

log = logging.getLogger(__name__)

__all__ = ["SearchConfig", "SearchHits", "SearchIndex", "SearchMode"]

SearchMode = Literal["hybrid", "lexical", "dense"]
_MODES = ("hybrid", "lexical", "dense")
_FORMAT = 1


class SearchConfig(BaseModel):
    """Settings of a search index (unknown fields rejected).

    Attributes:
        k1 / b: BM25 term saturation and length normalisation.
        typo: correct query words the catalogue does not know.
        typo_min_len: shortest word that is corrected.
        typo_max_edits: most edits of a correction of a word of `typo_long_len` letters or more.
        typo_long_len: shorter words get at most one edit ("kitten" must not become "kitchen").
        ann: "auto" (usearch HNSW from `ann_min_items` items, else exact), "exact" or "usearch".
        ann_min_items: catalogue size from which "auto" builds an approximate index.
        ann_connectivity / ann_expansion_add / ann_expansion_search: HNSW M, efConstruction, ef.
        fusion: "blend" (normalised score blend) or "rrf" (reciprocal-rank fusion).
        lexical_weight: weight of the normalised BM25 score in the blend of a matched query
            (dense gets the rest); in "rrf", the weight of the lexical ranking.
        lexical_norm: BM25 divided by the query's own weight (sum of its tokens' idf: how much
            of the query an item covers) or by the best BM25 score of this query ("max").
        dense_norm: cosine min-max scaled over the fused candidates, or the raw cosine.
        lexical_power: the normalised BM25 score of a matched query is raised to this power.
        match_share: a query is matched when one fused candidate holds at least this share of
            its weight (the idf of its tokens that the catalogue knows); 0: every query is.
        partial_power / partial_weight: power and weight of a query that is not matched (a
            product described in other words): a high power makes an item matching a small
            part of the query (one word of a sentence) count for little, so a semantic match
            can rank above it.
        rrf_k: the constant of reciprocal-rank fusion, 1 / (rrf_k + rank).
        candidates: how many items each retriever passes to the fusion.
        rerank_weight: weight the service gives the shopper's own model score when it re-ranks
            the fused list (the index itself does not use it).
        max_query_chars: longest accepted query.
        batch_size: texts per MiniLM forward pass when items are encoded.
    """

    model_config = ConfigDict(extra="forbid")

    k1: float = Field(default=1.2, gt=0)
    b: float = Field(default=0.75, ge=0, le=1)
    typo: bool = True
    typo_min_len: int = Field(default=4, ge=2)
    typo_max_edits: int = Field(default=2, ge=1, le=3)
    typo_long_len: int = Field(default=8, ge=2)
    ann: Literal["auto", "exact", "usearch"] = "auto"
    ann_min_items: int = Field(default=5000, ge=1)
    ann_connectivity: int = Field(default=16, ge=4, le=128)
    ann_expansion_add: int = Field(default=128, ge=8)
    ann_expansion_search: int = Field(default=128, ge=8)
    fusion: Literal["blend", "rrf"] = "blend"
    lexical_weight: float = Field(default=0.9, ge=0, le=1)
    lexical_norm: Literal["query", "max"] = "query"
    dense_norm: Literal["minmax", "raw"] = "raw"
    lexical_power: float = Field(default=1.0, gt=0, le=8)
    match_share: float = Field(default=0.6, ge=0, le=1)
    partial_power: float = Field(default=4.0, gt=0, le=8)
    partial_weight: float = Field(default=0.9, ge=0, le=1)
    rrf_k: int = Field(default=60, ge=1)
    candidates: int = Field(default=100, ge=1, le=10_000)
    rerank_weight: float = Field(default=0.0, ge=0, le=1)
    max_query_chars: int = Field(default=500, ge=1)
    batch_size: int = Field(default=64, ge=1)


@dataclass(frozen=True)
class SearchHits:
    """The result of one search, best first.

    Attributes:
        items: int64 item rows (positions in the texts given to `build` / `update`).
        scores: the fused score (higher is better; BM25 in lexical mode, cosine in dense mode).
        lexical: per hit, whether it matched a query word (after typo correction).
        dense: per hit, the cosine of query and item vector (nan when no query vector was made,
            as in lexical mode without `query_vector`, or when the index has no vectors).
        corrected_query: the typo-corrected query when it differs from the input, else None.
        match_share: in a hybrid blend, the largest share of the query's weight one candidate
            held (see `SearchConfig.match_share`); nan otherwise.
    """

    items: np.ndarray
    scores: np.ndarray
    lexical: np.ndarray
    dense: np.ndarray
    corrected_query: str | None
    match_share: float = float("nan")

    def __len__(self) -> int:
        return len(self.items)


class SearchIndex:
    """Hybrid (BM25 + dense) product search over item texts; build with `SearchIndex.build`."""

    def __init__(self, config: SearchConfig, encoder: SentenceEncoder | None) -> None:
        self.config = config
        self.encoder = encoder
        self.titles: list[str] = []
        self.texts: list[str] = []
        self.removed = np.zeros(0, dtype=bool)
        self.lexical_index = LexicalIndex(
            k1=config.k1,
            b=config.b,
            typo_min_len=config.typo_min_len,
            typo_max_edits=config.typo_max_edits,
            typo_long_len=config.typo_long_len,
        )
        self.vector_index: VectorIndex | None = None
        self.model_id: str | None = None
        self._lock = threading.RLock()

    # ---- building ---------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        titles: Sequence[str],
        texts: Sequence[str],
        encoder: SentenceEncoder | None,
        *,
        vectors: np.ndarray | None = None,
        config: SearchConfig | None = None,
    ) -> SearchIndex:
        """Index item titles and texts (row i = item i).

        Args:
            titles: short item names.
            texts: full item texts (title, brand, category, description) for BM25 and embeddings.
            encoder: MiniLM encoder for item texts and queries; None: lexical search only
                (unless `vectors` are given, then dense search needs `query_vector`).
            vectors: precomputed unit item vectors (n, dim), e.g. from the content model.
            config: the index settings (default `SearchConfig()`).
        """
        cfg = config if config is not None else SearchConfig()
        titles, texts = _check_texts(titles, texts)
        index = cls(cfg, encoder)
        if vectors is None and encoder is not None and texts:
            vectors = encoder.encode(texts, batch_size=cfg.batch_size)
        rows = np.arange(len(texts), dtype=np.int64)
        if vectors is not None:
            vectors = _check_vectors(vectors, len(texts), None)
            use_ann = cfg.ann == "usearch" or (
                cfg.ann == "auto" and len(texts) >= cfg.ann_min_items
            )
            index.vector_index = VectorIndex(
                vectors.shape[1],
                use_ann=use_ann,
                connectivity=cfg.ann_connectivity,
                expansion_add=cfg.ann_expansion_add,
                expansion_search=cfg.ann_expansion_search,
            )
            index.vector_index.set(rows, vectors, threads=0)
        if encoder is not None:
            index.model_id = encoder.model_id
        index.titles = list(titles)
        index.texts = list(texts)
        index.removed = np.zeros(len(texts), dtype=bool)
        index.lexical_index.set_texts(rows, texts)
        return index

    @property
    def n_items(self) -> int:
        """Number of item rows (removed ones included: rows never shift)."""
        return len(self.texts)

    @property
    def has_dense(self) -> bool:
        """Whether the index holds item vectors (dense and hybrid search possible)."""
        return self.vector_index is not None

    # ---- queries ----------------------------------------------------------------------------
    def query_vector(self, query: str) -> np.ndarray:
        """The unit vector of `query` from the encoder (encoded without the cache: never stored)."""
        query = self._check_query(query)
        if self.encoder is None:
            raise ValidationError(
                "encoder", "this search index has no sentence encoder; build or load it with one"
            )
        return np.asarray(self.encoder.encode([query], use_cache=False)[0], dtype=np.float32)

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        mode: SearchMode = "hybrid",
        allowed: np.ndarray | None = None,
        query_vector: np.ndarray | None = None,
    ) -> SearchHits:
        """The `k` best items for `query`.

        Args:
            query: the shopper's words.
            k: how many items at most.
            mode: "hybrid" (BM25 and dense fused; BM25 alone when the index has no vectors),
                "lexical" (BM25 after typo correction) or "dense" (MiniLM cosine).
            allowed: bool mask over item rows; False rows (hidden, out of stock) never returned.
            query_vector: the query's unit vector when the caller already has it (else encoded).

        Raises:
            ValidationError: empty or too long query, k < 1, unknown mode, a bad mask or query
                vector, or dense mode on an index without vectors or encoder.
        """
        query = self._check_query(query)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValidationError("k", f"{k!r} is not a positive whole number of results")
        if mode not in _MODES:
            raise ValidationError("mode", f"{mode!r} is not one of {', '.join(_MODES)}")
        k = int(k)
        want_dense = mode == "dense" or (mode == "hybrid" and self.has_dense)
        if mode == "dense" and not self.has_dense:
            raise ValidationError(
                "mode",
                "dense search needs item vectors and an encoder; this index was built without "
                "one (use mode 'lexical' or build the index with a SentenceEncoder)",
            )
        qv: np.ndarray | None = None
        if query_vector is not None:
            qv = self._check_query_vector(query_vector)
        elif want_dense:
            if self.encoder is None:
                raise ValidationError(
                    "query_vector",
                    f"{mode} search on an index without an encoder needs the query's vector; "
                    "pass query_vector or load the index with a SentenceEncoder",
                )
            qv = self.query_vector(query)
        with self._lock:
            mask = self._mask(allowed)
            corr = (
                self.lexical_index.correct(query)
                if self.config.typo
                else TypoCorrection(tuple(words(query)), False)
            )
            corrected = corr.text if corr.changed else None
            lex = (
                np.zeros(0, np.float32)
                if mode == "dense"
                else self.lexical_index.scores(corr.words)
            )
            if lex.size:
                lex = np.where(mask, lex, 0.0).astype(np.float32)
            if mode == "lexical" or not want_dense:
                return self._lexical_hits(lex, k, qv, corrected)
            assert self.vector_index is not None and qv is not None
            d_rows, d_sims = self.vector_index.search(
                qv, max(k, self.config.candidates) if mode == "hybrid" else k, mask
            )
            if mode == "dense":
                lex_flag = self.lexical_index.scores(corr.words)[d_rows] > 0
                return SearchHits(
                    d_rows,
                    d_sims.astype(np.float32),
                    lex_flag,
                    d_sims.astype(np.float32),
                    corrected,
                )
            return self._fuse(lex, d_rows, qv, k, corrected, corr.words)

    def _lexical_hits(
        self, lex: np.ndarray, k: int, qv: np.ndarray | None, corrected: str | None
    ) -> SearchHits:
        rows = np.flatnonzero(lex > 0)
        order = top_k(lex[rows], rows, k)
        rows = rows[order]
        if qv is not None and self.vector_index is not None:
            dense = self.vector_index.similarities(qv, rows).astype(np.float32)
        else:
            dense = np.full(len(rows), np.nan, dtype=np.float32)
        return SearchHits(rows, lex[rows], np.ones(len(rows), dtype=bool), dense, corrected)

    def _fuse(
        self,
        lex: np.ndarray,
        d_rows: np.ndarray,
        qv: np.ndarray,
        k: int,
        corrected: str | None,
        query_words: Sequence[str],
    ) -> SearchHits:
        cfg = self.config
        assert self.vector_index is not None
        l_rows = np.flatnonzero(lex > 0)
        l_rows = l_rows[top_k(lex[l_rows], l_rows, max(k, cfg.candidates))]
        rows = np.union1d(l_rows, d_rows)
        lex_c = lex[rows]
        dense_c = self.vector_index.similarities(qv, rows).astype(np.float32)
        share = float("nan")
        if cfg.fusion == "rrf":
            score = rrf(rows, l_rows, d_rows, cfg.lexical_weight, cfg.rrf_k)
        else:
            if cfg.lexical_norm == "query":
                top_lex = self.lexical_index.query_weight(query_words)
            else:
                top_lex = float(lex_c.max()) if lex_c.size else 0.0
            if cfg.dense_norm == "raw":
                dense_n = dense_c
            else:
                lo, hi = (float(dense_c.min()), float(dense_c.max())) if dense_c.size else (0, 0)
                dense_n = (dense_c - lo) / (hi - lo) if hi > lo else np.ones_like(dense_c)
            share = self.lexical_index.match_share(query_words, rows[lex_c > 0])
            params = choose_blend(
                share,
                match_share=cfg.match_share,
                lexical_power=cfg.lexical_power,
                lexical_weight=cfg.lexical_weight,
                partial_power=cfg.partial_power,
                partial_weight=cfg.partial_weight,
            )
            score = blend(lex_c, dense_n, top_lex, params)
        order = top_k(score, rows, k)
        return SearchHits(
            rows[order],
            score[order].astype(np.float32),
            lex_c[order] > 0,
            dense_c[order],
            corrected,
            share,
        )

    # ---- changes ----------------------------------------------------------------------------
    def update(
        self,
        items: np.ndarray,
        titles: Sequence[str],
        texts: Sequence[str],
        vectors: np.ndarray | None = None,
    ) -> None:
        """Set the titles and texts of changed items; rows >= n_items append new items.

        Only items whose text changed (or that are new) are re-embedded (through the encoder's
        cache), unless `vectors` are given. A removed item that is updated is searchable again.
        Rows skipped when appending (a gap) stay empty and are never returned.
        """
        rows = _check_rows(items, None)
        titles, texts = _check_texts(titles, texts)
        if len(titles) != len(rows):
            raise ValidationError(
                "titles", f"{len(titles)} titles for {len(rows)} items; give one per item"
            )
        if len(np.unique(rows)) != len(rows):
            raise ValidationError("items", "an item appears more than once; give each once")
        with self._lock:
            n_old = self.n_items
            if self.vector_index is not None:
                if vectors is not None:
                    vecs = _check_vectors(vectors, len(rows), self.vector_index.dim)
                    self.vector_index.set(rows, vecs)
                else:
                    changed = np.array(
                        [
                            r >= n_old or self.removed[r] or self.texts[r] != t
                            for r, t in zip(rows.tolist(), texts, strict=True)
                        ],
                        dtype=bool,
                    )
                    if changed.any():
                        if self.encoder is None:
                            raise ValidationError(
                                "vectors",
                                "this index has item vectors but no encoder; give the changed "
                                "items' vectors",
                            )
                        todo = [t for t, c in zip(texts, changed.tolist(), strict=True) if c]
                        vecs = self.encoder.encode(todo, batch_size=self.config.batch_size)
                        self.vector_index.set(rows[changed], vecs)
            top = max(n_old, int(rows.max()) + 1 if rows.size else 0)
            if top > n_old:
                self.titles.extend([""] * (top - n_old))
                self.texts.extend([""] * (top - n_old))
                gap = np.ones(top - n_old, dtype=bool)  # unset new rows stay hidden
                self.removed = np.concatenate([self.removed, gap])
            for r, title, text in zip(rows.tolist(), titles, texts, strict=True):
                self.titles[r] = title
                self.texts[r] = text
            self.removed[rows] = False
            self.lexical_index.set_texts(rows, texts)

    def remove(self, items: np.ndarray) -> None:
        """Delete items: they are never returned again (their row numbers stay taken)."""
        rows = _check_rows(items, self.n_items)
        with self._lock:
            self.removed[rows] = True
            for r in rows.tolist():
                self.titles[r] = ""
                self.texts[r] = ""
            if self.vector_index is not None:
                self.vector_index.remove(rows)
            # their words leave BM25 statistics and the typo vocabulary too
            self.lexical_index.set_texts(rows, [""] * len(rows))

    # ---- persistence ------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write the index to `directory` (JSON, .npz and usearch's index file; no pickle)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with self._lock:
            meta: dict[str, Any] = {
                "format": _FORMAT,
                "config": self.config.model_dump(),
                "n_items": self.n_items,
                "model_id": self.model_id,
                "dim": None if self.vector_index is None else self.vector_index.dim,
                "use_ann": bool(self.vector_index is not None and self.vector_index.use_ann),
            }
            arrays: dict[str, np.ndarray] = {"removed": self.removed}
            if self.vector_index is not None:
                arrays["vectors"] = self.vector_index.vectors
                arrays["live"] = self.vector_index.live
                self.vector_index.save(directory)
            np.savez(directory / "arrays.npz", **arrays)  # type: ignore[arg-type]
            (directory / "items.json").write_text(
                json.dumps({"titles": self.titles, "texts": self.texts}), encoding="utf-8"
            )
            # written last: a folder with index.json is complete
            (directory / "index.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path, encoder: SentenceEncoder | None) -> SearchIndex:
        """Read an index written by `save`; `encoder` must be the one its vectors came from."""
        directory = Path(directory)
        meta_path = directory / "index.json"
        if not meta_path.exists():
            raise NotFoundError(f"search index: no index.json in {directory}")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        if meta.get("format") != _FORMAT:
            raise ConfigError(f"search index: format {meta.get('format')!r} is not {_FORMAT}")
        if encoder is not None and meta.get("model_id") and encoder.model_id != meta["model_id"]:
            raise ConfigError(
                f"encoder: the index's vectors come from {meta['model_id']!r}, not "
                f"{encoder.model_id!r}; rebuild the index or load it with that encoder"
            )
        saved = dict(meta["config"])
        if "match_share" not in saved:
            # saved before the per-query blend: the fusion is a query-time setting, so such an
            # index gets today's fusion defaults (its BM25, typo and ANN settings are kept)
            for key in ("fusion", "lexical_weight", "lexical_norm", "dense_norm", "lexical_power"):
                saved.pop(key, None)
        index = cls(SearchConfig.model_validate(saved), encoder)
        items = json.loads((directory / "items.json").read_text(encoding="utf-8"))
        index.titles = list(items["titles"])
        index.texts = list(items["texts"])
        index.model_id = meta.get("model_id")
        with np.load(directory / "arrays.npz", allow_pickle=False) as z:
            index.removed = np.asarray(z["removed"], dtype=bool)
            if meta.get("dim") is not None:
                vi = VectorIndex(
                    int(meta["dim"]),
                    use_ann=bool(meta.get("use_ann")),
                    connectivity=index.config.ann_connectivity,
                    expansion_add=index.config.ann_expansion_add,
                    expansion_search=index.config.ann_expansion_search,
                )
                vi.restore(directory, z["vectors"], z["live"])
                index.vector_index = vi
        index.lexical_index.set_texts(np.arange(index.n_items, dtype=np.int64), index.texts)
        return index

    # ---- checks -----------------------------------------------------------------------------
    def _check_query(self, query: str) -> str:
        if not isinstance(query, str) or not query.strip():
            raise ValidationError("query", "is empty; give at least one word to search for")
        if len(query) > self.config.max_query_chars:
            raise ValidationError(
                "query", f"is {len(query)} characters long; at most {self.config.max_query_chars}"
            )
        return query.strip()

    def _check_query_vector(self, q: np.ndarray) -> np.ndarray:
        if self.vector_index is None:
            raise ValidationError("query_vector", "this index has no item vectors to compare with")
        q = np.asarray(q, dtype=np.float32).reshape(-1)
        if q.shape[0] != self.vector_index.dim or not np.all(np.isfinite(q)):
            raise ValidationError(
                "query_vector",
                f"must be {self.vector_index.dim} finite numbers (got {q.shape[0]})",
            )
        return q

    def _mask(self, allowed: np.ndarray | None) -> np.ndarray:
        mask = ~self.removed
        if allowed is not None:
            a = np.asarray(allowed)
            if a.dtype != bool or a.shape != (self.n_items,):
                raise ValidationError(
                    "allowed",
                    f"must be a bool mask of {self.n_items} items (got {a.dtype} {a.shape})",
                )
            mask = mask & a
        return mask


def _check_texts(titles: Sequence[str], texts: Sequence[str]) -> tuple[list[str], list[str]]:
    titles = list(titles)
    texts = list(texts)
    if len(titles) != len(texts):
        raise ValidationError(
            "texts", f"{len(texts)} texts for {len(titles)} titles; give one text per item"
        )
    for name, seq in (("titles", titles), ("texts", texts)):
        for i, t in enumerate(seq):
            if not isinstance(t, str):
                raise ValidationError(name, f"entry {i} is {type(t).__name__}, not a string")
    return titles, texts


def _check_rows(items: np.ndarray, n: int | None) -> np.ndarray:
    rows = np.asarray(items)
    if rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
        raise ValidationError("items", "must be a 1-d array of item rows (integers)")
    rows = rows.astype(np.int64)
    if rows.size and (rows.min() < 0 or (n is not None and rows.max() >= n)):
        bound = "0 or more" if n is None else f"between 0 and {n - 1}"
        raise ValidationError("items", f"item rows must be {bound}")
    return rows


def _check_vectors(vectors: np.ndarray, n: int, dim: int | None) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2 or v.shape[0] != n or (dim is not None and v.shape[1] != dim):
        want = f"({n}, {dim if dim is not None else 'dim'})"
        raise ValidationError("vectors", f"shape {v.shape} does not match {want}")
    if not np.all(np.isfinite(v)):
        raise ValidationError("vectors", "contains nan or infinite values")
    return np.ascontiguousarray(v)
