"""Serving the hybrid per request: exact scores on a candidate set, and one scoring per request
that the request's explanations reuse.

Candidates (`HybridConfig.candidates` = N; None: every item is scored, as offline). A component's
z-score needs the mean and standard deviation of its row over ALL items; three components are
cheap over all items and the costly one is linear:
    cf, sequential, popularity  scored over every item as in the full path (EASE: the sum of the
                                history's rows of B; SASRec: one forward pass, then a 64-wide
                                product, cheaper than a graph search; popularity: a constant row,
                                z-scored once); each gives its top N items as candidates;
    content                     s = E p (E: unit item text vectors, p: the shopper's unit
                                profile), so mean(s) = mean(E) . p and mean(s^2) = p' (E'E / n) p
                                are exact from a 384-wide vector and a 384 x 384 matrix; its top N
                                come from a usearch HNSW graph (half precision), and only the
                                candidates' rows of E are read (the full product reads all
                                12,101 x 384 floats).
So every candidate gets the score full scoring gives it (to float rounding: the moments are summed
in another order); an item outside the candidates keeps its fully scored parts, shifted below the
lowest candidate (never above an exactly scored item). The recall of candidate lists against full
scoring is measured in `benchmarks/serve_hybrid.py`.

Explanations: `HybridRecommender.explain` is called once per listed item with the same history
object right after `score`; the request's view (route, weights, z-scores, the content profile,
SASRec's outputs for the occlusion variants, computed in the scoring forward pass when candidates
are on) is kept per thread for that history object, so ten explanations cost one scoring instead
of eleven. The results are the same as without it (tests compare them field for field).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from privrec.core.types import Explanation, UserHistory, strongest_actions
from privrec.models.base import history_explanation
from privrec.models.content import ContentRecommender, text_explanation
from privrec.models.ease import EASE
from privrec.models.hybrid_blend import component_z, zscore
from privrec.models.nn.numpy_infer import NumpyLastHidden
from privrec.models.sequential import SequentialRecommender

# The hybrid model (`privrec.models.hybrid.HybridRecommender`, which imports this module): typed
# loosely here so that the two modules do not import each other.
HybridRecommender = Any

__all__ = [
    "LinearScores",
    "RequestView",
    "ServingState",
    "ViewComponents",
    "ViewMemo",
    "score_view",
]


class LinearScores:
    """Scores s = E v of a component that is linear in a per-user vector v (content: the unit
    text profile; SASRec: the hidden state at the latest position), with what candidate scoring
    needs: the item matrix, its mean and second-moment matrix (float64, so the z-score of any
    item over ALL items is exact) and an HNSW graph over the rows (built on first use)."""

    def __init__(self, emb: np.ndarray, *, ann: bool, expansion_search: int = 64) -> None:
        # ann: a usearch HNSW graph in half precision (M 16, efConstruction 128, ef 64): on Beauty's
        # 12,101 MiniLM vectors 0.27 ms a query against 0.46 ms in single precision and about
        # 1 ms for the exact product, recall@100 0.96 (benchmarks/serve_hybrid.py); False: exact
        self.source = emb  # the array these moments were computed from
        e = np.ascontiguousarray(emb, dtype=np.float32)
        self.emb = e
        e64 = e.astype(np.float64)
        self.mean = e64.mean(axis=0)
        self.second = (e64.T @ e64) / max(len(e), 1)
        self.ann = ann
        self.expansion_search = expansion_search
        self._index: Any = None
        self._lock = threading.Lock()

    def index(self) -> Any:
        """The usearch graph over the item vectors (built on first use; None without `ann`)."""
        if self._index is None and self.ann and len(self.emb):
            with self._lock:
                if self._index is None:
                    from usearch.index import Index

                    idx = Index(
                        ndim=self.emb.shape[1],
                        metric="ip",
                        dtype="f16",
                        connectivity=16,
                        expansion_add=128,
                        expansion_search=self.expansion_search,
                    )
                    idx.add(np.arange(len(self.emb)), self.emb, threads=2)
                    self._index = idx
        return self._index

    def nearest(self, v: np.ndarray, n: int) -> np.ndarray:
        """The (about) n items with the highest E v (approximate with the graph)."""
        if not np.any(v) or not len(self.emb):
            return np.zeros(0, np.int64)
        idx = self.index()
        if idx is None or n * 4 >= len(self.emb):
            return _top_n(self.emb @ np.asarray(v, np.float32), n)
        found = idx.search(np.ascontiguousarray(v, np.float32), n, threads=1)
        return np.asarray(found.keys, dtype=np.int64)

    def stats(self, v: np.ndarray) -> tuple[float, float]:
        """(mean, standard deviation) of E v over all items, from the moments."""
        v64 = np.asarray(v, np.float64)
        mean = float(self.mean @ v64)
        var = float(v64 @ self.second @ v64) - mean * mean
        return mean, (float(np.sqrt(var)) if var > 0 else 0.0)

    def z(self, v: np.ndarray, items: np.ndarray, stats: tuple[float, float]) -> np.ndarray:
        """z-scores (over all items) of the scores E v of `items` (0 for a constant row)."""
        mean, std = stats
        if std <= 1e-12:
            return np.zeros(len(items), np.float32)
        s = self.emb[items] @ np.asarray(v, np.float32)
        return ((s - np.float32(mean)) / np.float32(std)).astype(np.float32)


def history_row(content: ContentRecommender, history: UserHistory) -> sp.csr_matrix:
    """`content.history_matrix([history])` for one history, without its pandas group-by (which
    costs more than the rest of a request); the same matrix (aggregate "max"; else delegated)."""
    n = content.n_items
    if content.config.aggregate != "max":
        return content.history_matrix([history])
    items = np.asarray(history.items, np.int64)
    ok = (items >= 0) & (items < n)
    it = items[ok]
    v = content._history_weights(history)[ok].astype(np.float32)
    if not it.size:
        return sp.csr_matrix((1, n), dtype=np.float32)
    order = np.argsort(it, kind="stable")
    it, v = it[order], v[order]
    uniq, start = np.unique(it, return_index=True)
    top = np.maximum.reduceat(v, start)
    keep = top != 0  # as eliminate_zeros
    cols, vals = uniq[keep].astype(np.int32), top[keep]
    return sp.csr_matrix(
        (vals, cols, np.array([0, len(cols)], np.int32)), shape=(1, n), dtype=np.float32
    )


def content_profile(
    content: ContentRecommender, h: sp.csr_matrix, history: UserHistory
) -> np.ndarray:
    """The unit profile p with content scores E p, as `component_z` computes them."""
    q = history.query_embeddings
    if q is not None and np.size(q):
        raw, _, _, _ = content._profile(history)
        n = np.linalg.norm(raw)
        return np.asarray(raw / n if n > 0 else raw, np.float32)
    return np.asarray(content.profiles(h)[0], np.float32)


def plain_sequential(comp: Any) -> bool:
    """Whether `comp` is a sequential transformer scored as `SequentialRecommender` does."""
    return isinstance(comp, SequentialRecommender) and (
        type(comp).explain is SequentialRecommender.explain
        and type(comp)._score_tokens is SequentialRecommender._score_tokens
    )


def sequence_hidden(
    comp: SequentialRecommender,
    sequences: list[np.ndarray],
    fast: NumpyLastHidden | None = None,
) -> np.ndarray:
    """(len(sequences), d) float32: the network's output at the latest position of each
    item-index sequence (already cleaned): `_score_tokens` without its product with every item
    (computed by `fast`, the NumPy forward of the same network, where given)."""
    import torch

    from privrec.models.nn.runtime import torch_threads
    from privrec.models.sequential_data import pad_left

    net = comp.net
    assert net is not None
    toks = [comp._inference_tokens(np.asarray(x, dtype=np.int64)) for x in sequences]
    if fast is not None:
        return fast(pad_left(toks))
    with torch.inference_mode(), torch_threads(comp.config.num_threads):
        seq = torch.from_numpy(pad_left(toks)).to(comp._device())
        return net.last_hidden(seq).float().cpu().numpy()


class ServingState:
    """What candidate scoring keeps per loaded hybrid (never saved): the linear components' item
    matrices with their moments and graphs, and the popularity component's constant z-scores."""

    def __init__(self, model: HybridRecommender) -> None:
        ann = model.config.candidate_ann
        self.content = LinearScores(model.content.item_embeddings, ann=ann)
        seq = model.components.get("sequential")
        self.seq: LinearScores | None = None
        self.seq_net: Any = None
        self.seq_np: NumpyLastHidden | None = None
        if isinstance(seq, SequentialRecommender) and plain_sequential(seq) and seq.net is not None:
            self.seq_net = seq.net
            self.seq = LinearScores(seq._item_table().float().cpu().numpy(), ann=False)
            # a request's pass is ~10 short rows: NumPy's per-call cost is below PyTorch's
            self.seq_np = NumpyLastHidden.for_net(seq.net)
        self.pop_z: np.ndarray | None = None
        pop = model.components["popularity"]
        if not getattr(pop.config, "by_category", False):
            # a constant row: its z-scores are the same for every request
            h0 = sp.csr_matrix((1, model.n_items), dtype=np.float32)
            self.pop_z = component_z("popularity", pop, h0, None, model.item_events, model.n_items)[
                0
            ]
        self._top: dict[int, np.ndarray] = {}
        self.new_items = np.flatnonzero(model.item_events == 0)
        cf = model.components.get("cf")
        # EASE's row straight from B (h B with the row's values), without its CSR copies
        self.ease = cf if isinstance(cf, EASE) and type(cf).score_matrix is _EASE_SCORE else None

    def valid_for(self, model: HybridRecommender) -> bool:
        """Whether the state still matches the model's arrays (no item added, same network)."""
        emb = model.content.item_embeddings
        seq = model.components.get("sequential")
        return (
            self.content.source is emb
            and self.content.emb.shape == emb.shape
            and (self.seq_net is None or getattr(seq, "net", None) is self.seq_net)
        )

    def pop_top(self, n: int) -> np.ndarray:
        """The n items with the highest popularity z-score."""
        got = self._top.get(n)
        if got is None and self.pop_z is not None:
            got = self._top[n] = _top_n(self.pop_z, n)
        return got if got is not None else np.zeros(0, np.int64)


