"""Shilling (data-poisoning) attacks: fake shoppers who push target items.

The classic profile-injection attacks (Lam & Riedl 2004; Mobasher et al. 2007), for implicit
and explicit data. Each fake profile holds the target items, a few *selected* items that depend
on the attack, and *filler* items:

- random:    filler drawn uniformly from the catalogue; filler ratings ~ N(global mean, std).
- average:   filler drawn in proportion to popularity (what an average shopper touches); filler
             ratings ~ N(item mean, item std).
- bandwagon: selected = the most popular items (shared by every fake, to look like many real
             shoppers); filler uniform, rated like random.
- segment:   selected = popular items of the target's segment (its category, or else the items
             most co-consumed with a seeded popular anchor), so the fakes reach the shoppers who
             like that segment; filler uniform, rated at the scale minimum.
Targets and selected items get the scale maximum. Datasets without ratings get NaN ratings and
only the item choice differs.

Fake users get random 32-hex-digit keys (they look like pseudonyms) and timestamps drawn inside
the time span of a random real shopper, so neither the key nor the timing gives them away unless
`burst=True` (all events of a fake within seconds, as a crude bot would).

Targets are unpopular items (seeded choice among items below the popularity median that somebody
touched), since those are the ones a seller would want to push.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from privrec.core.types import EVENT_CODE
from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary

__all__ = [
    "ATTACKS",
    "AttackKind",
    "PoisonedDataset",
    "choose_targets",
    "inject_attack",
    "item_popularity",
    "with_users",
]

AttackKind = Literal["random", "average", "bandwagon", "segment"]
ATTACKS: tuple[AttackKind, ...] = ("random", "average", "bandwagon", "segment")


@dataclass
class PoisonedDataset:
    """A dataset with fake shoppers appended.

    Attributes:
        dataset: real events plus the fakes' events; real users keep their indices, fakes come
            after.
        fake_users: user indices of the fake shoppers.
        targets: the pushed item indices.
        kind: the attack.
        selected: the attack's selected items (bandwagon/segment), else empty.
    """

    dataset: InteractionDataset
    fake_users: np.ndarray
    targets: np.ndarray
    kind: str
    selected: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    @property
    def n_real(self) -> int:
        """Number of real users (they are indices 0..n_real-1)."""
        return self.dataset.n_users - len(self.fake_users)


def item_popularity(ds: InteractionDataset) -> np.ndarray:
    """Distinct users per item."""
    m = ds.matrix(binary=True)
    return np.bincount(m.indices, minlength=ds.n_items).astype(np.int64)


def choose_targets(ds: InteractionDataset, n_targets: int = 5, *, seed: int = 0) -> np.ndarray:
    """`n_targets` unpopular items (touched by someone, at most the median popularity), seeded."""
    if n_targets < 1:
        raise ValueError("n_targets: must be at least 1")
    pop = item_popularity(ds)
    seen = np.flatnonzero(pop > 0)
    if seen.size == 0:
        raise ValueError("dataset: has no events, so there is no item to target")
    pool = seen[pop[seen] <= np.median(pop[seen])]
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(pool, size=min(n_targets, pool.size), replace=False)).astype(np.int64)


def _segment_items(
    ds: InteractionDataset,
    targets: np.ndarray,
    size: int,
    pop: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Popular items of the first target's category, or items co-consumed with a popular anchor."""
    cat = ds.item_meta["category"].to_numpy(dtype=object) if "category" in ds.item_meta else None
    exclude = set(targets.tolist())
    if cat is not None and isinstance(cat[targets[0]], str) and cat[targets[0]]:
        # ML-100K holds "Action|Comedy": the segment is the first genre
        first = cat[targets[0]].split("|")[0]
        same = np.array([isinstance(c, str) and first in c.split("|") for c in cat])
        cand = np.flatnonzero(same & (pop > 0))
        cand = np.array([i for i in cand if i not in exclude], dtype=np.int64)
        if cand.size >= size:
            return cand[np.argsort(-pop[cand], kind="stable")[:size]]
    m = ds.matrix(binary=True).tocsc()
    top = np.argsort(-pop, kind="stable")[:50]
    anchor = int(rng.choice(top))
    fans = m[:, anchor].indices
    co = np.asarray(m[fans].sum(axis=0)).ravel()
    co[list(exclude)] = -1
    return np.argsort(-co, kind="stable")[:size].astype(np.int64)


