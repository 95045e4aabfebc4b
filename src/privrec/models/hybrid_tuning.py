"""Fitting the hybrid's route weights and new-item boost on a validation split.

Each user's last training event is held out (`validation_split(protocol="leave_one_out")`), the
components are fitted on the rest, and a coordinate search over `grid` (`rounds` passes) maximises
NDCG@10 of the held-out item (full ranking, training items masked) for up to `max_valid_users`
sampled users with more than `cold_user_max_items` items. The cold weights are fitted the same way
on validation users whose history is cut to their last 1..cold_user_max_items events (a simulated
new user). The new-item boost (when `cold_item_boost` is None) is fitted on the warm validation
users with a seeded `cold_item_fraction` of the items made "new" for the occasion (their CF /
sequential / popularity scores neutral, as for a real new item): the boost in
`cold_item_boost_grid` with the best NDCG@10 over all those users, so it trades the new items'
chances against the others'. Fixed `weights` / `cold_weights` skip the search.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from privrec.core.types import UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.base import Recommender
from privrec.models.hybrid_blend import component_z, normalise_weights
from privrec.models.hybrid_config import HybridConfig

__all__ = ["WeightSearch", "histories_of"]


def histories_of(
    ds: InteractionDataset, users: np.ndarray, last: np.ndarray | None = None
) -> list[UserHistory]:
    """Chronological UserHistory of each user (only the `last[i]` latest events when given)."""
    off = ds.user_offsets()
    w = ds.event_weight_array()
    out = []
    for i, u in enumerate(users.tolist()):
        a, b = int(off[u]), int(off[u + 1])
        if last is not None:
            a = max(a, b - int(last[i]))
        out.append(
            UserHistory(
                items=ds.item_idx[a:b].astype(np.int64),
                weights=w[a:b],
                event_types=ds.event_type[a:b],
            )
        )
    return out


@dataclass
class WeightSearch:
    """The weight search over fitted components (`item_events`: training events per item).

    Attributes:
        c: the hybrid's settings (grid, rounds, validation users, cold route, boosts).
        components: the fitted components by role.
        item_events: training interactions per item of the data the components were fitted on.
        n_items: items in the catalogue.
    """

    c: HybridConfig
    components: dict[str, Recommender]
    item_events: np.ndarray
    n_items: int

    def tune(
        self, sub: InteractionDataset, valid: InteractionDataset, seed: int
    ) -> tuple[dict[str, float], dict[str, float], float, dict[str, Any]]:
        """Warm weights, cold weights, new-item boost and a report, fitted on `valid`'s events
        (each user's next item after `sub`, on which the components were fitted)."""
        c = self.c
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        users = valid.user_idx.astype(np.int64)
        targets = valid.item_idx.astype(np.int64)
        distinct = np.diff(sub.matrix(binary=True).indptr)[users]
        info: dict[str, Any] = {}

        warm = np.nonzero(distinct > c.cold_user_max_items)[0]
        names = list(self.components)
        boost = 0.0
        if (c.weights is None or c.cold_item_boost is None) and warm.size:
            pick = np.sort(rng.choice(warm, size=min(c.max_valid_users, warm.size), replace=False))
            hist = histories_of(sub, users[pick])
            known = np.nonzero(self.item_events > 0)[0]
            pseudo = np.zeros(self.n_items, bool)
            pseudo[
                rng.choice(
                    known, size=max(1, round(c.cold_item_fraction * known.size)), replace=False
                )
            ] = True
            fixed = normalise_weights(c.weights, names) if c.weights is not None else None
            weights, boost, res = self.search(
                names,
                hist,
                targets[pick],
                fixed=fixed,
                pseudo_new=pseudo if c.cold_item_boost is None else None,
            )
            info["warm"] = res
        else:
            weights = normalise_weights(c.weights or {n: 1.0 for n in names}, names)

        cold_names = list(c.cold_components)
        has = np.nonzero(distinct > 0)[0]
        if c.cold_weights is None and c.cold_user_max_items > 0 and has.size:
            pick = np.sort(rng.choice(has, size=min(c.max_valid_users, has.size), replace=False))
            last = 1 + (np.arange(pick.size) % c.cold_user_max_items)
            hist = histories_of(sub, users[pick], last)
            # every component's own score on these simulated new users is reported, for the record
            cold, _, res = self.search(
                cold_names, hist, targets[pick], cold_route=True, report=names
            )
            info["cold"] = res
        elif c.cold_weights is None:  # only empty histories are cold: content has nothing to say
            cold = normalise_weights(
                {n: float(n != "content") for n in cold_names}
                if cold_names != ["content"]
                else {"content": 1.0},
                cold_names,
            )
        else:
            cold = normalise_weights(c.cold_weights, cold_names)
        info["seconds"] = round(time.perf_counter() - t0, 2)
        return weights, cold, boost, info

    def search(
        self,
        names: list[str],
        histories: list[UserHistory],
        targets: np.ndarray,
        *,
        cold_route: bool = False,
        report: list[str] | None = None,
        fixed: dict[str, float] | None = None,
        pseudo_new: np.ndarray | None = None,
    ) -> tuple[dict[str, float], float, dict[str, Any]]:
        """Coordinate search of the weights of `names` (unless `fixed`) maximising NDCG@10 of
        `targets`, then, with `pseudo_new` (items to treat as new), of the new-item boost.

        Returns (weights, boost, report); the report also holds each component's NDCG@10 alone
        (for `names` and `report`)."""
        c = self.c
        h = self.components["content"].history_matrix(histories)
        if cold_route:  # a simulated new user keeps at most cold_user_max_items distinct items
            keep = np.diff(h.indptr) <= c.cold_user_max_items
        else:
            keep = np.ones(h.shape[0], bool)
        rows = np.arange(h.shape[0])
        keep &= (
            np.asarray(h[rows, targets]).ravel() == 0
        )  # a target already in the history cannot be ranked
        idx = np.nonzero(keep)[0]
        h = h[idx]
        histories = [histories[i] for i in idx.tolist()]
        targets = targets[idx]
        if h.shape[0] == 0:  # nobody to learn from: equal weights
            return fixed or normalise_weights({n: 1.0 for n in names}, names), 0.0, {"users": 0}
        shown = list(dict.fromkeys([*names, *(report or [])]))
        z = {
            n: component_z(n, self.components[n], h, histories, self.item_events, self.n_items)
            for n in shown
        }
        mask = h.copy()
        mask.data[:] = 1.0
        mask_rows = np.repeat(np.arange(h.shape[0]), np.diff(mask.indptr))
        ar = np.arange(h.shape[0])

        def ndcg(s: np.ndarray) -> float:
            s[mask_rows, mask.indices] = -np.inf
            t = s[ar, targets][:, None]
            rank = (s > t).sum(axis=1) + 0.5 * ((s == t).sum(axis=1) - 1)
            return float(np.where(rank < 10, 1.0 / np.log2(rank + 2.0), 0.0).mean())

        def combined(w: dict[str, float], zs: dict[str, np.ndarray]) -> np.ndarray:
            s = np.zeros((h.shape[0], self.n_items), np.float32)
            for n in w:
                if w[n]:
                    s += np.float32(w[n]) * zs[n]
            return s

        def objective(w: dict[str, float]) -> float:
            if not any(v > 0 for v in w.values()):
                return -1.0
            return ndcg(combined(w, z))

        alone = {n: objective({n: 1.0}) for n in shown}
        w = dict(fixed) if fixed is not None else {n: 1.0 for n in names}
        best = objective(w)
        for _ in range(c.rounds if fixed is None else 0):
            improved = False
            for n in names:
                for g in c.grid:
                    if g == w[n]:
                        continue
                    trial = {**w, n: float(g)}
                    val = objective(trial)
                    if val > best + 1e-12:
                        best, w, improved = val, trial, True
            if not improved:
                break
        weights = normalise_weights(w, names)
        res: dict[str, Any] = {
            "users": int(h.shape[0]),
            "ndcg@10": round(best, 5),
            "alone": {k: round(v, 5) for k, v in alone.items()},
        }
        boost = 0.0
        if pseudo_new is not None and pseudo_new.any():
            # the same users with some items made "new": only their text score still speaks
            zn = {
                n: (a if n == "content" else np.where(pseudo_new[None, :], np.float32(0.0), a))
                for n, a in z.items()
            }
            base = combined(weights, zn)
            by_boost = {}
            for b in c.cold_item_boost_grid:
                by_boost[float(b)] = ndcg(
                    base + np.float32(b) * pseudo_new[None, :].astype(np.float32)
                )
            boost = max(by_boost, key=lambda b: (by_boost[b], -b))
            res["new_item_boost"] = {
                "boost": boost,
                "ndcg@10": round(by_boost[boost], 5),
                "ndcg@10_no_boost": round(by_boost.get(0.0, float("nan")), 5),
                "pseudo_new_items": int(pseudo_new.sum()),
                "targets_new": int(pseudo_new[targets].sum()),
            }
        return weights, boost, res
