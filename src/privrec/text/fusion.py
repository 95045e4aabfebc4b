"""Fusion of the lexical (BM25) and dense (cosine) scores of product search.

The blend scores a candidate item `w * coverage ** p + (1 - w) * cosine`, where `coverage` is
its BM25 score divided by idf(query) (the sum of the query tokens' idf: how much of the query the
item covers). The pair (p, w) is chosen per query:

- **matched** query: some candidate holds at least `match_share` of the query's weight (the idf
  of its tokens that the catalogue knows, after typo correction). The shopper used the
  catalogue's own words, so BM25 is reliable: (`lexical_power`, `lexical_weight`), by default
  (1, 0.9), BM25 leads and the cosine orders items that match equally well;
- **partial** query: no item holds most of it, as when a shopper describes a product in other
  words ("make my eyelashes look longer"): (`partial_power`, `partial_weight`), by default
  (4, 0.9), so an item sharing one word of the sentence counts for little and a semantic match
  can rank above it.

Tokens the catalogue does not know do not count in the share: such a word is most often a
misspelling that typo correction could not fix, and it should not turn a brand query into a
"described in other words" one. The blend is a convex combination of a lexical and a semantic
score, the fusion Bruch et al. (2023, "An analysis of fusion functions for hybrid retrieval")
found better than reciprocal-rank fusion in and out of domain, and little affected by how the
scores are normalised; the power on the lexical part and choosing (power, weight) per query from
how well the lexical side matched are this module's own additions. The threshold and both pairs
were chosen on validation queries (`benchmarks/search.py`, `benchmarks/RESULTS.md`).

`rrf` is reciprocal-rank fusion, kept as an alternative.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BlendParams", "blend", "choose_blend", "rrf", "top_k"]


def top_k(scores: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Positions of the k highest `scores`, best first, ties broken by the smaller row.

    Every candidate tied with the k-th score is kept before the final sort, so the result does
    not depend on the order `np.argpartition` happens to leave ties in.
    """
    n = len(scores)
    if n > k:
        kth = np.partition(scores, n - k)[n - k]  # the k-th highest score
        part = np.flatnonzero(scores >= kth)
    else:
        part = np.arange(n)
    return part[np.lexsort((rows[part], -scores[part]))][:k]


@dataclass(frozen=True)
class BlendParams:
    """The blend used for one query.

    Attributes:
        power: exponent of the BM25 coverage.
        weight: weight of the BM25 part (the cosine gets 1 - weight).
        matched: whether the query counted as matched (else partial).
        share: the best candidate's share of the query's known-token weight (0 to 1).
    """

    power: float
    weight: float
    matched: bool
    share: float


def choose_blend(
    share: float,
    *,
    match_share: float,
    lexical_power: float,
    lexical_weight: float,
    partial_power: float,
    partial_weight: float,
) -> BlendParams:
    """The (power, weight) pair of a query whose best candidate holds `share` of its weight."""
    if not 0.0 <= share <= 1.0 + 1e-6:
        raise ValueError(f"share must be between 0 and 1, got {share}")
    if share >= match_share:
        return BlendParams(lexical_power, lexical_weight, True, share)
    return BlendParams(partial_power, partial_weight, False, share)


def blend(
    lexical: np.ndarray,
    dense: np.ndarray,
    query_weight: float,
    params: BlendParams,
) -> np.ndarray:
    """Fused scores `w * (lexical / query_weight) ** p + (1 - w) * dense` (float64).

    Args:
        lexical: BM25 scores of the candidates (0 where no query word matches).
        dense: cosine of query and candidate vectors (raw, -1 to 1).
        query_weight: the normaliser of the BM25 scores (idf(query)); 0 makes the lexical part 0.
        params: the query's blend (`choose_blend`).
    """
    lex = np.asarray(lexical, dtype=np.float64)
    cov = lex / query_weight if query_weight > 0 else np.zeros_like(lex)
    if params.power != 1.0:
        cov = cov**params.power
    return params.weight * cov + (1.0 - params.weight) * np.asarray(dense, dtype=np.float64)


def rrf(
    rows: np.ndarray, lexical_ranked: np.ndarray, dense_ranked: np.ndarray, weight: float, k: int
) -> np.ndarray:
    """Weighted reciprocal-rank fusion: `2 w / (k + rank)` from the lexical list and
    `2 (1 - w) / (k + rank)` from the dense list, for each of `rows` (float64)."""
    score = np.zeros(len(rows), dtype=np.float64)
    pos = {int(r): i for i, r in enumerate(rows.tolist())}
    for ranked, w in ((lexical_ranked, weight), (dense_ranked, 1.0 - weight)):
        for rank, r in enumerate(ranked.tolist()):
            score[pos[r]] += 2.0 * w / (k + rank + 1)
    return score