def inject_attack(
    ds: InteractionDataset,
    kind: AttackKind,
    *,
    fraction: float = 0.03,
    targets: np.ndarray | None = None,
    n_targets: int = 5,
    filler_size: int | None = None,
    selected_size: int = 10,
    burst: bool = False,
    seed: int = 0,
) -> PoisonedDataset:
    """Append fake shoppers who push `targets` (default: `choose_targets` with the same seed).

    Args:
        ds: the (training) dataset to poison; it is not modified.
        kind: "random", "average", "bandwagon" or "segment".
        fraction: fake shoppers as a fraction of the real users (0.01, 0.03, 0.05 in reports).
        targets: item indices to push.
        n_targets: how many targets to choose when `targets` is None.
        filler_size: filler items per fake (default: the median real profile size).
        selected_size: selected items per fake (bandwagon, segment).
        burst: put each fake's events one second apart (a crude bot) instead of real-looking times.
        seed: drives every random choice.
    """
    if kind not in ATTACKS:
        raise ValueError(f"kind: unknown attack {kind!r}; choose one of {', '.join(ATTACKS)}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction: {fraction} is not in (0, 1]")
    rng = np.random.default_rng(seed)
    targets = (
        choose_targets(ds, n_targets, seed=seed)
        if targets is None
        else np.asarray(targets, dtype=np.int64)
    )
    n_fake = max(1, round(fraction * ds.n_users))
    pop = item_popularity(ds)
    m = ds.matrix(binary=True)
    sizes = np.diff(m.indptr)
    if filler_size is None:
        filler_size = int(max(1, np.median(sizes[sizes > 0]))) if (sizes > 0).any() else 1
    if filler_size < 0:
        raise ValueError("filler_size: must not be negative")

    selected = np.empty(0, np.int64)
    if kind == "bandwagon":
        selected = np.array(
            [i for i in np.argsort(-pop, kind="stable") if i not in set(targets.tolist())][
                :selected_size
            ],
            np.int64,
        )
    elif kind == "segment":
        selected = _segment_items(ds, targets, selected_size, pop, rng)

    # ratings: explicit data gets classic attack ratings, implicit data none
    has_ratings = bool(np.isfinite(ds.rating).mean() > 0.5) if ds.n_events else False
    finite = np.isfinite(ds.rating)
    r = ds.rating[finite].astype(np.float64)
    r_min, r_max = (float(r.min()), float(r.max())) if r.size else (1.0, 5.0)
    g_mean, g_std = (float(r.mean()), float(r.std())) if r.size else (3.0, 1.0)
    item_sum = np.bincount(ds.item_idx[finite], weights=r, minlength=ds.n_items)
    item_sq = np.bincount(ds.item_idx[finite], weights=r * r, minlength=ds.n_items)
    item_n = np.bincount(ds.item_idx[finite], minlength=ds.n_items)
    with np.errstate(invalid="ignore", divide="ignore"):
        item_mean = np.where(item_n > 0, item_sum / np.maximum(item_n, 1), g_mean)
        item_std = np.sqrt(
            np.maximum(
                np.where(item_n > 1, item_sq / np.maximum(item_n, 1) - item_mean**2, g_std**2), 0.0
            )
        )

    # the fakes' event type: the dataset's most common one (ratings for MovieLens, purchases for
    # Amazon)
    etype = int(np.bincount(ds.event_type).argmax()) if ds.n_events else EVENT_CODE["view"]
    fixed = np.unique(np.concatenate([targets, selected]))
    blocked = np.zeros(ds.n_items, bool)
    blocked[fixed] = True
    weights = np.where(blocked, 0.0, pop.astype(np.float64))
    p_avg = weights / weights.sum() if weights.sum() > 0 else None
    free = np.flatnonzero(~blocked)

    # the real users' time spans, to place the fakes' events where real shoppers' events are
    off = ds.user_offsets()
    active = np.flatnonzero(np.diff(off) > 0)
    real_keys = ds.users.keys
    fake_keys: list[str] = []
    taken = set(real_keys)
    users, items, ts, ratings = [], [], [], []
    for f in range(n_fake):
        n_fill = min(filler_size, free.size)
        if kind == "average" and p_avg is not None:
            filler = rng.choice(
                ds.n_items, size=min(n_fill, int(np.count_nonzero(p_avg))), replace=False, p=p_avg
            )
        else:
            filler = rng.choice(free, size=n_fill, replace=False)
        prof = np.concatenate([targets, selected, filler]).astype(np.int64)
        if has_ratings:
            rt = np.empty(len(prof), np.float64)
            rt[: len(targets) + len(selected)] = r_max
            fr = filler
            if kind == "average":
                vals = rng.normal(item_mean[fr], np.maximum(item_std[fr], 1e-6))
            elif kind == "segment":
                vals = np.full(len(fr), r_min)
            else:
                vals = rng.normal(g_mean, g_std, size=len(fr))
            rt[len(targets) + len(selected) :] = np.clip(np.rint(vals), r_min, r_max)
        else:
            rt = np.full(len(prof), np.nan)
        prof_order = rng.permutation(len(prof))  # targets are not always first in time
        prof, rt = prof[prof_order], rt[prof_order]
        if burst or active.size == 0:
            start = float(ds.ts[rng.integers(0, ds.n_events)]) if ds.n_events else 0.0
            t = start + np.arange(len(prof), dtype=np.float64)
        else:
            u = int(rng.choice(active))
            lo, hi = float(ds.ts[off[u]]), float(ds.ts[off[u + 1] - 1])
            t = np.sort(np.round(rng.uniform(lo, max(hi, lo + len(prof)), size=len(prof))))
        key = rng.bytes(16).hex()
        while key in taken:
            key = rng.bytes(16).hex()
        taken.add(key)
        fake_keys.append(key)
        users.append(np.full(len(prof), ds.n_users + f, np.int32))
        items.append(prof.astype(np.int32))
        ts.append(t)
        ratings.append(rt.astype(np.float32))

    n_new = int(sum(len(x) for x in users))
    poisoned = InteractionDataset(
        users=Vocabulary(real_keys + fake_keys),
        items=ds.items,
        user_idx=np.concatenate([ds.user_idx, *users]).astype(np.int32),
        item_idx=np.concatenate([ds.item_idx, *items]).astype(np.int32),
        event_type=np.concatenate([ds.event_type, np.full(n_new, etype, np.int8)]).astype(np.int8),
        ts=np.concatenate([ds.ts, *ts]),
        rating=np.concatenate([ds.rating, *ratings]).astype(np.float32),
        item_meta=ds.item_meta,
        event_weights=dict(ds.event_weights),
        name=f"{ds.name}+{kind}{fraction:g}",
        arrival=None,
        n_rejects=ds.n_rejects,
    )
    fakes = np.arange(ds.n_users, ds.n_users + n_fake, dtype=np.int64)
    return PoisonedDataset(poisoned, fakes, targets, kind, selected)


def with_users(ds: InteractionDataset, users: Vocabulary) -> InteractionDataset:
    """`ds` re-labelled with a user vocabulary that extends its own (e.g. a test set beside a
    poisoned training set, whose fakes were appended after the real users)."""
    if users.keys[: ds.n_users] != ds.users.keys:
        raise ValueError("users: must start with the dataset's own users in the same order")
    out = ds.subset(np.ones(ds.n_events, bool))
    out.users = users
    return out
