"""BPR (asymmetric, FISM-style user vectors): training, fold-in and the extra-loss hook."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from privrec.core.types import UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.bpr import BPR

torch = pytest.importorskip("torch")

FAST = {"embedding_size": 8, "epochs": 15, "batch_size": 32, "learning_rate": 0.02}


@pytest.fixture(scope="module")
def model(two_groups: InteractionDataset) -> BPR:
    return BPR(**FAST).fit(two_groups, rng=1)


def test_loss_goes_down(model: BPR) -> None:
    assert len(model.train_losses) == FAST["epochs"]
    assert model.train_losses[-1] < 0.6 * model.train_losses[0]


def test_user_vector_is_the_normalised_history_sum(model: BPR) -> None:
    h = UserHistory.of([1, 4, 7, 4])  # a repeated item counts once (binary)
    u = model.context[[1, 4, 7]].sum(0) / np.sqrt(3)
    np.testing.assert_allclose(model.score(h), model.target @ u + model.bias, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.score(UserHistory.of([])), model.bias)


def test_weighted_histories(two_groups: InteractionDataset) -> None:
    m = BPR(**{**FAST, "epochs": 2}, binary=False, history_norm=1.0).fit(two_groups)
    h = UserHistory.of([1, 4], weights=[5.0, 1.0])
    u = (5 * m.context[1] + m.context[4]) / 6
    np.testing.assert_allclose(m.score(h), m.target @ u + m.bias, rtol=1e-5, atol=1e-6)


def test_weighted_contributions_add_up_and_explain(two_groups: InteractionDataset) -> None:
    """Each entry's share is |h|^-a h_j q_j . p_i; the strongest event of a repeated item carries
    it, and explain names the largest share."""
    m = BPR(**{**FAST, "epochs": 2}, binary=False, history_norm=0.5).fit(two_groups)
    h = UserHistory.of([1, 4, 1], weights=[2.0, 1.0, 5.0])  # item 1's weight: its stronger event
    items = np.arange(m.n_items)
    c = m.contributions(h, items)
    scale = 6.0**-0.5
    expected = np.stack(
        [np.zeros(m.n_items), scale * m.target @ m.context[4], scale * 5 * m.target @ m.context[1]],
        axis=1,
    )
    np.testing.assert_allclose(c, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(c.sum(axis=1), m.score(h) - m.bias, rtol=1e-4, atol=1e-6)
    item = int(np.argmax(c[:, 2]))
    shares = {1: c[item, 0] + c[item, 2], 4: c[item, 1]}
    top = max(shares, key=lambda j: shares[j])
    e = m.explain(h, item)
    assert e.kind == "history" and e.contributors[0][0] == top
    np.testing.assert_allclose(e.contributors[0][1], shares[top])


def test_a_different_seed_gives_a_different_model(two_groups: InteractionDataset) -> None:
    a = BPR(**{**FAST, "epochs": 2}).fit(two_groups, rng=1)
    b = BPR(**{**FAST, "epochs": 2}).fit(two_groups, rng=2)
    assert not np.allclose(a.target, b.target)
    c = BPR(**{**FAST, "epochs": 2, "seed": 1}).fit(two_groups)
    np.testing.assert_array_equal(a.target, c.target)
    g = BPR(**{**FAST, "epochs": 2}).fit(two_groups, rng=np.random.default_rng(9))
    h = BPR(**{**FAST, "epochs": 2}).fit(two_groups, rng=np.random.default_rng(9))
    np.testing.assert_array_equal(g.target, h.target)


def test_training_restores_torch_threads(two_groups: InteractionDataset) -> None:
    before = torch.get_num_threads()
    BPR(**{**FAST, "epochs": 1}, num_threads=1).fit(two_groups)
    assert torch.get_num_threads() == before


class _Tracked(BPR):
    """A subclass using the extra-loss hook as APR does: re-score the batch, tables perturbed."""

    name = "bpr-tracked-test"  # not registered: a test double

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def _extra_loss(self, params: dict, batch: Any, bpr_loss: Any) -> Any:
        self.calls += 1
        grads = torch.autograd.grad(bpr_loss, list(params.values()), retain_graph=True)
        perturbed = {
            k: v + 0.1 * torch.nn.functional.normalize(g.detach(), dim=-1)
            for (k, v), g in zip(params.items(), grads, strict=True)
        }
        x_pos, x_neg, _ = self.pair_scores(perturbed, batch)
        return -torch.nn.functional.logsigmoid(x_pos - x_neg).mean()


def test_the_extra_loss_hook_changes_training(two_groups: InteractionDataset) -> None:
    plain = BPR(**{**FAST, "epochs": 2}).fit(two_groups, rng=4)
    tracked = _Tracked(**{**FAST, "epochs": 2}).fit(two_groups, rng=4)
    assert tracked.calls > 0
    assert not np.allclose(plain.target, tracked.target)