def ease_row(ease: EASE, h: sp.csr_matrix) -> np.ndarray:
    """`ease.score_matrix(h)[0]` for one history row, as the sum of the rows of B of its items
    (the row's values as EASE reads them), without the CSR copies of the matrix product."""
    b = ease.weights
    cols = h.indices
    if not len(cols):
        return np.zeros(b.shape[1], np.float32)
    vals = np.ones(len(cols), np.float32) if ease.config.binary else h.data.astype(np.float32)
    out = b[int(cols[0])] * vals[0]
    for j, v in zip(cols[1:].tolist(), vals[1:].tolist(), strict=True):
        out += b[j] * np.float32(v) if v != 1.0 else b[j]
    return np.asarray(out, np.float32)


def _top_n(z: np.ndarray, n: int) -> np.ndarray:
    return np.argpartition(-z, min(n, len(z) - 1))[:n] if len(z) else np.zeros(0, np.int64)


@dataclass
class RequestView:
    """One history's scoring, kept for the explanations of the same request.

    Attributes:
        history: the scored history (explanations are taken from the view only for this object).
        route: "warm" or "cold_user".
        explainable: whether `route_for` agrees with `route` (it counts the history row's
            entries before zero weights are dropped); explanations use the view only then.
        weights: the route's component weights.
        scores: the hybrid score of every item (float32; see the module doc for non-candidates).
        candidates: the exactly scored items (None: all).
        full_z: z-scores over all items of the components scored over all items.
        linear: per linear component scored on candidates, (scores, vector, (mean, std)).
        hidden: SASRec's outputs for the history and each occlusion variant (row 0: the history).
        memo: per-component explanation helpers.
        row: the history's row as the content component builds it (before `_history_input`).
        cand_z: per linear component, its z-scores of the candidates (sorted like them).
    """

    history: UserHistory
    route: str
    explainable: bool
    weights: dict[str, float]
    scores: np.ndarray
    candidates: np.ndarray | None = None
    full_z: dict[str, np.ndarray] = field(default_factory=dict)
    linear: dict[str, tuple[LinearScores, np.ndarray, tuple[float, float]]] = field(
        default_factory=dict
    )
    hidden: np.ndarray | None = None
    memo: dict[str, Any] = field(default_factory=dict)
    row: sp.csr_matrix | None = None
    cand_z: dict[str, np.ndarray] = field(default_factory=dict)

    def z(self, name: str, item: int) -> float:
        """Component `name`'s z-score of `item` (exact also outside the candidates)."""
        if name in self.full_z:
            return float(self.full_z[name][item])
        got = self.cand_z.get(name)
        if got is not None and self.candidates is not None:
            at = int(np.searchsorted(self.candidates, item))
            if at < len(self.candidates) and self.candidates[at] == item:
                return float(got[at])
        lin, v, st = self.linear[name]
        return float(lin.z(v, np.asarray([item], np.int64), st)[0])


