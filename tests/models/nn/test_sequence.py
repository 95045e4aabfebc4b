"""The transformer networks on their own: shapes, masks, losses, parameter names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from privrec.core.errors import ConfigError
from privrec.models.nn.sequence import (
    PAD,
    ItemEncoder,
    PerUserNextItemLoss,
    SequenceNet,
    TransformerBlock,
    attention_mask,
    end_positions,
)

N_ITEMS, D = 10, 8


def net(causal: bool = True, **kw: object) -> SequenceNet:
    torch.manual_seed(0)
    params = {"num_blocks": 2, "max_len": 6, "dropout": 0.0, "causal": causal, **kw}
    return SequenceNet(N_ITEMS, D, **params).eval()  # type: ignore[arg-type]


def test_attention_mask_is_causal_and_never_attends_to_padding() -> None:
    seq = torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4]])
    causal = attention_mask(seq, causal=True)[:, 0]
    assert causal.shape == (2, 4, 4)
    # a real query sees exactly the real keys at or before it
    want = torch.tensor([[0, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal[0, 2:], want)
    assert torch.equal(causal[1], torch.ones(4, 4, dtype=torch.bool).tril())
    both = attention_mask(seq, causal=False)[:, 0]
    assert torch.equal(both[0, 2:], torch.tensor([[0, 0, 1, 1]] * 2, dtype=torch.bool))
    # padding queries see themselves only (their rows stay finite)
    assert torch.equal(causal[0, 0], torch.tensor([1, 0, 0, 0], dtype=torch.bool))


def test_end_positions_count_from_the_end() -> None:
    assert end_positions(4, 10, torch.device("cpu")).tolist() == [3, 2, 1, 0]
    assert end_positions(5, 3, torch.device("cpu")).tolist() == [2, 2, 2, 1, 0]


@pytest.mark.parametrize("repr_", ["id", "text", "id+text"])
def test_item_encoder_shapes_and_padding(repr_: str) -> None:
    text = np.random.default_rng(0).normal(size=(N_ITEMS, 5)).astype(np.float32)
    enc = ItemEncoder(N_ITEMS, D, item_repr=repr_, text=text if "text" in repr_ else None)
    ids = torch.tensor([[0, 1, N_ITEMS, N_ITEMS + 1]])
    out = enc(ids)
    assert out.shape == (1, 4, D)
    assert torch.count_nonzero(out[0, 0]) == 0  # padding is the zero vector
    assert enc.table().shape == (N_ITEMS, D)
    with pytest.raises(ConfigError):
        ItemEncoder(N_ITEMS, D, item_repr="text")


def test_transformer_block_last_only_is_the_last_row() -> None:
    torch.manual_seed(0)
    blk = TransformerBlock(D, num_heads=2, ffn_factor=2).eval()
    x = torch.randn(3, 5, D)
    seq = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5], [0, 0, 0, 6, 7]])
    allowed = attention_mask(seq, causal=True)
    full = blk(x, allowed)
    assert full.shape == (3, 5, D)
    torch.testing.assert_close(blk(x, allowed, last_only=True)[:, 0], full[:, -1])
    with pytest.raises(ConfigError, match="num_heads"):
        TransformerBlock(D, num_heads=3)


def test_causal_net_ignores_the_future_and_the_bidirectional_one_does_not() -> None:
    a = torch.tensor([[1, 2, 3, 4, 5]])
    b = torch.tensor([[1, 2, 3, 9, 9]])
    with torch.no_grad():
        ha, hb = net(True).hidden(a), net(True).hidden(b)
        torch.testing.assert_close(ha[:, :3], hb[:, :3])
        ba, bb = net(False).hidden(a), net(False).hidden(b)
    assert not torch.allclose(ba[:, :3], bb[:, :3])


def test_scores_do_not_depend_on_padding() -> None:
    m = net(True)
    with torch.no_grad():
        short = m.last_hidden(torch.tensor([[2, 3, 4]]))
        padded = m.last_hidden(torch.tensor([[PAD, PAD, 2, 3, 4]]))
    assert short.shape == (1, D)
    torch.testing.assert_close(short, padded)


@pytest.mark.parametrize("loss", ["full_softmax", "sampled_softmax", "bce"])
def test_training_loss_is_a_finite_scalar_with_gradients(loss: str) -> None:
    m = net(True, loss=loss, adv_eps=0.1).train()
    seq = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    tgt = torch.tensor([[0, 2, 3, 4], [5, 6, 7, 8]])
    n_targets = int((tgt != PAD).sum())
    neg = torch.tensor([9, 10]) if loss == "sampled_softmax" else torch.arange(1, n_targets + 1)
    out = m(seq, tgt, neg, torch.tensor(float(n_targets)))
    assert out.dim() == 0 and torch.isfinite(out)
    out.backward()
    assert m.items.id_emb.weight.grad is not None
    assert m.items.delta is None  # the adversarial perturbation is never left behind


def test_parameter_names_are_those_of_saved_artifacts() -> None:
    keys = set(net(True, num_blocks=1).state_dict())
    assert {"items.id_emb.weight", "pos.weight", "ln.weight", "ln.bias"} <= keys
    block = {"ln1", "q", "v", "proj", "ln2", "ff1", "ff2"}
    assert {f"blocks.0.{n}.weight" for n in block} | {"blocks.0.k.weight"} <= keys
    assert "blocks.0.k.bias" not in keys  # no key bias (see TransformerBlock)
    text = np.zeros((N_ITEMS, 4), np.float32)
    tkeys = set(net(True, item_repr="id+text", text=text).state_dict())
    assert {"items.text", "items.adaptor.weight", "items.mask_emb"} <= tkeys


def test_per_user_loss_shares_the_net_and_returns_one_loss_per_user() -> None:
    m = net(True)
    per_user = PerUserNextItemLoss(m)
    assert per_user.emb is m.items.id_emb and per_user.blocks is m.blocks
    seq = torch.tensor([[0, 1, 2], [3, 4, 5], [0, 0, 0]])
    tgt = torch.tensor([[0, 2, 3], [4, 5, 6], [0, 0, 0]])
    neg = torch.tensor([[0, 7, 8], [9, 10, 1], [0, 0, 0]])
    losses = per_user(seq, tgt, neg)
    assert losses.shape == (3,)
    assert float(losses[2].detach()) == 0.0  # no target: no loss
    # each user's loss is their own: it does not change with the rest of the batch
    torch.testing.assert_close(per_user(seq[:1], tgt[:1], neg[:1]), losses[:1])
