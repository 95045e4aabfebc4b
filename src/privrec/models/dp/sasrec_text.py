"""DP-SASRec's per-user loss on frozen text item vectors (item_repr "text").

The same loss as `PerUserNextItemLoss`, with tokens going through the network's whole item
encoder (frozen text buffer -> trainable linear adaptor) in one call, so Opacus sees each
trainable module once per step. The text matrix is a buffer: it has no gradient and takes no
noise. The encoder's [MASK] vector (BERT4Rec's; a causal model never reads it) is frozen, because
it is a bare parameter on the encoder that Opacus could not give per-user gradients and that
would otherwise take noise for nothing.
"""

from __future__ import annotations

from torch import nn

from privrec.models.nn.sequence import PerUserNextItemLoss, SequenceNet

__all__ = ["PerUserTextLoss"]


class PerUserTextLoss(PerUserNextItemLoss):
    """`PerUserNextItemLoss` whose item vectors are the adapted frozen text vectors."""

    def __init__(self, net: SequenceNet) -> None:
        if not net.items.use_text or net.items.use_id:
            raise ValueError("item_repr: PerUserTextLoss needs a text-only item encoder")
        # PerUserNextItemLoss.__init__ reads the ID table, which a text-only encoder lacks
        nn.Module.__init__(self)
        self.max_len, self.d = net.max_len, net.d
        net.items.mask_emb.requires_grad_(False)  # unused by a causal model (see module doc)
        self.emb = net.items  # type: ignore[assignment]  # same call: tokens -> vectors
        self.pos = net.pos
        self.blocks = net.blocks
        self.ln = net.ln
        self.drop = net.drop
