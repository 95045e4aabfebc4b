"""The FISM networks on their own: seeded tables, user vectors, per-user losses."""

from __future__ import annotations

import numpy as np
import torch

from privrec.models.nn.fism import (
    Batch,
    FISMUserLoss,
    history_user_vectors,
    init_tables,
    pair_scores,
)


def one_user_batch() -> Batch:
    """One user with history {0: 1.0, 2: 2.0}; triples (0 vs 3) and (2 vs 1)."""
    items = torch.tensor([0, 2])
    w = torch.tensor([1.0, 2.0])
    return Batch(
        pos=items,
        neg=torch.tensor([3, 1]),
        pos_weight=w,
        triple_user=torch.tensor([0, 0]),
        hist_items=items,
        hist_weights=w,
        hist_offsets=torch.tensor([0]),
        hist_total=torch.tensor([3.0]),
    )


def test_init_tables_are_seeded_and_shaped() -> None:
    a, b = init_tables(5, 4, 0.1, seed=3), init_tables(5, 4, 0.1, seed=3)
    assert a["target"].shape == (5, 4) and a["context"].shape == (5, 4) and a["bias"].shape == (5,)
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    assert not torch.equal(init_tables(5, 4, 0.1, seed=4)["target"], a["target"])


def test_user_vector_leaves_the_positive_out() -> None:
    p = init_tables(4, 3, 1.0, seed=0)
    q = p["context"].detach().numpy()
    u = history_user_vectors(p, one_user_batch(), history_norm=0.5).detach().numpy()
    # triple 0 (positive item 0): the rest is item 2 with weight 2
    np.testing.assert_allclose(u[0], 2.0**-0.5 * 2.0 * q[2], rtol=1e-6)
    np.testing.assert_allclose(u[1], 1.0**-0.5 * 1.0 * q[0], rtol=1e-6)
    x_pos, x_neg, l2 = pair_scores(torch.from_numpy(u), p, one_user_batch())
    assert x_pos.shape == x_neg.shape == (2,) and l2.dim() == 0


def test_fism_user_loss_is_one_loss_per_user() -> None:
    torch.manual_seed(0)
    m = FISMUserLoss(n_items=6, embedding_size=4, init_std=0.1, history_norm=0.5, reg=0.01, seed=0)
    pad = 6
    hist = torch.tensor([[0, 2, pad], [1, 3, 4], [pad, pad, pad]])
    hist_w = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    pos_slot = torch.tensor([[0, 1], [2, 0], [0, 0]])
    neg = torch.tensor([[5, 4], [0, 2], [1, 1]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    losses = m(hist, hist_w, pos_slot, neg, mask)
    assert losses.shape == (3,) and float(losses[2].detach()) == 0.0
    torch.testing.assert_close(m(hist[:1], hist_w[:1], pos_slot[:1], neg[:1], mask[:1]), losses[:1])
    assert m.target.weight.shape == (7, 4) and torch.count_nonzero(m.bias.weight) == 0
    same = FISMUserLoss(6, 4, 0.1, 0.5, 0.01, seed=0)
    torch.testing.assert_close(same.target.weight, m.target.weight)
