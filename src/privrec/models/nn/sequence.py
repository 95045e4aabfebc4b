"""The transformer of SASRec / BERT4Rec, and DP-SASRec's per-user loss module.

Token ids: 0 = padding, 1..n_items = items (item index + 1), n_items + 1 = [MASK] (BERT4Rec).
Sequences are left-padded; positions count from the END (the latest item is position 0), so a
row's outputs do not depend on how much padding its batch holds. See `models.sequential` for the
item representations, the losses and how the models train and score with these networks.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from privrec.core.errors import ConfigError
from privrec.models.nn.tokens import PAD

__all__ = [
    "PAD",
    "ItemEncoder",
    "PerUserNextItemLoss",
    "SequenceNet",
    "TransformerBlock",
    "attention_mask",
    "end_positions",
]


def attention_mask(seq: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, 1, L, L) bool: query i may attend to key j (never padding; j <= i when causal).

    Every query sees itself, so padding rows stay finite (their outputs are never used).
    """
    length = seq.shape[1]
    dev = seq.device
    allowed = (seq != PAD)[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=dev).tril()
    return allowed | torch.eye(length, dtype=torch.bool, device=dev)


def end_positions(length: int, max_len: int, device: torch.device) -> torch.Tensor:
    """(L,) position ids counted from the end: the latest column is 0, capped at max_len - 1."""
    return torch.arange(length - 1, -1, -1, device=device).clamp(max=max_len - 1)


