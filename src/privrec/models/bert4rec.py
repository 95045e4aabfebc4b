"""BERT4Rec (Sun et al., CIKM 2019): bidirectional self-attention trained by masked item prediction.

Training (the Cloze task): in each window every item is replaced by [MASK] with probability
`mask_prob` and the model predicts the masked items from both sides; a window where no item was
drawn gets its latest item masked, and with probability `mask_last_prob` a window is instead
trained with only its latest item masked, which is exactly the request-time task. At request
time [MASK] is appended after the latest `max_len - 1` history items and its output scores every
item. Losses: `models.sequential_data`; item representation: `models.sequential_config`; training:
`models.sequential_train`; scoring and persistence: `models.sequential`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from pydantic import Field

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


class BERT4RecConfig(SequentialConfig):
    """BERT4Rec settings.

    Attributes:
        mask_prob: probability that a training item is masked (the Cloze rate).
        mask_last_prob: probability that a window is trained with only its latest item masked.
        ffn_factor: feed-forward width factor (BERT's 4 by default).
        num_heads: attention heads (2 as in the paper).
    """

    mask_prob: float = Field(default=0.2, gt=0.0, lt=1.0)
    mask_last_prob: float = Field(default=0.1, ge=0.0, le=1.0)
    ffn_factor: int = Field(default=4, ge=1)
    num_heads: int = Field(default=2, ge=1)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)


@register
class BERT4Rec(SequentialRecommender):
    """Bidirectional transformer trained by masked item prediction."""

    name = "bert4rec"
    Config = BERT4RecConfig
    config: BERT4RecConfig
    causal = False

    def _mask_token(self) -> int:
        return self.n_items + 1

    def _inference_tokens(self, history: np.ndarray) -> np.ndarray:
        keep = self.config.max_len - 1
        recent = history[-keep:] if keep > 0 else history[:0]
        return np.concatenate([recent + 1, [self._mask_token()]]).astype(np.int64)

    def _make_batches(
        self,
        seqs: list[np.ndarray],
        n_items: int,
        gen: np.random.Generator,
        types: list[np.ndarray] | None = None,
    ) -> Iterator[TrainBatch]:
        c = self.config
        mask_id = n_items + 1

        def wins_of(rows: list[np.ndarray]) -> list[np.ndarray]:
            return [
                w
                for s in rows
                if len(s) >= 1
                for w in windows(s, c.max_len, c.long_sequences)
                if len(w) >= 1
            ]

        wins = wins_of(seqs)
        twins = wins_of(types) if types is not None else None
        lengths = np.array([len(w) for w in wins], dtype=np.int64)
        for idx in batch_order(lengths, c.batch_size, c.length_pool, gen):
            chosen = [wins[i] for i in idx]
            tokens = pad_left([w + 1 for w in chosen])
            real = tokens != PAD
            masked = (gen.random(tokens.shape) < c.mask_prob) & real
            last_only = gen.random(len(chosen)) < c.mask_last_prob
            masked[last_only] = False
            none = ~masked.any(axis=1)
            masked[none, -1] = True  # the latest item is always the last column (left padding)
            target = np.where(masked, tokens, PAD)
            seq = np.where(masked, mask_id, tokens)
            negatives = sample_negatives(target, n_items, c.loss, c.n_negatives, gen)
            tt = None
            if twins is not None:
                tt = np.where(masked, pad_left([twins[i] + 1 for i in idx]), PAD)
            yield TrainBatch(seq, target, negatives, tt)

    def _anchored(self, prefix: np.ndarray, item: int) -> tuple[np.ndarray, np.ndarray]:
        # the request-time task: [MASK] after the latest max_len - 1 items
        keep = self.config.max_len - 1
        recent = prefix[-keep:] if keep > 0 else prefix[:0]
        seq = np.concatenate([recent + 1, [self.n_items + 1]]).astype(np.int64)
        target = np.zeros_like(seq)
        target[-1] = item + 1
        return seq, target


__all__ = ["BERT4Rec", "BERT4RecConfig"]