def score_view(
    model: HybridRecommender,
    history: UserHistory,
    state: ServingState | None,
    n_candidates: int | None,
) -> RequestView:
    """Score one history: every item (n_candidates None), or exactly on candidates."""
    raw = history_row(model.content, history)
    h = model._history_input(raw)
    cold = h.nnz <= model.config.cold_user_max_items
    explainable = (raw.nnz <= model.config.cold_user_max_items) == cold
    weights = model.cold_weights if cold else model.weights
    route = "cold_user" if cold else "warm"
    n, ev = model.n_items, model.item_events
    hs = [history]
    use = [(name, w) for name, w in weights.items() if w]
    if n_candidates is None or state is None:
        s = np.zeros(n, np.float32)
        zs = {}
        for name, w in use:  # the same sums in the same order as `blend`
            z = component_z(name, model.components[name], h, hs, ev, n)[0]
            zs[name] = z
            s += np.float32(w) * z
        if model.item_boost:
            s[ev == 0] += np.float32(model.item_boost)
        return RequestView(history, route, explainable, dict(weights), s, None, zs, row=raw)
    view = RequestView(history, route, explainable, dict(weights), np.empty(0, np.float32), row=raw)
    part = np.zeros(n, np.float32)  # the parts scored over every item
    picks: list[np.ndarray] = []
    linear: list[tuple[str, float, LinearScores, np.ndarray]] = []
    for name, w in use:
        comp = model.components[name]
        if name == "content":
            p = content_profile(model.content, h, history)
            linear.append((name, w, state.content, p))
            picks.append(state.content.nearest(p, n_candidates))
            continue
        if name == "sequential" and state.seq is not None:
            assert isinstance(comp, SequentialRecommender)
            seq_items = comp._clean(history.items)
            if len(seq_items):
                rows = [seq_items]
                if route == "warm":
                    # the occlusion variants of `explain` in the same forward pass
                    last = seq_items[-comp.config.max_len :]
                    rows = [last] + [last[last != j] for j in np.unique(last)]
                hid = sequence_hidden(comp, rows, state.seq_np)
                view.hidden = hid if route == "warm" else None
                # 64 numbers per item: the product with every item costs less than a graph
                # search (0.19 against 0.26 ms on Beauty), so SASRec is scored over all items
                z = zscore((state.seq.emb @ hid[0])[None, :])[0]
                z[state.new_items] = 0.0
                picks.append(_top_n(z, n_candidates))
            else:
                z = component_z(name, comp, h, hs, ev, n)[0]
                picks.append(_top_n(z, n_candidates))
        elif name == "cf" and state.ease is not None:
            z = zscore(ease_row(state.ease, h)[None, :])[0]
            z[state.new_items] = 0.0
            picks.append(_top_n(z, n_candidates))
        elif name == "popularity" and state.pop_z is not None:
            z = state.pop_z
            picks.append(state.pop_top(n_candidates))
        else:
            z = component_z(name, comp, h, hs, ev, n)[0]
            picks.append(_top_n(z, n_candidates))
        view.full_z[name] = z
        part += np.float32(w) * z
    if model.item_boost:
        part[state.new_items] += np.float32(model.item_boost)
    cand = np.unique(np.concatenate(picks)) if picks else np.zeros(0, np.int64)
    s_cand = part[cand]
    for name, w, lin, v in linear:
        st = lin.stats(v)
        view.linear[name] = (lin, v, st)
        z = lin.z(v, cand, st)
        if name != "content":
            z[ev[cand] == 0] = 0.0  # as `component_z`: no opinion on a new item
        view.cand_z[name] = z
        s_cand = s_cand + np.float32(w) * z
    # outside the candidates: their fully scored parts, kept in order, below every exact score
    shift = np.float32(s_cand.min() - part.max() - 1.0) if len(cand) else np.float32(0.0)
    out = part + shift
    out[cand] = s_cand
    view.scores, view.candidates = out, cand
    return view


