"""Evaluation protocols: full ranking, leave-one-out, rating prediction and user k-fold CV.

Full ranking: every user is scored against every item; items in the user's training history are
set to -inf (they cannot be recommended again, as in Microsoft Recommenders' `remove_seen=True`
and the S3-Rec full-ranking evaluation); the top k comes from a partial sort (`np.partition`), ties
broken by the
lower item index (as `models.base.top_k`). Users are processed in batches, so only a
(batch_size x n_items) block of scores exists at any time.

Which users count: those with at least one test item and (by default) a non-empty history, the
"common users" of Microsoft Recommenders (a user they cannot score is not averaged).

Metric names: "precision@10", "recall@10", "ndcg@10", "map@10" (Microsoft Recommenders' MAP:
divided by the number of relevant items; "map" alone means "map@k"), "map_min@10" (divided by
min(n_relevant, k)), "hr@10", "mrr" (reciprocal rank of the first relevant item in the full
ranking), "mrr@10" (0 beyond rank 10), "coverage@10", "novelty@10", "diversity@10" (needs
`item_features`). See `metrics.py` for the exact definitions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from privrec.data.dataset import InteractionDataset
from privrec.data.splitters import user_kfold_holdout
from privrec.evaluation import metrics as M
from privrec.models.base import Recommender

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_LOO_METRICS",
    "MetricSpec",
    "cross_validate",
    "default_ranking_metrics",
    "evaluate_loo",
    "evaluate_ranking",
    "evaluate_rating",
    "parse_metric",
    "recommend_top_k",
    "top_k_rows",
]

Scorer = Callable[[np.ndarray], np.ndarray]

_ALIASES = {
    "p": "precision",
    "prec": "precision",
    "precision": "precision",
    "r": "recall",
    "recall": "recall",
    "ndcg": "ndcg",
    "map": "map",
    "map_min": "map_min",
    "hr": "hr",
    "hit": "hr",
    "hit_rate": "hr",
    "hitrate": "hr",
    "mrr": "mrr",
    "coverage": "coverage",
    "catalog_coverage": "coverage",
    "catalogue_coverage": "coverage",
    "novelty": "novelty",
    "diversity": "diversity",
    "ild": "diversity",
}
_LIST_METRICS = ("coverage", "novelty", "diversity")
DEFAULT_LOO_METRICS = ("hr@10", "ndcg@10", "mrr")


@dataclass(frozen=True)
class MetricSpec:
    """One requested metric: output key, metric name and cut-off (None: full ranking, MRR only)."""

    key: str
    name: str
    k: int | None


def parse_metric(text: str, default_k: int = 10) -> MetricSpec:
    """Parse "ndcg@10", "map", "mrr", ... into a MetricSpec with a canonical key.

    Every metric except "mrr" is cut off at k ("map" -> "map@<default_k>"); plain "mrr" is the full
    ranking's reciprocal rank.
    """
    raw = str(text).strip().lower()
    base, _, kk = raw.partition("@")
    name = _ALIASES.get(base.strip())
    if name is None:
        raise ValueError(
            f"metrics: unknown metric {text!r}; known: {', '.join(sorted(set(_ALIASES.values())))}"
        )
    if kk:
        try:
            k = int(kk)
        except ValueError:
            raise ValueError(f"metrics: {text!r} needs an integer after '@'") from None
        if k <= 0:
            raise ValueError(f"metrics: {text!r} needs a positive cut-off")
    elif name == "mrr":
        return MetricSpec("mrr", "mrr", None)
    else:
        k = int(default_k)
    return MetricSpec(f"{name}@{k}", name, k)


def default_ranking_metrics(k: int = 10) -> tuple[str, ...]:
    """Microsoft Recommenders' four: MAP, NDCG@k, Precision@k, Recall@k."""
    return (f"map@{k}", f"ndcg@{k}", f"precision@{k}", f"recall@{k}")


