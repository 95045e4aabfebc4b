"""Training data of the sequential transformers: windows, padding, batches, negatives, order rows.

A user is their *ordered* history (oldest first). Token ids inside the network: 0 = padding,
1..n_items = items (item index + 1), n_items + 1 = [MASK] (BERT4Rec). Sequences are left-padded,
so the latest item is always the last column.

Losses and their negatives (`SequentialConfig.loss`): "full_softmax" (cross-entropy over all items,
the strongest and the slowest; no negatives), "sampled_softmax" (cross-entropy over the target and
`n_negatives` items drawn uniformly, shared by the batch; a negative equal to a row's target is
masked out) and "bce" (one uniform negative per target, binary cross-entropy: the original SASRec
loss). Only positions with a target are projected onto the item table, so padding costs no softmax.

Order through the CSR contract: `order_matrix` writes 1 + the position of an item's LAST occurrence
in the history as the value, so a CSR row (which has no order) still tells the models the order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from privrec.data.dataset import InteractionDataset
from privrec.models.nn.tokens import PAD

__all__ = [
    "TrainBatch",
    "batch_order",
    "order_matrix",
    "pad_left",
    "sample_negatives",
    "type_sequences",
    "validation_pairs",
    "windows",
]


@dataclass
class TrainBatch:
    """One global step: left-padded inputs and targets (0 = no target) and the negatives.

    `target_types` (each target's event type code + 1, 0 = no target) and `weights` (each target's
    loss weight) are set only by purchase-oriented training (`models.imbalance`); None otherwise.
    """

    seq: np.ndarray
    target: np.ndarray
    negatives: np.ndarray
    target_types: np.ndarray | None = None
    weights: np.ndarray | None = None


def pad_left(seqs: Sequence[np.ndarray], length: int | None = None) -> np.ndarray:
    """Stack token sequences into int64, left-padded with 0 to `length` (default: the longest)."""
    n = max((len(s) for s in seqs), default=0) if length is None else int(length)
    out = np.zeros((len(seqs), max(n, 1)), dtype=np.int64)
    for r, s in enumerate(seqs):
        s = s[-out.shape[1] :]
        if len(s):
            out[r, out.shape[1] - len(s) :] = s
    return out


def batch_order(
    lengths: np.ndarray, batch_size: int, pool: int, gen: np.random.Generator
) -> list[np.ndarray]:
    """Indices of one epoch's batches: a seeded shuffle, then, inside pools of `pool` batches,
    sorted by length so each batch holds sequences of similar length (little padding), then the
    batches in a seeded random order. pool=1 gives plain random batches."""
    order = gen.permutation(len(lengths))
    if pool > 1:
        span = batch_size * pool
        parts = []
        for start in range(0, len(order), span):
            chunk = order[start : start + span]
            parts.append(chunk[np.argsort(lengths[chunk], kind="stable")])
        order = np.concatenate(parts) if parts else order
    batches = [order[s : s + batch_size] for s in range(0, len(order), batch_size)]
    return [batches[i] for i in gen.permutation(len(batches))]


def windows(seq: np.ndarray, size: int, mode: str, step: int | None = None) -> list[np.ndarray]:
    """The latest `size` items of `seq` ("last"), or windows ending every `step` items from the end
    back to the start ("chunks"; default step = size: no overlap; SASRec uses step = size - 1 so
    every transition is a target exactly once)."""
    if mode == "last" or len(seq) <= size:
        return [seq[-size:]]
    step = size if step is None else int(step)
    out = []
    end = len(seq)
    while True:
        start = max(0, end - size)
        out.append(seq[start:end])
        if start == 0:
            break
        end -= step
    return out[::-1]


def sample_negatives(
    target: np.ndarray, n_items: int, loss: str, n_negatives: int, gen: np.random.Generator
) -> np.ndarray:
    """Token ids of a batch's negatives: `n_negatives` shared uniform items ("sampled_softmax"),
    one uniform item per target ("bce"), or none ("full_softmax")."""
    if loss == "sampled_softmax":
        return gen.integers(1, n_items + 1, size=n_negatives).astype(np.int64)
    if loss == "bce":
        return gen.integers(1, n_items + 1, size=int((target != PAD).sum())).astype(np.int64)
    return np.zeros(0, dtype=np.int64)


def order_matrix(sequences: Sequence[np.ndarray], n_items: int) -> sp.csr_matrix:
    """CSR rows with value 1 + the position of each item's last occurrence in its sequence."""
    rows, cols, vals = [], [], []
    for r, s in enumerate(sequences):
        s = np.asarray(s, dtype=np.int64)
        ok = (s >= 0) & (s < n_items)
        pos = np.nonzero(ok)[0]
        s = s[ok]
        if not s.size:
            continue
        # the last occurrence of each item: first occurrence in the reversed sequence
        uniq, first_rev = np.unique(s[::-1], return_index=True)
        rows.append(np.full(uniq.size, r))
        cols.append(uniq)
        vals.append(pos[::-1][first_rev] + 1.0)
    if not rows:
        return sp.csr_matrix((len(sequences), n_items), dtype=np.float32)
    return sp.csr_matrix(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(len(sequences), n_items),
        dtype=np.float32,
    )


def validation_pairs(
    train: InteractionDataset, valid: InteractionDataset
) -> tuple[list[np.ndarray], np.ndarray]:
    """(training history, next item) for each user holding a validation event (their first one)."""
    seqs = train.sequences()
    off = valid.user_offsets()
    users = np.nonzero(np.diff(off) > 0)[0]
    targets = valid.item_idx[off[users]].astype(np.int64)
    return [seqs[u] for u in users], targets


def type_sequences(dataset: InteractionDataset) -> list[np.ndarray]:
    """Per user, the event type codes aligned with `dataset.sequences()`."""
    off = dataset.user_offsets()
    return [dataset.event_type[off[u] : off[u + 1]] for u in range(dataset.n_users)]
