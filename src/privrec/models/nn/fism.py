"""The FISM-style BPR networks: BPR / APR's item tables and losses, DP-BPR's per-user loss module.

A user is not a free embedding but the normalised sum of their history's context vectors,

    u = (sum_j h_j)^-history_norm * sum_j h_j q_j,

and item i scores u . p_i + b_i (see `models.bpr`). BPR and APR keep the tables in a dict of
parameters (`init_tables`) so an adversary can score a batch again with perturbed tables;
DP-BPR needs an `nn.Module` whose forward returns one loss per user (`FISMUserLoss`), which
Opacus can clip per user.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Batch", "FISMUserLoss", "history_user_vectors", "init_tables", "pair_scores"]


@dataclass
class Batch:
    """One BPR training step: triples (user, positive, negative) and the histories of its users.

    Attributes:
        pos, neg: positive and sampled negative item per triple.
        pos_weight: the positive's weight in the user's history (left out of the user's sum).
        triple_user: per triple, its user's row in the hist_* fields.
        hist_items, hist_weights, hist_offsets: the batch users' histories in EmbeddingBag form.
        hist_total: each batch user's total history weight.
    """

    pos: torch.Tensor
    neg: torch.Tensor
    pos_weight: torch.Tensor
    triple_user: torch.Tensor
    hist_items: torch.Tensor
    hist_weights: torch.Tensor
    hist_offsets: torch.Tensor
    hist_total: torch.Tensor


def init_tables(
    n_items: int, embedding_size: int, init_std: float, seed: int
) -> dict[str, torch.Tensor]:
    """The tables P ("target"), Q ("context") and b ("bias") as parameters, seeded by `seed`."""
    tg = torch.Generator().manual_seed(seed)
    return {
        "target": nn.Parameter(torch.randn(n_items, embedding_size, generator=tg) * init_std),
        "context": nn.Parameter(torch.randn(n_items, embedding_size, generator=tg) * init_std),
        "bias": nn.Parameter(torch.zeros(n_items)),
    }


def history_user_vectors(
    params: dict[str, torch.Tensor], batch: Batch, history_norm: float
) -> torch.Tensor:
    """Each triple's user vector from their history minus the positive item (FISM)."""
    q = params["context"]
    summed = F.embedding_bag(
        batch.hist_items,
        q,
        batch.hist_offsets,
        mode="sum",
        per_sample_weights=batch.hist_weights,
    )
    summed = summed.index_select(0, batch.triple_user) - batch.pos_weight[:, None] * q.index_select(
        0, batch.pos
    )
    rest = batch.hist_total.index_select(0, batch.triple_user) - batch.pos_weight
    scale = torch.where(rest > 0, rest.clamp(min=1e-12).pow(-history_norm), torch.zeros_like(rest))
    return summed * scale[:, None]


def pair_scores(
    u: torch.Tensor, params: dict[str, torch.Tensor], batch: Batch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_ui, x_uj, the batch's L2 term) for given user vectors (one per triple).

    index_select throughout: its backward is a fast index_add.
    """
    p, b = params["target"], params["bias"]
    p_pos, p_neg = p.index_select(0, batch.pos), p.index_select(0, batch.neg)
    b_pos, b_neg = b.index_select(0, batch.pos), b.index_select(0, batch.neg)
    x_pos = (u * p_pos).sum(1) + b_pos
    x_neg = (u * p_neg).sum(1) + b_neg
    l2 = (
        p_pos.pow(2).sum(1) + p_neg.pow(2).sum(1) + u.pow(2).sum(1) + b_pos.pow(2) + b_neg.pow(2)
    ).mean()
    return x_pos, x_neg, l2


class FISMUserLoss(nn.Module):
    """DP-BPR's network: one mean BPR loss per user; each table is used once per forward.

    Opacus' per-sample hooks need every module called once per step, so the positive and
    negative items go through the target table and the biases in one call. Row n_items of each
    table is the padding item.

    Args:
        n_items: real items (tables have n_items + 1 rows).
        embedding_size: d.
        init_std: std of the initial embeddings (drawn from a generator seeded by `seed`).
        history_norm: exponent of the history-size normalisation.
        reg: L2 weight per pair.
        seed: seeds the initial tables.
    """

    def __init__(
        self,
        n_items: int,
        embedding_size: int,
        init_std: float,
        history_norm: float,
        reg: float,
        seed: int,
    ) -> None:
        super().__init__()
        d = embedding_size
        self.history_norm, self.reg = history_norm, reg
        g = torch.Generator().manual_seed(seed)
        self.target = nn.Embedding(n_items + 1, d)
        self.context = nn.Embedding(n_items + 1, d)
        self.bias = nn.Embedding(n_items + 1, 1)
        with torch.no_grad():
            self.target.weight.copy_(torch.randn(n_items + 1, d, generator=g) * init_std)
            self.context.weight.copy_(torch.randn(n_items + 1, d, generator=g) * init_std)
            self.bias.weight.zero_()

    def forward(
        self,
        hist: torch.Tensor,
        hist_w: torch.Tensor,
        pos_slot: torch.Tensor,
        neg: torch.Tensor,
        pair_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Per-user losses (B,).

        Args:
            hist: (B, L) history items (padding = n_items).
            hist_w: (B, L) their weights (0 for padding).
            pos_slot: (B, S) positions in `hist` of the positives.
            neg: (B, S) negative items.
            pair_mask: (B, S) 1 for real pairs (a user without history has none).
        """
        q = self.context(hist) * hist_w.unsqueeze(-1)  # (B, L, d)
        total_q = q.sum(1)  # (B, d)
        total_w = hist_w.sum(1)  # (B,)
        q_pos = torch.gather(q, 1, pos_slot.unsqueeze(-1).expand(-1, -1, q.shape[-1]))  # (B, S, d)
        w_pos = torch.gather(hist_w, 1, pos_slot)  # (B, S)
        pos = torch.gather(hist, 1, pos_slot)  # (B, S)
        rest = total_w.unsqueeze(1) - w_pos
        scale = torch.where(
            rest > 0, rest.clamp(min=1e-12).pow(-self.history_norm), torch.zeros_like(rest)
        )
        u = (total_q.unsqueeze(1) - q_pos) * scale.unsqueeze(-1)  # (B, S, d)
        s = pos.shape[1]
        both = torch.cat([pos, neg], dim=1)  # (B, 2S)
        p = self.target(both)
        b = self.bias(both).squeeze(-1)
        x_pos = (u * p[:, :s]).sum(-1) + b[:, :s]
        x_neg = (u * p[:, s:]).sum(-1) + b[:, s:]
        pair = -F.logsigmoid(x_pos - x_neg)
        if self.reg > 0:
            pair = pair + self.reg * (
                p.pow(2).sum(-1)[:, :s] + p.pow(2).sum(-1)[:, s:] + u.pow(2).sum(-1)
            )
        n = pair_mask.sum(1).clamp(min=1.0)
        return (pair * pair_mask).sum(1) / n