# ---- top-k ------------------------------------------------------------------------------------
def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Row-wise top-k item indices, best first; ties broken by the lower item index.

    Exact and per-row, so the result never depends on how rows are batched. NaN must already be
    replaced (the protocol maps NaN to -inf).
    """
    s = np.asarray(scores)
    b, n = s.shape
    k = int(min(k, n))
    if k <= 0 or b == 0:
        return np.empty((b, max(k, 0)), dtype=np.int64)
    neg = -s
    if k == n:
        return np.argsort(neg, axis=1, kind="stable").astype(np.int64)
    thr = np.partition(neg, k - 1, axis=1)[:, k - 1 : k]
    take = neg <= thr  # the top k plus any items tied with the k-th
    extra = np.nonzero(take.sum(axis=1) > k)[0]
    if extra.size:  # rows with ties at the cut: keep the lowest-index tied items only
        nb = neg[extra]
        better = nb < thr[extra]
        eq = nb == thr[extra]
        need = k - better.sum(axis=1)
        take[extra] = better | (eq & (np.cumsum(eq, axis=1, dtype=np.int32) <= need[:, None]))
    idx = (np.flatnonzero(take) % n).reshape(b, k)  # ascending item index within each row
    vals = np.take_along_axis(neg, idx, axis=1)
    order = np.argsort(vals, axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1).astype(np.int64)


# ---- helpers -----------------------------------------------------------------------------------
def _check_same_space(train: InteractionDataset, test: InteractionDataset) -> None:
    if train.n_items != test.n_items or train.n_users != test.n_users:
        raise ValueError(
            "test: its user/item vocabularies differ from train's "
            f"({test.n_users}x{test.n_items} vs {train.n_users}x{train.n_items}); "
            "build both with a splitter or InteractionDataset.subset so they share vocabularies"
        )


def _binary_csr(ds: InteractionDataset) -> sp.csr_matrix:
    m = ds.matrix(binary=True)
    m.sort_indices()
    return m


def _rows_of(m: sp.csr_matrix) -> np.ndarray:
    return np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))


def _item_counts(train_binary: sp.csr_matrix) -> np.ndarray:
    """Distinct users per item in training (the popularity behind novelty and coverage)."""
    return np.bincount(train_binary.indices, minlength=train_binary.shape[1]).astype(np.int64)


def _scores_for(
    model: Recommender | None,
    scorer: Scorer | None,
    hist: sp.csr_matrix,
    rows: np.ndarray,
    n_items: int,
) -> np.ndarray:
    raw: Any  # dense, or sparse from a model that scores sparsely
    if scorer is not None:
        raw = scorer(rows)
    else:
        assert model is not None  # the caller passes a model or a scorer
        raw = model.score_matrix(hist[rows])
    s = np.asarray(raw.toarray() if sp.issparse(raw) else raw)
    if s.shape != (rows.shape[0], n_items):
        raise ValueError(
            f"model: score_matrix returned shape {s.shape}, expected {(rows.shape[0], n_items)}"
        )
    dtype = np.float64 if s.dtype == np.float64 else np.float32
    s = np.array(s, dtype=dtype, copy=True)  # we mask in place; never touch the model's arrays
    np.nan_to_num(s, copy=False, nan=-np.inf)
    return s


def _history(
    model: Recommender | None,
    train: InteractionDataset,
    history_matrix: sp.spmatrix | None,
    *,
    ratings: bool = False,
) -> sp.csr_matrix:
    """The history rows to score: given, else the model's own `input_matrix(train)` weighting."""
    if history_matrix is not None:
        hist = sp.csr_matrix(history_matrix)
    elif model is not None and hasattr(model, "input_matrix"):
        hist = model.input_matrix(train)
    else:
        hist = train.matrix(use_ratings=ratings)
    if hist.shape != (train.n_users, train.n_items):
        raise ValueError(
            f"history_matrix: shape {hist.shape}, expected {(train.n_users, train.n_items)}"
        )
    return hist


def _batches(n: int, size: int) -> Iterable[slice]:
    size = max(int(size), 1)
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


