"""Splitters: stratified (per item or per user), global temporal, leave-one-out, user k-fold.

Every splitter returns InteractionDatasets made with `InteractionDataset.subset`, so all parts
share the vocabularies and item data of the input (index i is the same item everywhere). Every
random step takes a seed; the same seed gives the same split.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Literal

import numpy as np

from privrec.core.errors import ValidationError
from privrec.data.dataset import InteractionDataset

logger = logging.getLogger(__name__)

__all__ = [
    "leave_one_out",
    "stratified_split",
    "temporal_split",
    "user_kfold",
    "user_kfold_holdout",
    "validation_split",
]


# ---- helpers -------------------------------------------------------------------------------
def _check_ratio(ratio: float) -> float:
    ratio = float(ratio)
    if not 0.0 < ratio < 1.0:
        raise ValidationError(
            "ratio",
            f"{ratio} is not strictly between 0 and 1; give the training fraction, e.g. 0.75",
        )
    return ratio


def _source_order(ds: InteractionDataset) -> np.ndarray:
    """Event positions in source order (the order the rows had before the dataset sorted them)."""
    if ds.arrival is None:
        return np.arange(ds.n_events, dtype=np.int64)
    return np.argsort(ds.arrival, kind="stable")


def _round_half_even(x: np.ndarray) -> np.ndarray:
    # Python's round() and numpy's rint both round halves to even (round(1.5) == 2, round(4.5) ==
    # 4);
    # the reference implementation relies on it, so the counts must too.
    return np.rint(x).astype(np.int64)


def _within_group_position(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For codes in row order: (0-based position of each row inside its group, group sizes)."""
    n = codes.shape[0]
    sizes = np.bincount(codes) if n else np.zeros(0, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    pos_sorted = np.arange(n, dtype=np.int64) - np.repeat(starts, sizes)
    pos = np.empty(n, dtype=np.int64)
    pos[order] = pos_sorted
    return pos, sizes


# ---- stratified ----------------------------------------------------------------------------
def stratified_split(
    ds: InteractionDataset,
    ratio: float = 0.75,
    *,
    filter_by: Literal["item", "user"] = "item",
    seed: int = 42,
    min_rating: int = 1,
    method: Literal["shuffle", "rank"] = "shuffle",
) -> tuple[InteractionDataset, InteractionDataset]:
    """Split each item's (or user's) events at random, `round(ratio * n)` of them to train.

    Reimplements Microsoft Recommenders' `python_stratified_split(df, ratio, min_rating, filter_by,
    seed)`, the protocol of their MovieLens benchmark (our anchors use `filter_by="item"`: every
    item's ratings are split 75/25). Semantics, both methods:

    - Groups with fewer than `min_rating` events are dropped (from both parts).
    - A group of n events puts `round(ratio * n)` of them in train, with Python's rounding (halves
      to even: n=2 -> 2, n=6 -> 4, n=1 -> 1) and the rest in test.
    - Which events go to train depends on the seed and on the events' source row order (the
      order of the file the dataset was loaded from, kept in `ds.arrival`), exactly as upstream
      depends on the DataFrame's row order. Load the same file and you get the same rows.

    Methods:
        "shuffle" (default): upstream's original algorithm. Each group, rows in source order, is
            shuffled with `DataFrame.sample(frac=1, random_state=seed)` (that is, numpy's
            `RandomState(seed).permutation(n)`, the same permutation for every group of size n)
            and the first `round(ratio * n)` shuffled rows go to train (`np.split`).
        "rank": upstream's later vectorised algorithm: `np.random.seed(seed)`, one uniform draw
            per row in source order, rows ranked by draw inside their group, ranks
            `<= round(ratio * n)` go to train. Same counts, different rows.
        (Some upstream revisions compare `rank / n <= ratio` instead, which rounds the train
        count down, e.g. n=1 -> 0; that variant is not reproduced.)

    Args:
        ds: the dataset (any event types; every event is one row).
        ratio: training fraction per group, strictly between 0 and 1.
        filter_by: "item" groups by item, "user" by user.
        seed: the random seed.
        min_rating: minimum events per group to keep the group.
        method: "shuffle" or "rank" (see above).

    Returns:
        (train, test), sharing the vocabularies of `ds`.
    """
    ratio = _check_ratio(ratio)
    if filter_by not in ("item", "user"):
        raise ValidationError("filter_by", f"{filter_by!r} is not 'item' or 'user'")
    if int(min_rating) < 1:
        raise ValidationError("min_rating", f"{min_rating} is below 1; give an integer >= 1")
    if method not in ("shuffle", "rank"):
        raise ValidationError("method", f"{method!r} is not 'shuffle' or 'rank'")

    src = _source_order(ds)  # event positions, in source row order
    codes_all = (ds.item_idx if filter_by == "item" else ds.user_idx)[src].astype(np.int64)
    counts = np.bincount(codes_all, minlength=1)
    kept = counts[codes_all] >= int(min_rating)
    src, codes = src[kept], codes_all[kept]

    train_src = np.zeros(src.shape[0], dtype=bool)
    if src.shape[0]:
        pos, sizes = _within_group_position(codes)
        n = sizes[codes]
        k = _round_half_even(ratio * n.astype(np.float64))
        if method == "shuffle":
            shuffled = np.empty_like(pos)
            for m in np.unique(n):
                perm = np.random.RandomState(seed).permutation(int(m))
                inverse = np.argsort(
                    perm
                )  # original position p sits at shuffled position inverse[p]
                sel = n == m
                shuffled[sel] = inverse[pos[sel]]
            train_src = shuffled < k
        else:
            draws = np.random.RandomState(seed).rand(src.shape[0])
            order = np.lexsort((draws, codes))  # stable: by group, then by draw
            rank = np.empty_like(pos)
            ranked_codes = codes[order]
            starts = np.concatenate([[0], np.cumsum(np.bincount(ranked_codes))[:-1]])
            rank[order] = np.arange(order.shape[0]) - starts[ranked_codes]
            train_src = rank + 1 <= k

    train_mask = np.zeros(ds.n_events, dtype=bool)
    test_mask = np.zeros(ds.n_events, dtype=bool)
    train_mask[src[train_src]] = True
    test_mask[src[~train_src]] = True
    return ds.subset(train_mask, name=f"{ds.name}:train"), ds.subset(
        test_mask, name=f"{ds.name}:test"
    )


# ---- temporal ------------------------------------------------------------------------------
def temporal_split(
    ds: InteractionDataset,
    ratio: float | None = None,
    *,
    cutoff_ts: float | None = None,
    drop_unseen: bool = False,
) -> tuple[InteractionDataset, InteractionDataset]:
    """Global temporal split: the earliest events train, the latest test.

    Give exactly one of:
        ratio: the first `round(ratio * n_events)` events in time order (ties by source order)
            go to train; events with the same timestamp may fall on both sides.
        cutoff_ts: events with `ts < cutoff_ts` go to train, the others to test.

    Args:
        ds: the dataset.
        drop_unseen: drop test events whose user or item has no training event (a cold-start-free
            test set); off by default so the split loses nothing.

    Returns:
        (train, test), sharing the vocabularies of `ds`.
    """
    if (ratio is None) == (cutoff_ts is None):
        raise ValidationError("ratio", "give exactly one of ratio or cutoff_ts")
    if ratio is not None:
        ratio = _check_ratio(ratio)
        tie = ds.arrival if ds.arrival is not None else np.arange(ds.n_events)
        order = np.lexsort((tie, ds.ts))
        n_train = int(_round_half_even(np.array([ratio * ds.n_events]))[0])
        train = np.zeros(ds.n_events, dtype=bool)
        train[order[:n_train]] = True
    else:
        train = ds.ts < float(cutoff_ts)  # type: ignore[arg-type]
    test = ~train
    if drop_unseen:
        seen_u = np.zeros(ds.n_users, dtype=bool)
        seen_i = np.zeros(ds.n_items, dtype=bool)
        seen_u[ds.user_idx[train]] = True
        seen_i[ds.item_idx[train]] = True
        test &= seen_u[ds.user_idx] & seen_i[ds.item_idx]
    return ds.subset(train, name=f"{ds.name}:train"), ds.subset(test, name=f"{ds.name}:test")


# ---- leave-one-out -------------------------------------------------------------------------
def _last_positions(ds: InteractionDataset) -> tuple[np.ndarray, np.ndarray]:
    """Per event: how many of its user's events come after it, and its user's event count."""
    off = ds.user_offsets()
    counts = np.diff(off)
    end = off[1:][ds.user_idx]  # the dataset is sorted by (user, ts, source order)
    after = end - 1 - np.arange(ds.n_events)
    return after, counts[ds.user_idx]


def leave_one_out(
    ds: InteractionDataset,
) -> tuple[InteractionDataset, InteractionDataset, InteractionDataset]:
    """Per user, the last event is test, the second to last validation, the rest train.

    Order is chronological: by timestamp, ties in source order (the dataset's own order). Users
    with fewer than 3 events go entirely to train (they cannot give a training, a validation and
    a test event); they still count as users, so a model can serve them. Every event is one
    position, whatever its type; filter the dataset first (e.g. purchases only) for another
    protocol.

    Returns:
        (train, valid, test), sharing the vocabularies of `ds`.
    """
    after, n = _last_positions(ds)
    eligible = n >= 3
    test = eligible & (after == 0)
    valid = eligible & (after == 1)
    train = ~(test | valid)
    return (
        ds.subset(train, name=f"{ds.name}:train"),
        ds.subset(valid, name=f"{ds.name}:valid"),
        ds.subset(test, name=f"{ds.name}:test"),
    )


def leave_one_out_test(ds: InteractionDataset) -> tuple[InteractionDataset, InteractionDataset]:
    """(train, test) of the leave-one-out protocol at test time: the validation event is trained on.

    The same test events as `leave_one_out` (each eligible user's last event); everything else,
    the validation event included, is training data, as in the published leave-one-out tables.
    """
    after, n = _last_positions(ds)
    test = (n >= 3) & (after == 0)
    return ds.subset(~test, name=f"{ds.name}:train"), ds.subset(test, name=f"{ds.name}:test")


# ---- user k-fold ---------------------------------------------------------------------------
def _user_folds(ds: InteractionDataset, k: int, seed: int) -> np.ndarray:
    if int(k) < 2:
        raise ValidationError("k", f"{k} folds is too few; give k >= 2")
    if ds.n_users < k:
        raise ValidationError(
            "k", f"{k} folds but only {ds.n_users} users; give k <= the number of users"
        )
    perm = np.random.default_rng(seed).permutation(ds.n_users)
    fold = np.empty(ds.n_users, dtype=np.int64)
    fold[perm] = np.arange(ds.n_users) % k  # fold sizes differ by at most one
    return fold


def user_kfold(
    ds: InteractionDataset, k: int = 5, *, seed: int = 42
) -> Iterator[tuple[InteractionDataset, InteractionDataset]]:
    """Partition users into k folds (seeded); yield (train, test) with fold f's users as test.

    Test holds all events of the fold's users, train all events of the other users (strong
    generalisation: test users are unseen in training). To evaluate on test users, give a model
    part of their history and score the rest: `user_kfold_holdout` does that split for you.
    """
    fold = _user_folds(ds, k, seed)
    ev_fold = fold[ds.user_idx]
    for f in range(k):
        test = ev_fold == f
        yield (
            ds.subset(~test, name=f"{ds.name}:fold{f}:train"),
            ds.subset(test, name=f"{ds.name}:fold{f}:test"),
        )


def user_kfold_holdout(
    ds: InteractionDataset,
    k: int = 5,
    *,
    seed: int = 42,
    holdout_fraction: float = 0.2,
    order: Literal["time", "random"] = "time",
) -> Iterator[tuple[InteractionDataset, InteractionDataset, InteractionDataset]]:
    """User k-fold with each test user's history split into fold-in and holdout.

    Yields (train, fold_in, holdout) per fold: train = all events of the other users; for the
    fold's users, `fold_in` is the history a model sees at request time and `holdout` the events
    to predict. Each test user with n >= 2 events gets `max(1, round(holdout_fraction * n))`
    holdout events: the latest ones (`order="time"`) or a seeded random choice
    (`order="random"`); a test user with a single event is all fold-in.
    """
    if not 0.0 < float(holdout_fraction) < 1.0:
        raise ValidationError(
            "holdout_fraction", f"{holdout_fraction} is not strictly between 0 and 1"
        )
    if order not in ("time", "random"):
        raise ValidationError("order", f"{order!r} is not 'time' or 'random'")
    fold = _user_folds(ds, k, seed)
    after, n = _last_positions(ds)
    n_hold = np.maximum(1, _round_half_even(float(holdout_fraction) * n.astype(np.float64)))
    n_hold = np.where(n >= 2, np.minimum(n_hold, n - 1), 0)
    if order == "time":
        rank_from_end = after
    else:
        # Random rank inside each user: sort by (user, random draw).
        draws = np.random.default_rng(seed + 1).random(ds.n_events)
        o = np.lexsort((draws, ds.user_idx))
        off = ds.user_offsets()
        rank_from_end = np.empty(ds.n_events, dtype=np.int64)
        rank_from_end[o] = np.arange(ds.n_events) - off[ds.user_idx[o]]
    is_hold = rank_from_end < n_hold
    ev_fold = fold[ds.user_idx]
    for f in range(k):
        test = ev_fold == f
        yield (
            ds.subset(~test, name=f"{ds.name}:fold{f}:train"),
            ds.subset(test & ~is_hold, name=f"{ds.name}:fold{f}:fold_in"),
            ds.subset(test & is_hold, name=f"{ds.name}:fold{f}:holdout"),
        )


# ---- validation ----------------------------------------------------------------------------
def validation_split(
    train: InteractionDataset,
    *,
    protocol: Literal["stratified", "leave_one_out", "temporal"] = "stratified",
    ratio: float = 0.75,
    filter_by: Literal["item", "user"] = "item",
    seed: int = 43,
    method: Literal["shuffle", "rank"] = "shuffle",
) -> tuple[InteractionDataset, InteractionDataset]:
    """Carve (sub_train, valid) out of a training split only, for tuning without touching test.

    Protocols:
        "stratified": `stratified_split(train, ratio, filter_by=..., seed=seed)`; the default
            seed (43) differs from the test split's default (42) so the two splits are not the
            same draw.
        "leave_one_out": each user's last training event is validation (users with < 2
            training events keep everything in sub_train).
        "temporal": `temporal_split(train, ratio)`.
    """
    if protocol == "stratified":
        return stratified_split(train, ratio, filter_by=filter_by, seed=seed, method=method)
    if protocol == "leave_one_out":
        after, n = _last_positions(train)
        valid = (n >= 2) & (after == 0)
        return train.subset(~valid, name=f"{train.name}:subtrain"), train.subset(
            valid, name=f"{train.name}:valid"
        )
    if protocol == "temporal":
        return temporal_split(train, ratio)
    raise ValidationError(
        "protocol", f"{protocol!r} is not 'stratified', 'leave_one_out' or 'temporal'"
    )
