"""Nearest-neighbour search over unit item vectors: exact matrix product or a usearch HNSW graph.

Why usearch: `benchmarks/search.py` measured hnswlib, usearch and faiss-cpu (HNSW with the same
M=16, efConstruction=128, ef=128, one thread) on the 12,101 MiniLM vectors of Amazon Beauty with
its test queries: recall@10 against exact search 0.977 / 0.977 / 0.976, single-query p50
0.25 / 0.67 / 0.28 ms, build 5.5 / 13.7 / 8.1 s (a 2-core machine at load 15;
`benchmarks/RESULTS.md`, "Semantic product search"). All three are far inside the latency
budget, where the MiniLM query encoding costs about 60 ms on that machine. usearch is chosen
because it is kept up to date and ships wheels (hnswlib's last release, 2023, compiles from
source on install, which needs a C++ compiler), and, unlike faiss's HNSW, it removes and replaces
single vectors, which catalogue updates and deletions need. Its index file is its own format
(no pickle).

Why exact below `ann_min_items` (5,000 by default): a matrix-vector product over a few thousand
384-d vectors is exact, needs no build and costs a few milliseconds at most; a graph pays off on
larger catalogues (the same machine took 24 ms p50 for the exact product over Beauty's 12,101).

The vectors themselves are always kept (float32, also saved), so a filtered query whose
approximate candidates are mostly excluded can fall back to an exact product over the allowed
items, and the index can be rebuilt without re-encoding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["VectorIndex"]

_FILE = "ann.usearch"


class VectorIndex:
    """Inner-product (cosine on unit vectors) search over rows of a float32 matrix.

    Args:
        dim: vector size.
        use_ann: keep a usearch graph (else every query is an exact matrix product).
        connectivity / expansion_add / expansion_search: HNSW parameters (M, efConstruction, ef).
    """

    def __init__(
        self,
        dim: int,
        *,
        use_ann: bool,
        connectivity: int = 16,
        expansion_add: int = 128,
        expansion_search: int = 128,
    ) -> None:
        self.dim = int(dim)
        self.use_ann = bool(use_ann)
        self.connectivity = int(connectivity)
        self.expansion_add = int(expansion_add)
        self.expansion_search = int(expansion_search)
        self.vectors = np.zeros((0, self.dim), dtype=np.float32)
        self.live = np.zeros(0, dtype=bool)  # rows that may be returned
        self._index: object | None = None

    def _new_index(self) -> object:
        from usearch.index import Index

        return Index(
            ndim=self.dim,
            metric="ip",
            dtype="f32",
            connectivity=self.connectivity,
            expansion_add=self.expansion_add,
            expansion_search=self.expansion_search,
        )

    # ---- changes ----------------------------------------------------------------------------
    def set(self, rows: np.ndarray, vectors: np.ndarray, *, threads: int = 1) -> None:
        """Set (add or replace) the vectors of `rows`; rows past the end grow the matrix."""
        rows = np.asarray(rows, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(rows), self.dim)
        top = int(rows.max()) + 1 if rows.size else 0
        if top > len(self.vectors):
            grow = top - len(self.vectors)
            self.vectors = np.vstack([self.vectors, np.zeros((grow, self.dim), np.float32)])
            self.live = np.concatenate([self.live, np.zeros(grow, dtype=bool)])
        self.vectors[rows] = vectors
        self.live[rows] = True
        if not self.use_ann or not rows.size:
            return
        if self._index is None:
            self._index = self._new_index()
        idx = self._index
        contains = idx.contains  # type: ignore[attr-defined]
        present = np.asarray(contains(rows), dtype=np.bool_).reshape(len(rows))
        if present.any():
            idx.remove(rows[present])  # type: ignore[attr-defined]
        idx.add(rows, vectors, threads=threads)  # type: ignore[attr-defined]

    def remove(self, rows: np.ndarray) -> None:
        """Never return `rows` again."""
        rows = np.asarray(rows, dtype=np.int64)
        rows = rows[(rows >= 0) & (rows < len(self.live))]
        rows = rows[self.live[rows]]
        self.live[rows] = False
        self.vectors[rows] = 0.0
        if self._index is not None and rows.size:
            self._index.remove(rows)  # type: ignore[attr-defined]

    # ---- queries ----------------------------------------------------------------------------
    def similarities(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Exact cosine of `q` with the vectors of `rows`."""
        return self.vectors[rows] @ q

    def search(
        self, q: np.ndarray, n: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The `n` best live, allowed rows for unit query `q` (rows, cosines), best first."""
        mask = self.live if allowed is None else (self.live & allowed)
        n_ok = int(mask.sum())
        n = min(int(n), n_ok)
        if n <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if self._index is not None and self.use_ann and n_ok > 4 * n:
            # ask for more than n so that a mask excluding some rows still leaves n
            # (by the share of rows excluded, plus a margin); unmasked queries ask for n + 10
            want = min(int(np.ceil(n * len(self.live) / n_ok * 1.2)) + 10, len(self.live))
            if n_ok == len(self.live):
                want = n + 10
            m = self._index.search(q, want, threads=1)  # type: ignore[attr-defined]
            keys = np.asarray(m.keys, dtype=np.int64)
            keys = keys[mask[keys]]
            if len(keys) >= n:
                keys = keys[:n]
                sims = self.similarities(q, keys)
                order = np.lexsort((keys, -sims))
                return keys[order], sims[order]
        # exact: a small catalogue, or a mask that excludes most of the approximate candidates
        ok = np.flatnonzero(mask)
        sims = self.vectors[ok] @ q
        top = np.argpartition(-sims, n - 1)[:n] if n < len(ok) else np.arange(len(ok))
        top = top[np.lexsort((ok[top], -sims[top]))]
        return ok[top], sims[top]

    # ---- persistence ------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write the graph in usearch's own format (vectors are saved by the caller)."""
        if self._index is not None:
            self._index.save(str(directory / _FILE))  # type: ignore[attr-defined]

    def restore(self, directory: Path, vectors: np.ndarray, live: np.ndarray) -> None:
        """Load the graph written by `save` (rebuilt from the vectors when it is missing)."""
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.live = np.asarray(live, dtype=bool).copy()
        self._index = None
        if not self.use_ann:
            return
        path = directory / _FILE
        if path.exists():
            idx = self._new_index()
            idx.load(str(path))  # type: ignore[attr-defined]
            self._index = idx
        else:
            rows = np.flatnonzero(self.live)
            self.set(rows, self.vectors[rows])
