"""SASRec (Kang & McAuley, ICDM 2018): causal self-attention over the user's ordered history.

Each position of a training window predicts the next item (teacher forcing over the whole
window); at request time the output at the latest item scores every item. The loss can be the
original binary cross-entropy with one negative ("bce"), full softmax cross-entropy (as in
"SASRec+", Klenitskiy & Vasilev 2023) or sampled softmax with many shared negatives (the
uSASRec / gSASRec family's cheap stand-in for it). See `privrec.models.sequential_config` for the
item representation (ID, frozen text + adaptor, or both), `privrec.models.sequential_train` for
training, `privrec.models.sequential` for scoring and persistence, and `privrec.models.nn.sequence`
for the network.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from privrec.models.base import register
from privrec.models.nn.tokens import PAD
from privrec.models.sequential import SequentialRecommender
from privrec.models.sequential_config import SequentialConfig
from privrec.models.sequential_data import (
    TrainBatch,
    batch_order,
    pad_left,
    sample_negatives,
    windows,
)


class SASRecConfig(SequentialConfig):
    """SASRec settings (all shared with BERT4Rec; see SequentialConfig)."""


@register
class SASRec(SequentialRecommender):
    """Causal transformer next-item model."""

    name = "sasrec"
    Config = SASRecConfig
    config: SASRecConfig
    causal = True

    def _make_batches(
        self,
        seqs: list[np.ndarray],
        n_items: int,
        gen: np.random.Generator,
        types: list[np.ndarray] | None = None,
    ) -> Iterator[TrainBatch]:
        c = self.config

        def wins_of(rows: list[np.ndarray]) -> list[np.ndarray]:
            return [
                w
                for s in rows
                if len(s) >= 2
                for w in windows(s, c.max_len + 1, c.long_sequences, step=c.max_len)
                if len(w) >= 2
            ]

        wins = wins_of(seqs)
        # the types' windows line up with the items' (same lengths, same cuts)
        twins = wins_of(types) if types is not None else None
        lengths = np.array([len(w) for w in wins], dtype=np.int64)
        for idx in batch_order(lengths, c.batch_size, c.length_pool, gen):
            chosen = [wins[i] for i in idx]
            seq = pad_left([w[:-1] + 1 for w in chosen])
            target = pad_left([w[1:] + 1 for w in chosen])
            negatives = sample_negatives(target, n_items, c.loss, c.n_negatives, gen)
            tt = None if twins is None else pad_left([twins[i][1:] + 1 for i in idx])
            yield TrainBatch(seq, target, negatives, tt)

    def _anchored(self, prefix: np.ndarray, item: int) -> tuple[np.ndarray, np.ndarray]:
        seq = prefix[-self.config.max_len :] + 1
        target = np.zeros_like(seq)
        target[-1] = item + 1  # the output at the latest history item predicts `item`
        return seq, target


__all__ = ["PAD", "SASRec", "SASRecConfig"]
