"""BERT4Rec: masked-item batches, [MASK] at request time, learning, round trip, text items."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from privrec.core.types import UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.models.base import Recommender
from privrec.models.bert4rec import BERT4Rec
from privrec.models.nn.tokens import PAD

from .seq_fixtures import N_CHAIN, chain_dataset, next_item_hit_rate, text_matrix

torch = pytest.importorskip("torch")

FAST: dict[str, Any] = {
    "embedding_size": 32,
    "num_blocks": 1,
    "num_heads": 2,
    "epochs": 40,
    "batch_size": 16,
    "learning_rate": 0.01,
    "dropout": 0.0,
    "mask_prob": 0.3,
    "mask_last_prob": 0.5,
    "num_threads": 1,
}


@pytest.fixture(scope="module")
def chain() -> InteractionDataset:
    return chain_dataset()


@pytest.fixture(scope="module")
def model(chain: InteractionDataset) -> BERT4Rec:
    return BERT4Rec(**FAST).fit(chain, rng=3)


def test_learns_that_i_is_followed_by_i_plus_1(model: BERT4Rec) -> None:
    assert next_item_hit_rate(model) >= 0.85


def test_sampled_softmax_learns_too(chain: InteractionDataset) -> None:
    m = BERT4Rec(**{**FAST, "embedding_size": 16}, loss="sampled_softmax", n_negatives=16).fit(
        chain, rng=3
    )
    assert next_item_hit_rate(m) >= 0.6  # chance: 1/22


def test_training_batches_mask_items_and_predict_them(
    model: BERT4Rec, chain: InteractionDataset
) -> None:
    gen = np.random.default_rng(0)
    mask_id = chain.n_items + 1
    seqs = chain.sequences()
    n_rows = 0
    for b in model._make_batches(seqs, chain.n_items, gen):
        n_rows += b.seq.shape[0]
        has_target = b.target != PAD
        np.testing.assert_array_equal(
            b.seq == mask_id, has_target
        )  # a target exactly where [MASK] is
        assert has_target.any(axis=1).all()  # every window predicts something
        assert (b.target[has_target] >= 1).all() and (b.target[has_target] <= chain.n_items).all()
        # unmasked real tokens are the items themselves, left-padded
        assert ((b.seq == PAD) == ((b.seq == PAD) & (b.target == PAD))).all()
        assert b.negatives.size == 0  # full softmax
    assert n_rows == chain.n_users


def test_inference_appends_mask_after_the_latest_items(model: BERT4Rec) -> None:
    toks = model._inference_tokens(np.arange(100) % N_CHAIN)
    assert len(toks) == model.config.max_len and toks[-1] == model.n_items + 1
    np.testing.assert_array_equal(
        toks[:-1], (np.arange(100) % N_CHAIN)[-(model.config.max_len - 1) :] + 1
    )
    np.testing.assert_array_equal(
        model._inference_tokens(np.array([], np.int64)), [model.n_items + 1]
    )


def test_order_matters(model: BERT4Rec) -> None:
    fwd = model.score(UserHistory.of([3, 4, 5]))
    rev = model.score(UserHistory.of([5, 4, 3]))
    assert not np.allclose(fwd, rev)
    assert int(np.argmax(fwd)) == 6


def test_save_load_reproduces_scores_exactly(model: BERT4Rec, tmp_path: Path) -> None:
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert isinstance(loaded, BERT4Rec) and loaded.config == model.config
    hs = [np.array([1, 2, 3]), np.array([], np.int64), np.arange(70) % N_CHAIN]
    np.testing.assert_array_equal(loaded.score_sequences(hs), model.score_sequences(hs))


def test_unseen_item_is_represented_by_its_text(chain: InteractionDataset, tmp_path: Path) -> None:
    text = text_matrix(dim=32)
    text[N_CHAIN] = text[7]
    m = BERT4Rec(**FAST, item_repr="text").fit(chain, rng=3, item_text_embeddings=text)
    s = m.score(UserHistory.of([5, 6]))
    np.testing.assert_allclose(s[N_CHAIN], s[7], rtol=1e-5, atol=1e-6)
    assert s[N_CHAIN + 1] != s[N_CHAIN] and np.isfinite(s).all()
    m.save(tmp_path / "m")
    np.testing.assert_array_equal(Recommender.load(tmp_path / "m").score(UserHistory.of([5, 6])), s)


def test_same_seed_same_model(chain: InteractionDataset) -> None:
    p = {**FAST, "epochs": 2, "dropout": 0.1}
    a = BERT4Rec(**p).fit(chain, rng=1).score_sequences([np.array([1, 2])])
    b = BERT4Rec(**p).fit(chain, rng=1).score_sequences([np.array([1, 2])])
    np.testing.assert_array_equal(a, b)