class ItemEncoder(nn.Module):
    """Token id -> vector: a learned ID embedding, a frozen text matrix through an adaptor, or both.

    Args:
        n_items: real items (tokens 1..n_items; n_items + 1 is [MASK]).
        d: output width.
        item_repr: "id", "text" or "id+text".
        text_adaptor: "linear" or "mlp" (text -> d).
        text: (n_items, t) text vectors (at fit time), or None with `text_dim` (at load time,
            when the saved buffer fills it).
        text_dim: t when `text` is None.
    """

    # an adversarial perturbation of the ID table (training only)
    delta: torch.Tensor | None = None
    text: torch.Tensor  # the frozen text matrix (a buffer), when the representation uses text

    def __init__(
        self,
        n_items: int,
        d: int,
        *,
        item_repr: str = "id",
        text_adaptor: str = "linear",
        text: np.ndarray | None = None,
        text_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.n_items = int(n_items)
        n_tokens = n_items + 2
        self.use_id = "id" in item_repr.split("+")
        self.use_text = "text" in item_repr.split("+")
        if self.use_id:
            self.id_emb = nn.Embedding(n_tokens, d, padding_idx=PAD)
            nn.init.normal_(self.id_emb.weight, std=d**-0.5)
            with torch.no_grad():
                self.id_emb.weight[PAD].zero_()
        if self.use_text:
            if text is None and text_dim is None:
                raise ConfigError("item_repr: a text representation needs `text` or `text_dim`")
            t = text.shape[1] if text is not None else int(text_dim)  # type: ignore[arg-type]
            buf = torch.zeros(n_tokens, t)
            if text is not None:
                buf[1 : n_items + 1] = torch.from_numpy(
                    np.ascontiguousarray(text, dtype=np.float32)
                )
            self.register_buffer("text", buf)
            if text_adaptor == "linear":
                self.adaptor: nn.Module = nn.Linear(t, d)
            else:
                self.adaptor = nn.Sequential(nn.Linear(t, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
            # text-only needs a vector for [MASK] (its text row is empty)
            self.mask_emb = nn.Parameter(torch.randn(d) * d**-0.5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (any shape) -> vectors (shape + (d,)); padding maps to 0 for text."""
        out = None
        if self.use_id:
            out = self.id_emb(ids)
            if self.delta is not None:
                out = out + F.embedding(ids, self.delta)
        if self.use_text:
            tx = self.adaptor(self.text[ids])
            tx = torch.where((ids == self.n_items + 1).unsqueeze(-1), tx + self.mask_emb, tx)
            tx = tx * (ids != PAD).unsqueeze(-1).to(tx.dtype)
            out = tx if out is None else out + tx
        return out  # type: ignore[return-value]

    def table(self) -> torch.Tensor:
        """Vectors of the real items 1..n_items (row r = item index r)."""
        return self.forward(torch.arange(1, self.n_items + 1, device=self._device()))

    def _device(self) -> torch.device:
        return next(self.parameters()).device


class TransformerBlock(nn.Module):
    """Pre-LayerNorm transformer block: masked multi-head self-attention, then a GELU MLP.

    Args:
        d: model width.
        num_heads: attention heads (must divide d).
        ffn_factor: feed-forward hidden size = ffn_factor * d.
        dropout: on attention weights and residual branches.
    """

    def __init__(self, d: int, num_heads: int = 1, ffn_factor: int = 1, dropout: float = 0.0):
        super().__init__()
        if d % num_heads:
            raise ConfigError(
                f"num_heads: {num_heads} does not divide embedding_size {d}; choose a divisor"
            )
        self.d, self.num_heads = d, num_heads
        self.ln1 = nn.LayerNorm(d)
        self.q = nn.Linear(d, d)
        # no key bias: it adds the same amount to every key's logit, so its true gradient is
        # exactly 0 and Adam would turn rounding noise into full-size steps
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, ffn_factor * d)
        self.ff2 = nn.Linear(ffn_factor * d, d)
        self.drop = nn.Dropout(dropout)
        self.att_drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool = False
    ) -> torch.Tensor:
        """(B, L, d) -> (B, L, d), or (B, 1, d) for the last position only (scoring)."""
        b, length, _ = x.shape
        d, h = self.d, self.num_heads
        y = self.ln1(x)
        k = self.k(y).view(b, length, h, d // h).transpose(1, 2)
        v = self.v(y).view(b, length, h, d // h).transpose(1, 2)
        if last_only:
            y, allowed, x = y[:, -1:], allowed[:, :, -1:], x[:, -1:]
        q = self.q(y).view(b, y.shape[1], h, d // h).transpose(1, 2)
        att = (q @ k.transpose(-1, -2)) * (d // h) ** -0.5
        att = att.masked_fill(~allowed, float("-inf")).softmax(-1)
        o = (self.att_drop(att) @ v).transpose(1, 2).reshape(b, q.shape[2], d)
        x = x + self.drop(self.proj(o))
        return x + self.drop(self.ff2(self.drop(F.gelu(self.ff1(self.ln2(x))))))


class SequenceNet(nn.Module):
    """Item + position embeddings and transformer blocks; `forward` is the training loss.

    Scores are dot products of the output with the same item table (tied embeddings).

    Args:
        n_items: real items.
        embedding_size: model width d.
        num_blocks, num_heads, ffn_factor, dropout: the blocks (see `TransformerBlock`).
        max_len: positions learned (older positions share the last one).
        causal: SASRec (True) or BERT4Rec (False) attention.
        item_repr, text_adaptor, text, text_dim: the item encoder (see `ItemEncoder`).
        loss: "full_softmax", "sampled_softmax" or "bce".
        adv_eps, adv_reg: adversarial training of the ID table (0: off).
    """

    def __init__(
        self,
        n_items: int,
        embedding_size: int,
        *,
        num_blocks: int = 2,
        num_heads: int = 1,
        ffn_factor: int = 1,
        max_len: int = 50,
        dropout: float = 0.2,
        causal: bool = True,
        item_repr: str = "id",
        text_adaptor: str = "linear",
        text: np.ndarray | None = None,
        text_dim: int | None = None,
        loss: str = "full_softmax",
        adv_eps: float = 0.0,
        adv_reg: float = 1.0,
    ) -> None:
        super().__init__()
        d = embedding_size
        if d % num_heads:
            raise ConfigError(
                f"num_heads: {num_heads} does not divide embedding_size {d}; choose a divisor"
            )
        self.d, self.max_len, self.causal = d, max_len, causal
        self.loss_kind, self.adv_eps, self.adv_reg = loss, adv_eps, adv_reg
        self.items = ItemEncoder(
            n_items, d, item_repr=item_repr, text_adaptor=text_adaptor, text=text, text_dim=text_dim
        )
        self.pos = nn.Embedding(max_len, d)
        nn.init.normal_(self.pos.weight, std=d**-0.5)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            [TransformerBlock(d, num_heads, ffn_factor, dropout) for _ in range(num_blocks)]
        )
        self.ln = nn.LayerNorm(d)

    def hidden(self, seq: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, L) left-padded token ids -> (B, L, d) (or (B, 1, d): the last position only)."""
        pos = end_positions(seq.shape[1], self.max_len, seq.device)
        x = self.items(seq) * math.sqrt(self.d) + self.pos(pos)[None]
        x = self.drop(x)
        allowed = attention_mask(seq, self.causal)
        for j, blk in enumerate(self.blocks):
            x = blk(x, allowed, last_only and j == len(self.blocks) - 1)
        return self.ln(x)

    def last_hidden(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, d): the output at the latest position, which scores the next item."""
        return self.hidden(seq, last_only=True)[:, -1]

    def forward(
        self,
        seq: torch.Tensor,
        target: torch.Tensor,
        negatives: torch.Tensor,
        norm: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Training loss: sum over this batch's targets / `norm` (global target count / world).

        With `weights` (shaped like `target`), each target's loss is multiplied by its weight and
        `norm` is the global weight sum / world (purchase-oriented training, `models.imbalance`).
        """
        loss = self._loss(seq, target, negatives, norm, weights)
        if self.adv_eps > 0.0 and self.adv_reg > 0.0 and self.training and self.items.use_id:
            # APR: the fast-gradient perturbation of the ID table, held constant (no gradient
            # through it), row-wise normalised so each touched item moves by adv_eps
            w = self.items.id_emb.weight
            (g,) = torch.autograd.grad(loss, [w], retain_graph=True)
            self.items.delta = (
                self.adv_eps * g.detach() / g.detach().norm(dim=1, keepdim=True).clamp(min=1e-12)
            )
            try:
                loss = loss + self.adv_reg * self._loss(seq, target, negatives, norm, weights)
            finally:
                self.items.delta = None
        return loss

    def _loss(
        self,
        seq: torch.Tensor,
        target: torch.Tensor,
        negatives: torch.Tensor,
        norm: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        hid = self.hidden(seq)
        sel = target != PAD
        hsel = hid[sel]
        tgt = target[sel]
        if self.loss_kind == "full_softmax":
            logits = hsel @ self.items.table().T
            if weights is None:
                loss = F.cross_entropy(logits, tgt - 1, reduction="sum")
            else:
                per = F.cross_entropy(logits, tgt - 1, reduction="none")
        elif self.loss_kind == "sampled_softmax":
            pos_logit = (hsel * self.items(tgt)).sum(-1, keepdim=True)
            neg_logit = hsel @ self.items(negatives).T
            neg_logit = neg_logit.masked_fill(negatives[None, :] == tgt[:, None], float("-inf"))
            logits = torch.cat([pos_logit, neg_logit], dim=1)
            per = torch.logsumexp(logits, dim=1) - logits[:, 0]
            loss = per.sum()
        else:  # bce: negatives holds one negative per target
            pos_logit = (hsel * self.items(tgt)).sum(-1)
            neg_logit = (hsel * self.items(negatives)).sum(-1)
            per = -(F.logsigmoid(pos_logit) + F.logsigmoid(-neg_logit))
            loss = per.sum()
        if weights is not None:  # per-target weights (targets in the same order as `per`)
            loss = (per * weights[sel].to(per.dtype)).sum()
        return loss / norm


class PerUserNextItemLoss(nn.Module):
    """One next-item BCE loss per user from a causal `SequenceNet`'s own submodules (DP-SASRec).

    Opacus needs per-example gradients, so the modules are called batch-first and each once per
    forward: input, target and negative tokens go through the ID embedding in one call, and the
    position embedding gets a (batch, length) index (contiguous: Opacus' ghost norms view() it).
    The parameters are the network's own: training this module trains the network.
    """

    def __init__(self, net: SequenceNet) -> None:
        super().__init__()
        self.max_len, self.d = net.max_len, net.d
        self.emb = net.items.id_emb
        self.pos = net.pos
        self.blocks = net.blocks
        self.ln = net.ln
        self.drop = net.drop

    def forward(self, seq: torch.Tensor, target: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """(B, L) inputs, targets (0: none) and one negative per target -> (B,) mean losses."""
        b, length = seq.shape
        tok = self.emb(torch.cat([seq, target, neg], dim=1))  # (B, 3L, d): one call
        x_tok, t_emb, n_emb = tok[:, :length], tok[:, length : 2 * length], tok[:, 2 * length :]
        pos_idx = end_positions(length, self.max_len, seq.device)
        x = x_tok * math.sqrt(self.d) + self.pos(pos_idx.unsqueeze(0).repeat(b, 1))
        x = self.drop(x)
        allowed = attention_mask(seq, causal=True)
        for blk in self.blocks:
            x = blk(x, allowed)
        h = self.ln(x)
        pos_logit = (h * t_emb).sum(-1)
        neg_logit = (h * n_emb).sum(-1)
        per_pos = -(F.logsigmoid(pos_logit) + F.logsigmoid(-neg_logit))
        mask = (target != PAD).to(per_pos.dtype)
        return (per_pos * mask).sum(1) / mask.sum(1).clamp(min=1.0)