class ViewMemo:
    """The last view each thread scored, so that the same request's explanations reuse it."""

    def __init__(self) -> None:
        self._local = threading.local()

    def put(self, view: RequestView) -> None:
        """Remember `view` as this thread's latest."""
        self._local.view = view

    def get(self, history: UserHistory) -> RequestView | None:
        """This thread's view of `history` (the same object), if it was the last one scored."""
        view: RequestView | None = getattr(self._local, "view", None)
        return view if view is not None and view.history is history else None

    def clear(self) -> None:
        """Forget this thread's view."""
        self._local.view = None


class _SequentialExplainer:
    """`SequentialRecommender.explain` (occlusion) with the variants' outputs computed once per
    history (in the scoring pass when candidates are on) instead of once per explained item."""

    def __init__(self, comp: Any, view: RequestView, table: LinearScores | None) -> None:
        self.comp = comp
        items = comp._clean(view.history.items)[-comp.config.max_len :]
        self.distinct = np.unique(items)
        self.table = table
        self.hidden = view.hidden if table is not None else None
        self.scores: np.ndarray | None = None
        if self.distinct.size and self.hidden is None:
            variants = [items] + [items[items != j] for j in self.distinct]
            self.scores = comp._score_tokens(variants)

    def explain(self, history: UserHistory, item: int) -> Explanation:
        if not self.distinct.size:
            return Explanation(
                item=int(item), kind="model", text="no history to explain from", contributors=[]
            )
        if self.scores is not None:
            s = self.scores[:, int(item)].astype(np.float64)
        else:
            assert self.hidden is not None and self.table is not None
            s = (self.hidden @ self.table.emb[int(item)]).astype(np.float64)
        return history_explanation(history, int(item), self.distinct, s[0] - s[1:])


