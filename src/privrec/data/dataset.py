"""InteractionDataset: what models train on (dense ids, sparse matrix, sequences, item text)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from privrec.core.types import DEFAULT_EVENT_WEIGHTS, EVENT_CODE, EVENT_TYPES, UserHistory
from privrec.data.vocab import Vocabulary

# Columns of a gated event frame (the output of the privacy gate and of the store).
EVENT_COLUMNS = ("event_id", "user", "item", "type", "ts", "rating", "query", "session")
ITEM_META_COLUMNS = ("item", "title", "category", "brand", "price", "in_stock", "text")


@dataclass
class InteractionDataset:
    """Events of pseudonymous users on items, with dense indices.

    All arrays are aligned, one entry per event, sorted by (user, ts) with ties kept in
    arrival order. `users` holds pseudonyms, never raw ids.

    Attributes:
        users / items: vocabularies of pseudonyms and item keys.
        user_idx, item_idx: int32 dense indices per event.
        event_type: int8 codes per event (see core.types.EVENT_CODE).
        ts: float64 Unix seconds per event.
        rating: float32 per event, NaN where the event has no rating.
        item_meta: one row per item index with ITEM_META_COLUMNS (missing values allowed).
        event_weights: weight of each event type in `matrix()`.
        name: a label for reports.
        arrival: int64 per event, its row position in the source (the gated event frame), so
            splitters can reproduce protocols defined on the source row order; None if unknown.
        n_rejects: how many source rows the privacy gate rejected while loading (0 if unknown).
    """

    users: Vocabulary
    items: Vocabulary
    user_idx: np.ndarray
    item_idx: np.ndarray
    event_type: np.ndarray
    ts: np.ndarray
    rating: np.ndarray
    item_meta: pd.DataFrame
    event_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS))
    name: str = "dataset"
    arrival: np.ndarray | None = None
    n_rejects: int = 0

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_events(
        cls,
        events: pd.DataFrame,
        *,
        item_meta: pd.DataFrame | None = None,
        event_weights: Mapping[str, float] | None = None,
        name: str = "dataset",
        items: Vocabulary | None = None,
        users: Vocabulary | None = None,
    ) -> InteractionDataset:
        """Build a dataset from a gated event frame (columns user, item, type, ts[, rating]).

        `type` may hold names or integer codes. Items in `item_meta` with no events still get an
        index (new items exist before anyone touches them). Pass `items`/`users` to reuse
        vocabularies (events with unknown keys are then dropped).
        """
        ev = events
        types = ev["type"].to_numpy()
        if types.dtype.kind in "OUS":
            codes = pd.Series(types).map(EVENT_CODE)
            if codes.isna().any():
                raise ValueError("events.type holds an unknown event type")
            types = codes.to_numpy(np.int8)
        types = types.astype(np.int8)
        if users is None:
            users = Vocabulary(pd.unique(ev["user"].astype(str)))
        if items is None:
            keys = list(pd.unique(ev["item"].astype(str)))
            if item_meta is not None and len(item_meta):
                seen = set(keys)
                keys += [k for k in item_meta["item"].astype(str) if k not in seen]
            items = Vocabulary(keys)
        u = users.encode(ev["user"].astype(str).tolist())
        i = items.encode(ev["item"].astype(str).tolist())
        ts = ev["ts"].to_numpy(np.float64)
        rating = (
            ev["rating"].to_numpy(np.float32, na_value=np.nan)
            if "rating" in ev
            else np.full(len(ev), np.nan, np.float32)
        )
        keep = (u >= 0) & (i >= 0)
        u, i, types, ts, rating = u[keep], i[keep], types[keep], ts[keep], rating[keep]
        arrival = np.arange(len(ev), dtype=np.int64)[keep]
        order = np.lexsort((np.arange(len(u)), ts, u))
        meta = cls._align_meta(items, item_meta)
        return cls(
            users=users,
            items=items,
            user_idx=u[order].astype(np.int32),
            item_idx=i[order].astype(np.int32),
            event_type=types[order],
            ts=ts[order],
            rating=rating[order],
            item_meta=meta,
            event_weights=dict(event_weights or DEFAULT_EVENT_WEIGHTS),
            name=name,
            arrival=arrival[order],
        )

    @staticmethod
    def _align_meta(items: Vocabulary, item_meta: pd.DataFrame | None) -> pd.DataFrame:
        base = pd.DataFrame({"item": items.keys})
        if item_meta is None or not len(item_meta):
            meta = base
        else:
            m = item_meta.copy()
            m["item"] = m["item"].astype(str)
            meta = base.merge(m.drop_duplicates("item"), on="item", how="left")
        for col in ITEM_META_COLUMNS:
            if col not in meta:
                meta[col] = np.nan if col in ("price",) else None
        return meta.reset_index(drop=True)

    # ---- basic facts ----------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        """Number of users in the vocabulary."""
        return len(self.users)

    @property
    def n_items(self) -> int:
        """Number of items in the vocabulary (including items with no events)."""
        return len(self.items)

    @property
    def n_events(self) -> int:
        """Number of events."""
        return int(self.user_idx.shape[0])

    def __repr__(self) -> str:
        return (
            f"InteractionDataset({self.name!r}, users={self.n_users}, items={self.n_items}, "
            f"events={self.n_events})"
        )

    # ---- views ------------------------------------------------------------------------------
    def event_weight_array(
        self, weights: Mapping[str, float] | None = None, *, use_ratings: bool = False
    ) -> np.ndarray:
        """Per-event weight: the event type's weight, or the rating value when `use_ratings`."""
        w = dict(self.event_weights if weights is None else weights)
        table = np.array([float(w.get(t, 1.0)) for t in EVENT_TYPES], dtype=np.float32)
        out = table[self.event_type]
        if use_ratings:
            has = ~np.isnan(self.rating)
            out = np.where(has, self.rating, out).astype(np.float32)
        return out

    def matrix(
        self,
        weights: Mapping[str, float] | None = None,
        *,
        binary: bool = False,
        use_ratings: bool = False,
        aggregate: str = "max",
    ) -> sp.csr_matrix:
        """The user x item matrix (float32 CSR).

        Args:
            weights: event-type weights (defaults to the dataset's).
            binary: 1.0 wherever the user touched the item.
            use_ratings: take a rating event's value instead of its type weight.
            aggregate: "max" keeps the strongest event per (user, item); "sum" adds them up.
        """
        shape = (self.n_users, self.n_items)
        if binary:
            vals = np.ones(self.n_events, dtype=np.float32)
        else:
            vals = self.event_weight_array(weights, use_ratings=use_ratings)
        if aggregate == "sum":
            m = sp.csr_matrix((vals, (self.user_idx, self.item_idx)), shape=shape, dtype=np.float32)
        elif aggregate == "max":
            key = self.user_idx.astype(np.int64) * self.n_items + self.item_idx
            df = pd.DataFrame({"k": key, "v": vals}).groupby("k", sort=True)["v"].max()
            k = df.index.to_numpy()
            m = sp.csr_matrix(
                (df.to_numpy(np.float32), (k // self.n_items, k % self.n_items)), shape=shape
            )
        else:
            raise ValueError("aggregate must be 'max' or 'sum'")
        m.sum_duplicates()
        if binary:
            m.data[:] = 1.0
        return m

    def user_offsets(self) -> np.ndarray:
        """CSR-style offsets: events of user u are [offsets[u], offsets[u+1])."""
        counts = np.bincount(self.user_idx, minlength=self.n_users)
        return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def sequences(self) -> list[np.ndarray]:
        """Per user, the chronological item indices of their events."""
        off = self.user_offsets()
        return [self.item_idx[off[u] : off[u + 1]] for u in range(self.n_users)]

    def history(self, user: int, *, weights: Mapping[str, float] | None = None) -> UserHistory:
        """The UserHistory of one user index (chronological)."""
        sel = np.nonzero(self.user_idx == user)[0]
        w = self.event_weight_array(weights)[sel]
        return UserHistory(
            items=self.item_idx[sel].astype(np.int64), weights=w, event_types=self.event_type[sel]
        )

    def subset(self, mask: np.ndarray, *, name: str | None = None) -> InteractionDataset:
        """The events where `mask` is true, sharing this dataset's vocabularies and item data."""
        mask = np.asarray(mask, dtype=bool)
        return InteractionDataset(
            users=self.users,
            items=self.items,
            user_idx=self.user_idx[mask],
            item_idx=self.item_idx[mask],
            event_type=self.event_type[mask],
            ts=self.ts[mask],
            rating=self.rating[mask],
            item_meta=self.item_meta,
            event_weights=dict(self.event_weights),
            name=name or self.name,
            arrival=None if self.arrival is None else self.arrival[mask],
            n_rejects=self.n_rejects,
        )

    def to_frame(self) -> pd.DataFrame:
        """The events as a frame with dense indices (user_idx, item_idx, type, ts, rating)."""
        return pd.DataFrame(
            {
                "user_idx": self.user_idx,
                "item_idx": self.item_idx,
                "type": self.event_type,
                "ts": self.ts,
                "rating": self.rating,
            }
        )

    def item_text(self) -> list[str]:
        """One text per item: title, category path and brand where present ('' if none)."""
        meta = self.item_meta
        if "text" in meta and meta["text"].notna().any():
            base = meta["text"].fillna("")
        else:
            base = pd.Series([""] * len(meta))
        out = []
        for b, t, c, br in zip(base, meta["title"], meta["category"], meta["brand"], strict=True):
            if b:
                out.append(str(b))
                continue
            parts = [str(x) for x in (t, c, br) if isinstance(x, str) and x]
            out.append(". ".join(parts))
        return out
