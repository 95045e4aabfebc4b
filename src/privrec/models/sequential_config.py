"""Settings of the sequential transformers (SASRec, BERT4Rec), their item text and their network.

Item representation (`item_repr`):
    "id":       a learned embedding per item (the classic models);
    "text":     a frozen text embedding per item (n_items, t) through a learned adaptor
                (linear or MLP), so an item never seen in training still has a representation;
    "id+text":  the sum of both; items absent from training get a zero ID part at the end of
                `fit`, so they are represented by their text alone.
The text matrix is given to `fit(item_text_embeddings=...)` or by path in the config; it is saved
with the model (it is needed to score), as one more safetensors array.

Network (`models.nn.sequence`): item embedding (scaled by sqrt(d)) + a learned position embedding
counted from the END of the sequence (the latest item is position 0, whatever the padding), dropout,
`num_blocks` pre-LayerNorm transformer blocks (multi-head self-attention; causal for SASRec,
bidirectional for BERT4Rec; padding is never attended to), a final LayerNorm. Scores are dot
products with the same item table (tied input/output embeddings). Because positions count from the
end and padding is masked, a user's scores do not depend on how much padding their batch holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import Field, field_validator

from privrec.core.errors import ConfigError
from privrec.core.rng import DEFAULT_SEED
from privrec.models.base import ModelConfig
from privrec.models.imbalance import check_event_type, check_type_weights

if TYPE_CHECKING:
    from privrec.models.nn.sequence import SequenceNet

__all__ = ["SequentialConfig", "build_sequence_net", "item_text_matrix", "load_text_matrix"]


class SequentialConfig(ModelConfig):
    """Settings shared by SASRec and BERT4Rec.

    Attributes:
        embedding_size: model width d.
        num_blocks: transformer blocks.
        num_heads: attention heads (must divide embedding_size).
        ffn_factor: feed-forward hidden size = ffn_factor * embedding_size.
        max_len: the longest history the network reads (older items are dropped).
        dropout: dropout on embeddings, attention weights, residual branches.
        epochs: maximum passes over the training sequences (give `fit` validation data to stop
            early and keep the best epoch).
        learning_rate: Adam step size.
        weight_decay: AdamW decoupled weight decay (0: plain Adam).
        batch_size: training sequences per step (the global batch under DDP).
        loss: "full_softmax", "sampled_softmax" or "bce" (see `models.sequential_data`).
        n_negatives: negatives per batch for "sampled_softmax".
        long_sequences: "last" trains on each user's latest window only (the published SASRec);
            "chunks" also on the earlier windows of long histories (every item trained once).
        length_pool: batches are formed from pools of this many batches sorted by length, so a
            batch holds sequences of similar length and little padding (1: plain random batches).
        eval_every: epochs between validation checks (when `fit` gets validation data).
        patience: validation checks without improvement before stopping.
        eval_mask_history: mask the user's history items (except the validation item itself)
            when ranking the validation item.
        time_budget_s: stop training after this many seconds (None: no limit; runs that hit it
            are no longer reproducible across machines).
        grad_clip: clip the global gradient norm to this (None: no clipping).
        item_repr: "id", "text" or "id+text".
        text_adaptor: "linear" or "mlp" (text -> d).
        item_text_embeddings: path of an (n_items, t) float32 matrix (.npy or .safetensors) used
            when `fit` is not given one.
        device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".
        num_threads: torch CPU threads while training and scoring (1 by default: on the shared
            2-core machine 2 threads measured 5-7x slower per step while other jobs ran).
        score_batch_size: histories scored at once.
        seed: seeds everything; `fit(rng=...)` overrides it.
        adv_eps: adversarial training of the ID embeddings (APR, He et al. 2018): each
            step also takes the loss with the table moved by eps along its row-normalised
            gradient (0: off). Not for DP-SGD (its per-sample gradients) or DDP runs.
        adv_reg: weight of that adversarial loss.
        target_weights: purchase-oriented training: the loss weight of a training target by the
            event type being predicted, e.g. {"view": 1, "purchase": 10} (types left out weigh
            1; None: every target weighs 1, as before). See `models.imbalance`.
        resample_ratio: purchase-oriented training: each epoch adds examples ending at a
            `resample_type` event (drawn with replacement) until those events make up this share
            of the targets (None: no resampling).
        resample_type: the event type that `resample_ratio` oversamples.
    """

    embedding_size: int = Field(default=64, ge=1)
    num_blocks: int = Field(default=2, ge=1)
    num_heads: int = Field(default=1, ge=1)
    ffn_factor: int = Field(default=1, ge=1)
    max_len: int = Field(default=50, ge=2)
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    epochs: int = Field(default=100, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    batch_size: int = Field(default=128, ge=1)
    loss: Literal["full_softmax", "sampled_softmax", "bce"] = "full_softmax"
    n_negatives: int = Field(default=256, ge=1)
    long_sequences: Literal["last", "chunks"] = "last"
    length_pool: int = Field(default=32, ge=1)
    eval_every: int = Field(default=1, ge=1)
    patience: int = Field(default=5, ge=1)
    eval_mask_history: bool = True
    time_budget_s: float | None = Field(default=None, gt=0.0)
    grad_clip: float | None = Field(default=None, gt=0.0)
    item_repr: Literal["id", "text", "id+text"] = "id"
    text_adaptor: Literal["linear", "mlp"] = "linear"
    item_text_embeddings: str | None = None
    device: str = "auto"
    num_threads: int = Field(default=1, ge=1)
    score_batch_size: int = Field(default=512, ge=1)
    seed: int = DEFAULT_SEED
    adv_eps: float = Field(default=0.0, ge=0.0)
    adv_reg: float = Field(default=1.0, ge=0.0)
    target_weights: dict[str, float] | None = None
    resample_ratio: float | None = Field(default=None, gt=0.0, lt=1.0)
    resample_type: str = "purchase"

    @field_validator("target_weights")
    @classmethod
    def _check_target_weights(cls, v: dict[str, float] | None) -> dict[str, float] | None:
        return check_type_weights(v, "target_weights")

    @field_validator("resample_type")
    @classmethod
    def _check_resample_type(cls, v: str) -> str:
        return check_event_type(v, "resample_type")

    @property
    def by_event_type(self) -> bool:
        """Whether training reads each event's type (target weights or resampling are on)."""
        return self.target_weights is not None or self.resample_ratio is not None


