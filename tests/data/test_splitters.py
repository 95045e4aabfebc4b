"""Splitters on small hand-made datasets with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from privrec.core.errors import ValidationError
from privrec.data.dataset import InteractionDataset
from privrec.data.splitters import (
    leave_one_out,
    stratified_split,
    temporal_split,
    user_kfold,
    user_kfold_holdout,
    validation_split,
)


def _ds(rows: list[tuple[str, str, float]], *, type_: str = "view") -> InteractionDataset:
    """Events (user, item, ts) in source order."""
    ev = pd.DataFrame(rows, columns=["user", "item", "ts"]).assign(type=type_)
    return InteractionDataset.from_events(ev, name="toy")


def _random_rows(
    n_items: int = 40, n_users: int = 30, seed: int = 0
) -> list[tuple[str, str, float]]:
    """Item j gets 1 + j % 13 events from random users, rows shuffled (source order is random)."""
    rng = np.random.default_rng(seed)
    rows = []
    for j in range(n_items):
        for _ in range(1 + j % 13):
            rows.append(
                (
                    f"u{rng.integers(n_users)}",
                    f"i{j}",
                    float(rng.integers(1_600_000_000, 1_600_100_000)),
                )
            )
    return [rows[k] for k in rng.permutation(len(rows))]


def _keys(ds: InteractionDataset) -> set[int]:
    assert ds.arrival is not None
    return set(ds.arrival.tolist())


# ---- stratified ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["shuffle", "rank"])
def test_stratified_counts_per_item_are_python_round(method: str) -> None:
    ds = _ds(_random_rows())
    train, test = stratified_split(ds, 0.75, filter_by="item", seed=42, method=method)
    assert train.items is ds.items and test.items is ds.items and train.users is ds.users
    n = np.bincount(ds.item_idx, minlength=ds.n_items)
    n_train = np.bincount(train.item_idx, minlength=ds.n_items)
    n_test = np.bincount(test.item_idx, minlength=ds.n_items)
    assert [int(x) for x in n_train] == [
        round(0.75 * int(m)) for m in n
    ]  # halves to even: 2 -> 2, 6 -> 4
    assert (n_train + n_test == n).all()
    assert _keys(train).isdisjoint(_keys(test)) and _keys(train) | _keys(test) == set(
        range(ds.n_events)
    )
    # known roundings
    assert round(0.75 * 2) == 2 and round(0.75 * 6) == 4 and round(0.75 * 1) == 1


def test_stratified_reproducible_and_seed_dependent() -> None:
    ds = _ds(_random_rows())
    a, _ = stratified_split(ds, seed=42)
    b, _ = stratified_split(ds, seed=42)
    c, _ = stratified_split(ds, seed=7)
    assert _keys(a) == _keys(b)
    assert _keys(a) != _keys(c)
    assert len(_keys(a)) == len(_keys(c))


def _reference_shuffle(df: pd.DataFrame, col: str, ratio: float, seed: int) -> set[int]:
    """The upstream algorithm as described: per group (rows in source order) shuffle with
    DataFrame.sample(frac=1, random_state=seed), then np.split at round(ratio * len)."""
    train: list[int] = []
    for _, group in df.groupby(col, sort=True):
        shuffled = group.sample(frac=1, random_state=seed)
        head, _tail = np.split(shuffled["row"].to_numpy(), [round(ratio * len(shuffled))])
        train += head.tolist()
    return set(train)


def _reference_rank(df: pd.DataFrame, col: str, ratio: float, seed: int) -> set[int]:
    """Upstream's later algorithm: one np.random.rand draw per row, rank inside the group."""
    d = df.copy()
    np.random.seed(seed)
    d["r"] = np.random.rand(len(d))
    d = d.sort_values([col, "r"])
    g = d.groupby(col)
    d["rank"] = g.cumcount() + 1
    d["count"] = g[col].transform("count")
    return set(d.loc[d["rank"] <= np.round(ratio * d["count"]), "row"].tolist())


@pytest.mark.parametrize(
    ("method", "ref"), [("shuffle", _reference_shuffle), ("rank", _reference_rank)]
)
@pytest.mark.parametrize("filter_by", ["item", "user"])
def test_stratified_matches_the_reference_algorithm_on_source_rows(method, ref, filter_by) -> None:
    rows = _random_rows(seed=3)
    ds = _ds(rows)
    df = pd.DataFrame(rows, columns=["user", "item", "ts"]).assign(row=np.arange(len(rows)))
    train, _ = stratified_split(ds, 0.75, filter_by=filter_by, seed=42, method=method)
    assert _keys(train) == ref(df, filter_by, 0.75, 42)


def test_stratified_min_rating_drops_small_groups() -> None:
    ds = _ds(_random_rows())
    train, test = stratified_split(ds, min_rating=5)
    n = np.bincount(ds.item_idx, minlength=ds.n_items)
    small = np.nonzero(n < 5)[0]
    assert not np.isin(train.item_idx, small).any() and not np.isin(test.item_idx, small).any()
    assert train.n_events + test.n_events == int(n[n >= 5].sum())


