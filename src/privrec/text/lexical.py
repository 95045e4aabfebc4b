"""Lexical side of product search: tokenizer, BM25 (bm25s) and typo correction (rapidfuzz).

Texts are lower-cased, split into runs of letters and digits, English stopwords (bm25s's list)
dropped and the rest stemmed with the Snowball English stemmer (PyStemmer), so "lipsticks" finds
"Lipstick". BM25 itself is `bm25s` (Lucene's BM25 variant over a sparse matrix): scoring one
query against every item is one sparse row sum, well under a millisecond for 12k items.

Typo tolerance works on surface words: a query word that is neither a catalogue word nor has a
stem the index knows is replaced by the closest catalogue word within a Levenshtein distance
bounded by the word's length (one edit below `typo_long_len` letters, else `typo_max_edits`;
rapidfuzz); ties go to the word found in more items. Words shorter
than `typo_min_len` are never corrected (too many near neighbours: "gel" -> "gem").

bm25s has no incremental update: `LexicalIndex.set_texts` re-tokenizes only the changed items and
re-indexes the token lists, which takes about 0.1 s for 12k items.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["LexicalIndex", "TypoCorrection", "words"]

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def words(text: str) -> list[str]:
    """Lower-cased runs of letters and digits of `text`."""
    return _WORD.findall(text.lower()) if text else []


def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def _stemmer() -> object:
    import Stemmer

    return Stemmer.Stemmer("english")


@dataclass(frozen=True)
class TypoCorrection:
    """The words a query was searched with after typo correction.

    Attributes:
        words: the query's words, corrected ones replaced.
        changed: whether any word was replaced.
    """

    words: tuple[str, ...]
    changed: bool

    @property
    def text(self) -> str:
        """The corrected words joined by spaces."""
        return " ".join(self.words)


class LexicalIndex:
    """BM25 over item texts with typo correction of query words.

    Args:
        k1: BM25 term-frequency saturation.
        b: BM25 length normalisation.
        typo_min_len: shortest query word that may be corrected.
        typo_max_edits: most character edits of a correction of a long word.
        typo_long_len: words shorter than this get at most 1 edit ("kitten" is not "kitchen").
    """

    def __init__(
        self,
        *,
        k1: float = 1.2,
        b: float = 0.75,
        typo_min_len: int = 4,
        typo_max_edits: int = 2,
        typo_long_len: int = 8,
    ) -> None:
        self.k1 = float(k1)
        self.b = float(b)
        self.typo_min_len = int(typo_min_len)
        self.typo_max_edits = int(typo_max_edits)
        self.typo_long_len = int(typo_long_len)
        self._stop = _stopwords()
        self._stem = _stemmer()
        self._stem_memo: dict[str, str] = {}
        self._doc_tokens: list[list[str]] = []
        self._doc_words: list[set[str]] = []
        self._word_df: Counter[str] = Counter()
        self._token_df: Counter[str] = Counter()
        self._cands: list[str] = []
        self._len_start = np.zeros(66, dtype=np.int64)
        self._retriever: object | None = None
        self._vocab: frozenset[str] = frozenset()
        self._n_live = 0

    # ---- tokens -----------------------------------------------------------------------------
    def _stem_word(self, w: str) -> str:
        s = self._stem_memo.get(w)
        if s is None:
            s = self._stem_memo[w] = self._stem.stemWord(w)  # type: ignore[attr-defined]
        return s

    def tokens(self, text_words: Sequence[str]) -> list[str]:
        """BM25 tokens (stopwords dropped, stemmed) of already split words."""
        return [self._stem_word(w) for w in text_words if w not in self._stop]

    @property
    def n_docs(self) -> int:
        """How many item texts are indexed (removed items keep an empty row)."""
        return len(self._doc_tokens)

    # ---- indexing ---------------------------------------------------------------------------
    def set_texts(self, rows: np.ndarray, texts: Sequence[str]) -> None:
        """Set the texts of item rows (rows >= n_docs append; gaps get empty texts), re-index."""
        rows = np.asarray(rows, dtype=np.int64)
        top = int(rows.max()) + 1 if rows.size else 0
        while len(self._doc_tokens) < top:
            self._doc_tokens.append([])
            self._doc_words.append(set())
        for r, text in zip(rows.tolist(), texts, strict=True):
            ws = words(text)
            old = self._doc_words[r]
            new = set(ws)
            self._word_df.subtract(old - new)
            self._word_df.update(new - old)
            self._doc_words[r] = new
            toks = self.tokens(ws)
            self._token_df.subtract(set(self._doc_tokens[r]) - set(toks))
            self._token_df.update(set(toks) - set(self._doc_tokens[r]))
            self._doc_tokens[r] = toks
        self._reindex()

    def _reindex(self) -> None:
        import bm25s

        # bm25s sets its own logger to DEBUG on import, so every re-index would log a line
        # through the application's handlers; only its warnings are of interest here.
        logging.getLogger("bm25s").setLevel(logging.WARNING)

        self._word_df = +self._word_df  # drop words no item has any more
        self._token_df = +self._token_df
        self._n_live = sum(1 for t in self._doc_tokens if t)
        # correction candidates sorted by length, so those within d edits of a word's length
        # are one contiguous slice
        cands = sorted((w for w in self._word_df if not w.isdigit()), key=lambda w: (len(w), w))
        self._cands = cands
        self._len_start = np.searchsorted(
            np.array([len(w) for w in cands], dtype=np.int64), np.arange(0, 66), side="left"
        )
        retriever = bm25s.BM25(k1=self.k1, b=self.b, method="lucene")
        # bm25s needs at least one token per document: empty items get a token no query has
        corpus = [t if t else ["\x00"] for t in self._doc_tokens]
        if corpus:
            retriever.index(corpus, show_progress=False)
            self._vocab = frozenset(retriever.vocab_dict)
            self._retriever = retriever
        else:
            self._vocab = frozenset()
            self._retriever = None

    # ---- queries ----------------------------------------------------------------------------
    def correct(self, query: str) -> TypoCorrection:
        """The query's words with unknown ones replaced by the closest catalogue word."""
        from rapidfuzz import process
        from rapidfuzz.distance import Levenshtein

        out: list[str] = []
        changed = False
        for w in words(query):
            if (
                len(w) < self.typo_min_len
                or w.isdigit()
                or w in self._stop
                or w in self._word_df
                or self._stem_word(w) in self._vocab
            ):
                out.append(w)
                continue
            max_d = 1 if len(w) < self.typo_long_len else self.typo_max_edits
            lo = int(self._len_start[min(max(len(w) - max_d, 0), 65)])
            hi = (
                int(self._len_start[min(len(w) + max_d + 1, 65)])
                if len(w) + max_d < 65
                else len(self._cands)
            )
            found = process.extract(
                w, self._cands[lo:hi], scorer=Levenshtein.distance, score_cutoff=max_d, limit=None
            )
            best: tuple[int, int, str] | None = None  # (distance, -df, word): smallest wins
            for cand, d, _ in found:
                key = (int(d), -self._word_df[cand], cand)
                if best is None or key < best:
                    best = key
            if best is None:
                out.append(w)
            else:
                out.append(best[2])
                changed = True
        return TypoCorrection(tuple(out), changed)

    def idf(self, token: str) -> float:
        """Lucene's BM25 idf of a token (a token no item has gets the highest idf)."""
        df = self._token_df.get(token, 0)
        n = self._n_live
        return float(np.log1p((n - df + 0.5) / (df + 0.5)))

    def query_weight(self, query_words: Sequence[str]) -> float:
        """Sum of the idf of the query's tokens: about the BM25 score of an item of average
        length holding each query token once. Dividing by it measures how much of the query an
        item covers: an item matching only "hair" of "dry my hair after a shower" scores low
        (stopwords aside; 0 when the query has no token)."""
        return float(sum(self.idf(t) for t in dict.fromkeys(self.tokens(query_words))))

    def match_share(self, query_words: Sequence[str], rows: np.ndarray) -> float:
        """The largest share of the query's weight that one of `rows` holds: the sum of the idf
        of the query tokens found in the item over the sum for every query token the catalogue
        knows (unknown tokens, often misspellings left uncorrected, are not counted; 0 when the
        query has no known token)."""
        toks = [t for t in dict.fromkeys(self.tokens(query_words)) if t in self._vocab]
        idf = {t: self.idf(t) for t in toks}
        total = sum(idf.values())
        if total <= 0:
            return 0.0
        best = 0.0
        for r in np.asarray(rows, dtype=np.int64).tolist():
            have = set(self._doc_tokens[r]) if 0 <= r < len(self._doc_tokens) else set()
            best = max(best, sum(v for t, v in idf.items() if t in have) / total)
            if best >= 1.0 - 1e-9:
                return 1.0
        return min(best, 1.0)

    def scores(self, query_words: Sequence[str]) -> np.ndarray:
        """BM25 score of every item for the query words (float32, zeros where nothing matches)."""
        toks = [t for t in dict.fromkeys(self.tokens(query_words)) if t in self._vocab]
        if not toks or self._retriever is None:
            return np.zeros(self.n_docs, dtype=np.float32)
        return np.asarray(self._retriever.get_scores(toks), dtype=np.float32)  # type: ignore[attr-defined]