class _ContentExplainer:
    """`ContentRecommender.explain` with the profile built once per history (without the pandas
    group-by of `history_matrix`); the same explanation, field for field."""

    def __init__(
        self, comp: ContentRecommender, history: UserHistory, row: sp.csr_matrix | None
    ) -> None:
        self.comp = comp
        e = comp.item_embeddings
        h = comp._history_input(row if row is not None else history_row(comp, history))
        raw = np.asarray(h @ e, dtype=np.float64)[0]
        part = float(np.linalg.norm(raw))
        q_w = 0.0
        q = history.query_embeddings
        if q is not None and np.size(q) and comp.config.query_weight > 0:
            raw, _, _, q_w = comp._profile(history)  # rare: searches kept with consent
        self.raw, self.q_w, self.part = raw, q_w, part
        self.norm = float(np.linalg.norm(raw))
        order = np.argsort(h.indices, kind="stable")
        self.hist_items = h.indices.astype(np.int64)[order]
        # the row's values of those items (`_history_input` summed duplicates: one entry each)
        self.row_w = h.data[order].astype(np.float64)
        self.hist_emb = e[self.hist_items].astype(np.float64)
        self.actions = strongest_actions(history)

    def explain(self, history: UserHistory, item: int) -> Explanation:
        comp = self.comp
        item = int(item)
        if self.norm == 0 or not 0 <= item < comp.n_items:
            return Explanation(
                item=item, kind="model", text="no item in your history points to this one"
            )
        e = comp.item_embeddings[item].astype(np.float64)
        contrib = self.row_w * (self.hist_emb @ e) / self.norm
        hist_items = self.hist_items
        query_part = 0.0
        if self.q_w > 0:
            qm = (
                np.asarray(history.query_embeddings, np.float64)
                .reshape(-1, e.shape[0])
                .mean(axis=0)
            )
            query_part = float(self.q_w * (qm @ e) / self.norm)
        return text_explanation(
            item, hist_items, contrib, query_part, comp.item_titles, self.actions
        )


class _Plain:
    def __init__(self, comp: Any) -> None:
        self.comp = comp

    def explain(self, history: UserHistory, item: int) -> Explanation:
        return self.comp.explain(history, item)


class ViewComponents(dict):  # type: ignore[type-arg]
    """The components as `explain_route` reads them, each explanation's costly part computed once
    per view (the same results as the components' own `explain`)."""

    def __init__(
        self, model: HybridRecommender, view: RequestView, state: ServingState | None
    ) -> None:
        super().__init__()
        self.model, self.view, self.state = model, view, state

    def __missing__(self, name: str) -> Any:
        memo = self.view.memo
        got = memo.get(name)
        if got is None:
            comp = self.model.components[name]
            if name == "sequential" and plain_sequential(comp):
                table = self.state.seq if self.state is not None else None
                got = _SequentialExplainer(comp, self.view, table)
            elif isinstance(comp, ContentRecommender) and type(comp).explain is _CONTENT_EXPLAIN:
                got = _ContentExplainer(comp, self.view.history, self.view.row)
            else:
                got = _Plain(comp)
            memo[name] = got
        return got


_CONTENT_EXPLAIN = ContentRecommender.explain
_EASE_SCORE = EASE.score_matrix