def test_stratified_bad_arguments() -> None:
    ds = _ds(_random_rows(n_items=3))
    with pytest.raises(ValidationError, match="ratio"):
        stratified_split(ds, 1.5)
    with pytest.raises(ValidationError, match="filter_by"):
        stratified_split(ds, filter_by="session")  # type: ignore[arg-type]


# ---- temporal ------------------------------------------------------------------------------
def test_temporal_split_by_ratio_and_cutoff() -> None:
    rows = [("a", "x", 10.0), ("b", "y", 20.0), ("a", "y", 30.0), ("b", "z", 40.0)]
    ds = _ds([(u, i, t + 1_600_000_000) for u, i, t in rows])
    train, test = temporal_split(ds, 0.5)
    assert sorted(train.ts - 1_600_000_000) == [10.0, 20.0] and sorted(test.ts - 1_600_000_000) == [
        30.0,
        40.0,
    ]
    train, test = temporal_split(ds, cutoff_ts=1_600_000_030)
    assert train.n_events == 2 and test.n_events == 2
    _, test = temporal_split(ds, cutoff_ts=1_600_000_030, drop_unseen=True)
    assert test.items.decode(test.item_idx) == ["y"]  # z was never seen in training
    with pytest.raises(ValidationError):
        temporal_split(ds)


# ---- leave-one-out -------------------------------------------------------------------------
def test_leave_one_out_known_answer() -> None:
    t = 1_600_000_000.0
    rows = [
        ("a", "i1", t + 1),
        ("a", "i4", t + 4),
        ("b", "i1", t + 1),
        ("a", "i2", t + 2),
        ("a", "i3", t + 4),  # same second as i4 but later in the source: i3 is the last event
        ("b", "i2", t + 2),  # b has 2 events: all to train
        ("c", "i9", t + 1),
        ("c", "i8", t + 2),
        ("c", "i7", t + 3),
    ]
    ds = _ds(rows)
    train, valid, test = leave_one_out(ds)

    def per_user(d: InteractionDataset) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for u, i in zip(d.users.decode(d.user_idx), d.items.decode(d.item_idx), strict=True):
            out.setdefault(u, []).append(i)
        return out

    assert per_user(test) == {"a": ["i3"], "c": ["i7"]}
    assert per_user(valid) == {"a": ["i4"], "c": ["i8"]}
    assert per_user(train) == {"a": ["i1", "i2"], "b": ["i1", "i2"], "c": ["i9"]}
    assert train.items is ds.items and test.users is ds.users


# ---- k-fold --------------------------------------------------------------------------------
def test_user_kfold_partitions_users() -> None:
    ds = _ds(_random_rows(n_users=23))
    folds = list(user_kfold(ds, k=5, seed=1))
    assert len(folds) == 5
    test_users = [set(np.unique(te.user_idx).tolist()) for _, te in folds]
    all_users = set(np.unique(ds.user_idx).tolist())
    assert set().union(*test_users) == all_users
    assert sum(len(s) for s in test_users) == len(all_users)  # disjoint
    for (tr, te), users in zip(folds, test_users, strict=True):
        assert users.isdisjoint(np.unique(tr.user_idx).tolist())
        assert tr.n_events + te.n_events == ds.n_events
    again = [set(np.unique(te.user_idx).tolist()) for _, te in user_kfold(ds, k=5, seed=1)]
    assert again == test_users
    with pytest.raises(ValidationError, match="k"):
        next(user_kfold(ds, k=1))


def test_user_kfold_holdout_splits_test_histories() -> None:
    ds = _ds(_random_rows(n_users=10))
    for train, fold_in, holdout in user_kfold_holdout(ds, k=3, seed=0, holdout_fraction=0.25):
        assert train.n_events + fold_in.n_events + holdout.n_events == ds.n_events
        assert set(np.unique(holdout.user_idx)) <= set(np.unique(fold_in.user_idx))
        for u in np.unique(holdout.user_idx):
            n = int((fold_in.user_idx == u).sum() + (holdout.user_idx == u).sum())
            assert int((holdout.user_idx == u).sum()) == max(1, round(0.25 * n))
            # time order: every holdout event is no earlier than every fold-in event
            assert (
                holdout.ts[holdout.user_idx == u].min() >= fold_in.ts[fold_in.user_idx == u].max()
            )


# ---- validation ----------------------------------------------------------------------------
def test_validation_split_uses_train_only_and_another_seed() -> None:
    ds = _ds(_random_rows())
    train, test = stratified_split(ds, seed=42)
    sub, valid = validation_split(train)
    assert _keys(sub) | _keys(valid) == _keys(train)
    assert _keys(valid).isdisjoint(_keys(test))
    n_tr = np.bincount(train.item_idx, minlength=ds.n_items)
    assert [int(x) for x in np.bincount(sub.item_idx, minlength=ds.n_items)] == [
        round(0.75 * int(m)) for m in n_tr
    ]
    sub_loo, valid_loo = validation_split(train, protocol="leave_one_out")
    assert sub_loo.n_events + valid_loo.n_events == train.n_events
    assert len(np.unique(valid_loo.user_idx)) == valid_loo.n_events
