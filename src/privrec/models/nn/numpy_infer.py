"""`SequenceNet.last_hidden` in NumPy, for serving one request at a time on CPU.

Why: a served request runs the network on about ten short rows (the history and the occlusion
variants its explanations need); at that size PyTorch's per-operator dispatch is most of the
cost. The same arithmetic as NumPy calls is measured in `benchmarks/serve_hybrid.py`
(`--part inproc`); outputs agree with PyTorch's to float32 rounding (tested in
tests/models/test_numpy_infer.py). Only the ID item encoder is mirrored; `for_net` returns None
for any other network, which is then run by PyTorch as before.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import erf

from privrec.models.nn.tokens import PAD

__all__ = ["NumpyLastHidden"]


def _layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    c = x - mean
    var = (c * c).mean(-1, keepdims=True)
    return c / np.sqrt(var + eps) * w + b


def _gelu(x: np.ndarray) -> np.ndarray:
    # PyTorch's default (exact) GELU, not the tanh approximation
    return 0.5 * x * (1.0 + erf(x * np.float32(1.0 / math.sqrt(2.0)))).astype(np.float32)


class NumpyLastHidden:
    """The output at the latest position of left-padded token rows, as `last_hidden` gives it in
    evaluation mode (no dropout). Build it with `for_net`."""

    def __init__(self, net: Any) -> None:
        def arr(t: Any) -> np.ndarray:
            return np.ascontiguousarray(t.detach().float().cpu().numpy())

        self.d, self.max_len, self.causal = int(net.d), int(net.max_len), bool(net.causal)
        self.emb = arr(net.items.id_emb.weight)
        self.pos = arr(net.pos.weight)
        self.ln = (arr(net.ln.weight), arr(net.ln.bias), float(net.ln.eps))
        self.blocks: list[dict[str, Any]] = []
        for blk in net.blocks:
            self.blocks.append(
                {
                    "h": int(blk.num_heads),
                    "ln1": (arr(blk.ln1.weight), arr(blk.ln1.bias), float(blk.ln1.eps)),
                    "ln2": (arr(blk.ln2.weight), arr(blk.ln2.bias), float(blk.ln2.eps)),
                    "q": (arr(blk.q.weight).T.copy(), arr(blk.q.bias)),
                    "k": arr(blk.k.weight).T.copy(),
                    "v": (arr(blk.v.weight).T.copy(), arr(blk.v.bias)),
                    "proj": (arr(blk.proj.weight).T.copy(), arr(blk.proj.bias)),
                    "ff1": (arr(blk.ff1.weight).T.copy(), arr(blk.ff1.bias)),
                    "ff2": (arr(blk.ff2.weight).T.copy(), arr(blk.ff2.bias)),
                }
            )

    @classmethod
    def for_net(cls, net: Any) -> NumpyLastHidden | None:
        """The NumPy forward of `net`, or None where it is not mirrored (a text item encoder,
        an adversarial perturbation in place)."""
        items = getattr(net, "items", None)
        if (
            items is None
            or not getattr(items, "use_id", False)
            or getattr(items, "use_text", False)
            or getattr(items, "delta", None) is not None
        ):
            return None
        return cls(net)

    def __call__(self, seq: np.ndarray) -> np.ndarray:
        """(B, L) int token ids, left-padded -> (B, d) float32."""
        seq = np.asarray(seq, dtype=np.int64)
        b, length = seq.shape
        d = self.d
        pos = np.minimum(np.arange(length - 1, -1, -1), self.max_len - 1)
        x = self.emb[seq] * np.float32(math.sqrt(d)) + self.pos[pos][None]
        allowed = np.broadcast_to((seq != PAD)[:, None, None, :], (b, 1, length, length))
        if self.causal:
            allowed = allowed & np.tri(length, dtype=bool)
        allowed = allowed | np.eye(length, dtype=bool)
        for j, blk in enumerate(self.blocks):
            h = blk["h"]
            dh = d // h
            y = _layer_norm(x, *blk["ln1"])
            k = (y @ blk["k"]).reshape(b, length, h, dh).transpose(0, 2, 1, 3)
            v = (y @ blk["v"][0] + blk["v"][1]).reshape(b, length, h, dh).transpose(0, 2, 1, 3)
            mask = allowed
            if j == len(self.blocks) - 1:  # only the latest position is needed after this
                y, mask, x = y[:, -1:], allowed[:, :, -1:], x[:, -1:]
            lq = y.shape[1]
            q = (y @ blk["q"][0] + blk["q"][1]).reshape(b, lq, h, dh).transpose(0, 2, 1, 3)
            att = (q @ k.transpose(0, 1, 3, 2)) * np.float32(dh**-0.5)
            att = np.where(mask, att, np.float32(-np.inf))
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            o = (att @ v).transpose(0, 2, 1, 3).reshape(b, lq, d)
            x = x + (o @ blk["proj"][0] + blk["proj"][1])
            f = _gelu(_layer_norm(x, *blk["ln2"]) @ blk["ff1"][0] + blk["ff1"][1])
            x = x + (f @ blk["ff2"][0] + blk["ff2"][1])
        return np.asarray(_layer_norm(x, *self.ln)[:, -1], dtype=np.float32)
