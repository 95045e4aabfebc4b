"""Synthetic sequential data for the SASRec / BERT4Rec tests: item i is always followed by i + 1."""

from __future__ import annotations

import numpy as np
import pandas as pd

from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary

N_CHAIN = 20  # items 0..19 form a cycle; items 20 and 21 ("new0", "new1") never occur


def chain_dataset(n_users: int = 60, seed: int = 0) -> InteractionDataset:
    """Each user walks the cycle 0 -> 1 -> ... -> 19 -> 0 from a random start, 4 to 10 steps."""
    rng = np.random.default_rng(seed)
    keys = [f"i{k:02d}" for k in range(N_CHAIN)] + ["new0", "new1"]
    rows = []
    ts = 1_700_000_000.0
    for u in range(n_users):
        start = int(rng.integers(0, N_CHAIN))
        for k in range(int(rng.integers(4, 11))):
            ts += 1.0
            rows.append((f"u{u:03d}", keys[(start + k) % N_CHAIN], "view", ts))
    events = pd.DataFrame(rows, columns=["user", "item", "type", "ts"])
    return InteractionDataset.from_events(events, items=Vocabulary(keys), name="chain")


def text_matrix(n_items: int = N_CHAIN + 2, dim: int = 12, seed: int = 1) -> np.ndarray:
    """Random unit-norm 'text embeddings', one row per item."""
    t = np.random.default_rng(seed).normal(size=(n_items, dim)).astype(np.float32)
    return t / np.linalg.norm(t, axis=1, keepdims=True)


def next_item_hit_rate(model, n_probe: int = 40, seed: int = 5, length: int = 4) -> float:  # type: ignore[no-untyped-def]
    """HR@1 of predicting the next chain item after fresh walks of `length` items."""
    from privrec.core.types import UserHistory

    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(n_probe):
        start = int(rng.integers(0, N_CHAIN))
        hist = [(start + k) % N_CHAIN for k in range(length)]
        items, _ = model.recommend(UserHistory.of(hist), k=1, exclude_history=False)
        hits += int(items[0] == (start + length) % N_CHAIN)
    return hits / n_probe