# ---- full ranking ------------------------------------------------------------------------------
def _ranked_batches(
    model: Recommender | None,
    scorer: Scorer | None,
    hist: sp.csr_matrix,
    mask: sp.csr_matrix | None,
    users: np.ndarray,
    k: int,
    batch_size: int,
) -> Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Per batch of users: (rows, masked scores, top-k indices, top-k entry is finite)."""
    n_items = hist.shape[1]
    for sl in _batches(users.shape[0], batch_size):
        rows = users[sl]
        s = _scores_for(model, scorer, hist, rows, n_items)
        if mask is not None:
            mb = mask[rows]
            s[_rows_of(mb), mb.indices] = -np.inf
        top = top_k_rows(s, k)
        valid = np.isfinite(
            np.take_along_axis(s, top, axis=1)
        )  # -inf = masked/unrankable, never a hit
        yield rows, s, top, valid


def recommend_top_k(
    model: Recommender | None,
    train: InteractionDataset,
    *,
    k: int = 10,
    users: Sequence[int] | np.ndarray | None = None,
    exclude_train: bool = True,
    history_matrix: sp.spmatrix | None = None,
    scorer: Scorer | None = None,
    batch_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """The top-k item indices per user exactly as the protocol ranks them.

    Returns (users, items): `items` is (n_users, k) int64, best first, -1 where fewer than k items
    could be ranked (everything else masked). Users default to every user in `train`.
    """
    if model is None and scorer is None:
        raise ValueError("model: give a fitted model or a scorer")
    hist = _history(model, train, history_matrix)
    u = np.arange(train.n_users) if users is None else np.asarray(users, dtype=np.int64)
    kk = min(int(k), train.n_items)
    out = np.full((u.shape[0], kk), -1, dtype=np.int64)
    mask = _binary_csr(train) if exclude_train else None
    pos = 0
    for rows, _s, top, valid in _ranked_batches(model, scorer, hist, mask, u, kk, batch_size):
        out[pos : pos + rows.shape[0]] = np.where(valid, top, -1)
        pos += rows.shape[0]
    return u, out


def evaluate_ranking(
    model: Recommender | None,
    train: InteractionDataset,
    test: InteractionDataset,
    *,
    k: int = 10,
    metrics: Sequence[str] | None = None,
    batch_size: int = 1024,
    exclude_train: bool = True,
    users: Sequence[int] | np.ndarray | None = None,
    history_matrix: sp.spmatrix | None = None,
    scorer: Scorer | None = None,
    item_features: np.ndarray | None = None,
    item_counts: np.ndarray | None = None,
    skip_cold_users: bool = True,
    per_user: bool = False,
) -> dict[str, Any]:
    """Full-ranking evaluation of a fitted model: every item scored for every test user.

    Args:
        model: a fitted Recommender; its `score_matrix(history rows)` gives the scores.
        train: the training part; its items are masked per user and give popularity.
        test: the held-out part, same vocabularies as `train`; every test item is relevant.
        k: default cut-off for metrics given without "@k".
        metrics: metric names (see the module docstring); default MAP, NDCG, Precision, Recall @k.
        batch_size: users scored at once.
        exclude_train: set the user's training items to -inf before ranking.
        users: restrict to these user indices (still only those with test items).
        history_matrix: the user x item history rows to score; default `model.input_matrix(train)`
            (the weighting the model trained with), or `train.matrix()` without a model.
        scorer: instead of `model.score_matrix`, a function from user indices to dense scores
            (for models that need more than a weighted history, e.g. ordered sequences).
        item_features: (n_items, d) vectors for "diversity".
        item_counts: training interactions per item for "novelty"/"coverage"; default from `train`.
        skip_cold_users: leave out users with an empty history (Microsoft Recommenders' common
            users).
        per_user: also return "per_user" (key -> array over "users") for list-level metrics.

    Returns:
        metric key -> mean over users, plus "n_users", "k" and "eval_seconds"; with `per_user`,
        "users" (user indices evaluated) and "per_user".
    """
    t0 = time.perf_counter()
    if model is None and scorer is None:
        raise ValueError("model: give a fitted model or a scorer")
    _check_same_space(train, test)
    specs = [
        parse_metric(m, k) for m in (metrics if metrics is not None else default_ranking_metrics(k))
    ]
    if not specs:
        raise ValueError("metrics: ask for at least one metric")
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"metrics: duplicates after normalising names: {keys}")
    if any(s.name == "diversity" for s in specs) and item_features is None:
        raise ValueError("item_features: 'diversity' needs an (n_items, d) item feature matrix")
    n_users, n_items = train.n_users, train.n_items
    if (
        scorer is None
        and model is not None
        and getattr(model, "n_items", n_items) not in (0, n_items)
    ):
        raise ValueError(f"model: trained on {model.n_items} items but the data has {n_items}")

    train_bin = _binary_csr(train)
    hist = _history(model, train, history_matrix)
    test_bin = _binary_csr(test)
    counts = _item_counts(train_bin) if item_counts is None else np.asarray(item_counts)

    n_rel_all = np.diff(test_bin.indptr)
    eligible = n_rel_all > 0
    if skip_cold_users:
        eligible &= np.diff(hist.indptr) > 0
    if users is not None:
        chosen = np.zeros(n_users, dtype=bool)
        chosen[np.asarray(users, dtype=np.int64)] = True
        eligible &= chosen
    eval_users = np.nonzero(eligible)[0]

    k_max = max((s.k for s in specs if s.k is not None), default=1)
    k_max = min(k_max, n_items)
    need_full_mrr = any(s.key == "mrr" for s in specs)
    acc_names = sorted({s.name for s in specs if s.name in M.RANKING_METRICS and s.k is not None})
    per: dict[str, list[np.ndarray]] = {
        s.key: [] for s in specs if s.name not in ("coverage", "novelty")
    }
    cover = {s.key: np.zeros(n_items, dtype=bool) for s in specs if s.name == "coverage"}
    nov_info = None
    if any(s.name == "novelty" for s in specs):
        tot = float(counts.sum())
        nov_info = np.full(n_items, np.nan)
        pos = counts > 0
        if tot > 0:
            nov_info[pos] = -np.log2(counts[pos] / tot)
    nov_acc: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
        s.key: ([], []) for s in specs if s.name == "novelty"
    }
    feats = M._normalise_rows(item_features) if item_features is not None else None
    if feats is not None and feats.shape[0] != n_items:
        raise ValueError(f"item_features: {feats.shape[0]} rows, expected one per item ({n_items})")

    for rows, s, top, valid in _ranked_batches(
        model, scorer, hist, train_bin if exclude_train else None, eval_users, k_max, batch_size
    ):
        b = rows.shape[0]
        tst = test_bin[rows]
        rel_rows, rel_cols = _rows_of(tst), tst.indices
        rel = np.zeros((b, n_items), dtype=bool)
        rel[rel_rows, rel_cols] = True
        n_rel = n_rel_all[rows]
        hits = np.take_along_axis(rel, top, axis=1) & valid

        by_k: dict[int, dict[str, np.ndarray]] = {}
        for spec in specs:
            if spec.k is None:
                continue
            kk = min(spec.k, n_items) if spec.name in _LIST_METRICS else spec.k
            if spec.name in M.RANKING_METRICS:
                if spec.k not in by_k:
                    by_k[spec.k] = M.ranking_metrics_from_hits(hits, n_rel, spec.k, acc_names)
                per[spec.key].append(by_k[spec.k][spec.name])
            elif spec.name == "coverage":
                sel = top[:, :kk][valid[:, :kk]]
                cover[spec.key][sel] = True
            elif spec.name == "novelty":
                sel = top[:, :kk]
                assert nov_info is not None  # set above whenever a novelty metric is asked for
                info = nov_info[sel]
                ok = valid[:, :kk] & ~np.isnan(info)
                # per-user sums first, totals at the end: the result never depends on batching
                nov_acc[spec.key][0].append(np.where(ok, info, 0.0).sum(axis=1))
                nov_acc[spec.key][1].append(ok.sum(axis=1))
            elif spec.name == "diversity":
                assert feats is not None  # checked on entry: "diversity" needs item_features
                per[spec.key].append(
                    M.batch_intra_list_diversity(top[:, :kk], valid[:, :kk], feats)
                )
        if need_full_mrr:
            per["mrr"].append(_full_rank_rr(s, rel_rows, rel_cols))

    out: dict[str, Any] = {}
    per_arrays: dict[str, np.ndarray] = {}
    for spec in specs:
        if spec.name == "coverage":
            denom = int((counts > 0).sum()) or n_items
            out[spec.key] = float(cover[spec.key].sum() / denom)
        elif spec.name == "novelty":
            sums, cnts = (np.concatenate(x) if x else np.empty(0) for x in nov_acc[spec.key])
            total = int(cnts.sum())
            out[spec.key] = (
                float(sums.sum() / total) if total else 0.0
            )  # pooled over all recommendations
            per_arrays[spec.key] = np.where(cnts > 0, sums / np.maximum(cnts, 1), np.nan)
        else:
            arr = np.concatenate(per[spec.key]) if per[spec.key] else np.empty(0)
            if spec.name == "diversity":
                out[spec.key] = float(np.nanmean(arr)) if np.isfinite(arr).any() else 0.0
            else:
                # Microsoft Recommenders: sum over users / number of common users
                out[spec.key] = float(arr.mean()) if arr.size else 0.0
            per_arrays[spec.key] = arr
    out["n_users"] = int(eval_users.shape[0])
    out["k"] = int(k)
    out["eval_seconds"] = time.perf_counter() - t0
    if per_user:
        out["users"] = eval_users
        out["per_user"] = per_arrays
    log.info(
        "evaluated ranking n_users=%d n_items=%d seconds=%.3f",
        out["n_users"],
        n_items,
        out["eval_seconds"],
    )
    return out


def _full_rank_rr(s: np.ndarray, rel_rows: np.ndarray, rel_cols: np.ndarray) -> np.ndarray:
    """1 / (full-ranking rank of the first relevant item), ties as in top_k_rows; 0 if unrankable.

    `rel_rows`/`rel_cols` list the relevant (row, item) pairs, rows ascending.
    """
    b, n = s.shape
    best = np.full(b, -np.inf, dtype=np.float64)
    np.maximum.at(best, rel_rows, s[rel_rows, rel_cols].astype(np.float64))
    ok = np.isfinite(best)
    thr = best.astype(s.dtype)[:, None]
    ahead = (s > thr).sum(axis=1)
    # ties with the best relevant score: items with a lower index rank ahead of it
    first = np.full(b, n, dtype=np.int64)
    at_best = s[rel_rows, rel_cols] == thr[rel_rows, 0]
    np.minimum.at(first, rel_rows[at_best], rel_cols[at_best])
    n_eq = (s == thr).sum(axis=1)
    tied = np.nonzero(ok & (n_eq > 1))[0]
    for r in tied:  # rare: exact score ties with the best relevant item
        ahead[r] += int(np.count_nonzero(s[r, : first[r]] == thr[r, 0]))
    return np.where(ok, 1.0 / (ahead + 1.0), 0.0)


def evaluate_loo(
    model: Recommender | None,
    train: InteractionDataset,
    test: InteractionDataset,
    *,
    k: int = 10,
    metrics: Sequence[str] | None = None,
    batch_size: int = 1024,
    exclude_train: bool = True,
    history_matrix: sp.spmatrix | None = None,
    scorer: Scorer | None = None,
    users: Sequence[int] | np.ndarray | None = None,
    per_user: bool = False,
) -> dict[str, Any]:
    """Leave-one-out full ranking: one held-out item per user; HR@k, NDCG@k and MRR by default.

    HR@k equals Recall@k here. MRR is over the full ranking (not truncated). Raises ValueError when
    a test user holds more than one distinct item (that is not a leave-one-out split).
    """
    _check_same_space(train, test)
    per_user_items = np.diff(_binary_csr(test).indptr)
    if per_user_items.size and per_user_items.max() > 1:
        bad = int((per_user_items > 1).sum())
        raise ValueError(
            f"test: {bad} user(s) have more than one held-out item; leave-one-out needs exactly "
            "one (use evaluate_ranking for multi-item test sets)"
        )
    if metrics is None:
        metrics = (f"hr@{k}", f"ndcg@{k}", "mrr")
    return evaluate_ranking(
        model,
        train,
        test,
        k=k,
        metrics=metrics,
        batch_size=batch_size,
        exclude_train=exclude_train,
        history_matrix=history_matrix,
        scorer=scorer,
        users=users,
        per_user=per_user,
    )


# ---- rating prediction -------------------------------------------------------------------------
def evaluate_rating(
    model: Recommender | None,
    train: InteractionDataset,
    test: InteractionDataset,
    *,
    batch_size: int = 1024,
    history_matrix: sp.spmatrix | None = None,
    scorer: Scorer | None = None,
    skip_cold_users: bool = True,
) -> dict[str, Any]:
    """RMSE and MAE of a rating model's scores on the test events that carry a rating.

    The model's score for (user, item) is read as its predicted rating. The history defaults to
    `model.input_matrix(train)` (or `train.matrix(use_ratings=True)` for a bare scorer).
    """
    t0 = time.perf_counter()
    if model is None and scorer is None:
        raise ValueError("model: give a fitted model or a scorer")
    _check_same_space(train, test)
    hist = _history(model, train, history_matrix, ratings=True)
    has = ~np.isnan(test.rating)
    u, i, r = (
        test.user_idx[has].astype(np.int64),
        test.item_idx[has].astype(np.int64),
        test.rating[has].astype(np.float64),
    )
    if skip_cold_users:
        warm = np.diff(hist.indptr)[u] > 0
        u, i, r = u[warm], i[warm], r[warm]
    if u.size == 0:
        raise ValueError("test: no rated events to evaluate (does the test part carry ratings?)")
    order = np.argsort(u, kind="stable")
    u, i, r = u[order], i[order], r[order]
    uniq, start = np.unique(u, return_index=True)
    pred = np.empty(u.shape[0], dtype=np.float64)
    for sl in _batches(uniq.shape[0], batch_size):
        rows = uniq[sl]
        s = _scores_for(model, scorer, hist, rows, train.n_items)
        lo = start[sl.start]
        hi = start[sl.stop] if sl.stop < uniq.shape[0] else u.shape[0]
        local = np.searchsorted(rows, u[lo:hi])
        pred[lo:hi] = s[local, i[lo:hi]]
    return {
        "rmse": M.rmse(r, pred),
        "mae": M.mae(r, pred),
        "n_ratings": int(u.shape[0]),
        "n_users": int(uniq.shape[0]),
        "eval_seconds": time.perf_counter() - t0,
    }


# ---- user k-fold cross-validation --------------------------------------------------------------
def cross_validate(
    model_factory: Callable[[], Recommender],
    dataset: InteractionDataset,
    folds: int = 5,
    *,
    k: int = 10,
    metrics: Sequence[str] | None = None,
    seed: int = 42,
    holdout_fraction: float = 0.2,
    order: Literal["time", "random"] = "time",
    batch_size: int = 1024,
) -> dict[str, Any]:
    """User k-fold cross-validation ("strong generalisation") on `splitters.user_kfold_holdout`.

    Each fold: a fresh model from `model_factory()` is fitted (rng=seed) on the other users'
    events only; the fold's users are then served from their fold-in history and judged on their
    held-out events with `evaluate_ranking` (fold-in items masked). Popularity for
    novelty/coverage comes from the fitting data.

    Args:
        model_factory: returns a new, unfitted model.
        dataset: all events.
        folds: number of user folds.
        k, metrics, batch_size: as `evaluate_ranking`.
        seed: fold assignment, random holdout and every fit.
        holdout_fraction, order: per test user, the share of events held out, the latest
            ("time") or a seeded random choice ("random").

    Returns:
        {"folds": [per-fold results with "fit_seconds" and "fold"], "mean": {key: mean},
         "std": {key: sample std}, "n_folds": folds}.
    """
    results = []
    splits = user_kfold_holdout(
        dataset, folds, seed=seed, holdout_fraction=holdout_fraction, order=order
    )
    for f, (train, fold_in, held_out) in enumerate(splits):
        model = model_factory()
        t0 = time.perf_counter()
        model.fit(train, rng=seed)
        fit_s = time.perf_counter() - t0
        res = evaluate_ranking(
            model,
            fold_in,
            held_out,
            k=k,
            metrics=metrics,
            batch_size=batch_size,
            item_counts=_item_counts(_binary_csr(train)),
        )
        res["fit_seconds"] = fit_s
        res["fold"] = f
        results.append(res)
        log.info("cv fold=%d n_users=%d fit_seconds=%.3f", f, res["n_users"], fit_s)
    keys = [
        parse_metric(m, k).key
        for m in (metrics if metrics is not None else default_ranking_metrics(k))
    ]
    mean = {key: float(np.mean([r[key] for r in results])) for key in keys}
    std = {
        key: float(np.std([r[key] for r in results], ddof=1)) if len(results) > 1 else 0.0
        for key in keys
    }
    return {"folds": results, "mean": mean, "std": std, "n_folds": len(results)}