# ---- item text --------------------------------------------------------------------------------
def load_text_matrix(path: str | Path) -> np.ndarray:
    """An (n_items, t) float32 matrix from .npy or .safetensors (its only or "embeddings" array)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(
            f"item_text_embeddings: {p} does not exist; give the path of an (n_items, d) "
            ".npy or .safetensors matrix"
        )
    if p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
    elif p.suffix == ".safetensors":
        from safetensors.numpy import load_file

        arrays = load_file(str(p))
        if "embeddings" in arrays:
            arr = arrays["embeddings"]
        elif len(arrays) == 1:
            arr = next(iter(arrays.values()))
        else:
            raise ConfigError(
                f"item_text_embeddings: {p} holds {sorted(arrays)}; name the matrix 'embeddings'"
            )
    else:
        raise ConfigError(f"item_text_embeddings: {p} is neither .npy nor .safetensors")
    return np.asarray(arr, dtype=np.float32)


def item_text_matrix(
    c: SequentialConfig, given: np.ndarray | None, n_items: int
) -> np.ndarray | None:
    """The checked text matrix a fit uses: `given`, else the config's file; None without text."""
    if "text" not in c.item_repr.split("+"):
        return None
    if given is None and c.item_text_embeddings is None:
        raise ConfigError(
            f"item_repr: {c.item_repr!r} needs item text embeddings; "
            "pass fit(item_text_embeddings=...) "
            "or set item_text_embeddings to a .npy/.safetensors path"
        )
    if given is not None:
        text = np.asarray(given, dtype=np.float32)
    else:
        text = load_text_matrix(str(c.item_text_embeddings))
    if text.ndim != 2 or text.shape[0] != n_items:
        raise ConfigError(
            f"item_text_embeddings: shape {text.shape}, expected ({n_items}, d): "
            "one row per item index"
        )
    if not np.isfinite(text).all():
        raise ConfigError("item_text_embeddings: holds NaN or infinite values")
    return text


# ---- the network --------------------------------------------------------------------------------
def build_sequence_net(
    n_items: int,
    c: SequentialConfig,
    causal: bool,
    text: np.ndarray | None,
    text_dim: int | None,
) -> SequenceNet:
    """The network for `n_items` items (text given at fit time, or only its width at load time)."""
    from privrec.models.nn.sequence import SequenceNet

    return SequenceNet(
        n_items,
        c.embedding_size,
        num_blocks=c.num_blocks,
        num_heads=c.num_heads,
        ffn_factor=c.ffn_factor,
        max_len=c.max_len,
        dropout=c.dropout,
        causal=causal,
        item_repr=c.item_repr,
        text_adaptor=c.text_adaptor,
        text=text,
        text_dim=text_dim,
        loss=c.loss,
        adv_eps=c.adv_eps,
        adv_reg=c.adv_reg,
    )
