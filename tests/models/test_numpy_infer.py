"""The NumPy forward of `SequenceNet.last_hidden` equals PyTorch's (serving's fast path)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from privrec.models.nn.numpy_infer import NumpyLastHidden  # noqa: E402
from privrec.models.nn.sequence import SequenceNet  # noqa: E402


def _rows(rng: np.random.Generator, n_items: int, b: int, length: int) -> np.ndarray:
    seq = rng.integers(1, n_items + 1, size=(b, length))
    for r in range(b):  # left padding of every amount, one row without any, one of 1 item
        seq[r, : rng.integers(0, length)] = 0
    seq[0, :] = rng.integers(1, n_items + 1, size=length)
    seq[-1, :-1] = 0
    return seq


@pytest.mark.parametrize(
    ("blocks", "heads", "causal", "ffn", "length", "max_len"),
    [(1, 1, True, 1, 12, 50), (2, 2, True, 2, 9, 50), (2, 4, False, 1, 20, 8)],
)
def test_numpy_last_hidden_equals_torch(
    blocks: int, heads: int, causal: bool, ffn: int, length: int, max_len: int
) -> None:
    torch.manual_seed(0)
    net = SequenceNet(
        40,
        16,
        num_blocks=blocks,
        num_heads=heads,
        ffn_factor=ffn,
        max_len=max_len,
        dropout=0.3,
        causal=causal,
    )
    with torch.no_grad():  # trained-looking weights: biases and norms away from their init
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    net.eval()
    seq = _rows(np.random.default_rng(1), 40, 7, length)
    fast = NumpyLastHidden.for_net(net)
    assert fast is not None
    with torch.inference_mode():
        want = net.last_hidden(torch.from_numpy(seq)).numpy()
    got = fast(seq)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=2e-5)


def test_a_text_item_encoder_is_left_to_torch() -> None:
    text = np.random.default_rng(0).standard_normal((30, 8)).astype(np.float32)
    net = SequenceNet(30, 16, item_repr="text", text=text)
    assert NumpyLastHidden.for_net(net) is None
    assert NumpyLastHidden.for_net(SequenceNet(30, 16, item_repr="id+text", text=text)) is None
