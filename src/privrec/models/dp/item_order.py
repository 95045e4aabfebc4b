"""The public item order every DP model is fitted and saved in (see `in_public_item_order`)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary

__all__ = ["in_public_item_order"]


def in_public_item_order(dataset: InteractionDataset) -> InteractionDataset:
    """`dataset` re-encoded over the public catalogue, its item keys sorted.

    `InteractionDataset.from_events` numbers items in order of first interaction, then the
    catalogue items nobody touched: that order (and which items come first) depends on the
    shoppers, and adding one shopper can change it. A DP model's artifact and the item list saved
    beside it must not: fit and save DP models on this dataset. The catalogue is
    `item_meta` where it lists items (events on items outside it are dropped: their existence is
    not public); without one, every key of the vocabulary, sorted.
    """
    meta = dataset.item_meta
    old_keys = dataset.items.keys
    listed = meta["item"].astype(str).tolist() if "item" in meta else old_keys
    public = set(listed)
    if "title" in meta.columns or "category" in meta.columns or "text" in meta.columns:
        # rows with catalogue data are the catalogue; rows padded for event-only items are not
        known = meta.drop(columns=["item"]).notna().any(axis=1).to_numpy()
        if known.any():
            public = {k for k, ok in zip(listed, known, strict=True) if ok}
    keys = sorted(public)
    vocab = Vocabulary(keys)
    old_to_new = np.array([vocab.get(k) for k in old_keys], dtype=np.int64)
    new_idx = old_to_new[dataset.item_idx]
    keep = new_idx >= 0
    order = np.full(len(keys), -1, dtype=np.int64)
    order[old_to_new[old_to_new >= 0]] = np.flatnonzero(old_to_new >= 0)
    new_meta = meta.iloc[order].reset_index(drop=True)
    return replace(
        dataset,
        items=vocab,
        user_idx=dataset.user_idx[keep],
        item_idx=new_idx[keep].astype(np.int32),
        event_type=dataset.event_type[keep],
        ts=dataset.ts[keep],
        rating=dataset.rating[keep],
        item_meta=new_meta,
        arrival=dataset.arrival[keep] if dataset.arrival is not None else None,
    )
