"""SASRec: learns a sequential pattern, reads order, round-trips exactly, text for unseen items."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from privrec.core.errors import ConfigError
from privrec.core.types import UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.data.splitters import leave_one_out
from privrec.evaluation.protocol import evaluate_loo
from privrec.models.base import Recommender
from privrec.models.nn.runtime import resolve_device
from privrec.models.sasrec import SASRec
from privrec.models.sequential import sequence_scorer
from privrec.models.sequential_data import batch_order, order_matrix, pad_left, windows

from .seq_fixtures import N_CHAIN, chain_dataset, next_item_hit_rate, text_matrix

torch = pytest.importorskip("torch")

FAST: dict[str, Any] = {
    "embedding_size": 16,
    "num_blocks": 1,
    "epochs": 25,
    "batch_size": 16,
    "learning_rate": 0.01,
    "dropout": 0.0,
    "num_threads": 1,
}


@pytest.fixture(scope="module")
def chain() -> InteractionDataset:
    return chain_dataset()


@pytest.fixture(scope="module")
def model(chain: InteractionDataset) -> SASRec:
    return SASRec(**FAST).fit(chain, rng=3)


def test_learns_that_i_is_followed_by_i_plus_1(model: SASRec) -> None:
    assert next_item_hit_rate(model) >= 0.9


@pytest.mark.parametrize("loss", ["sampled_softmax", "bce"])
def test_the_other_losses_learn_too(chain: InteractionDataset, loss: str) -> None:
    m = SASRec(**{**FAST, "epochs": 40}, loss=loss, n_negatives=8).fit(chain, rng=3)
    assert m.train_log[-1]["loss"] < m.train_log[0]["loss"]
    assert next_item_hit_rate(m) >= 0.8


def test_order_matters(model: SASRec) -> None:
    fwd = model.score(UserHistory.of([3, 4, 5]))
    rev = model.score(UserHistory.of([5, 4, 3]))
    assert not np.allclose(fwd, rev)
    assert int(np.argmax(fwd)) == 6
    assert int(np.argmax(rev)) != 6


def test_score_matrix_reads_the_order_from_the_values(model: SASRec) -> None:
    h = UserHistory.of([7, 2, 9])
    np.testing.assert_allclose(
        model.score_matrix(model.history_matrix([h]))[0], model.score(h), rtol=1e-5, atol=1e-6
    )
    # a plain 0/1 row has no order: it is read in item-index order
    import scipy.sparse as sp

    ones = sp.csr_matrix((np.ones(3, np.float32), ([0, 0, 0], [7, 2, 9])), shape=(1, model.n_items))
    np.testing.assert_allclose(
        model.score_matrix(ones)[0], model.score(UserHistory.of([2, 7, 9])), rtol=1e-5, atol=1e-6
    )


def test_order_matrix_keeps_the_last_occurrence() -> None:
    m = order_matrix([np.array([4, 1, 4, 2]), np.array([], np.int64), np.array([0, 9])], n_items=5)
    assert m.shape == (3, 5)
    np.testing.assert_array_equal(m.toarray()[0], [0, 2, 4, 0, 3])
    assert m[1].nnz == 0 and m[2].toarray()[0, 0] == 1  # 9 is out of range: dropped


def test_input_matrix_rows_follow_the_dataset_order(
    model: SASRec, chain: InteractionDataset
) -> None:
    x = model.input_matrix(chain)
    seq = chain.sequences()[0]
    row = x[0].toarray()[0]
    np.testing.assert_array_equal(np.argsort(row[seq]), np.arange(len(seq)))


def test_padding_does_not_change_a_users_scores(model: SASRec) -> None:
    short = np.array([3, 4])
    alone = model.score_sequences([short])[0]
    together = model.score_sequences([short, np.arange(15) % N_CHAIN])[0]
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-6)


def test_empty_and_out_of_range_histories(model: SASRec) -> None:
    s = model.score(UserHistory.of([]))
    assert s.shape == (model.n_items,) and np.isfinite(s).all()
    np.testing.assert_array_equal(
        model.score(UserHistory.of([3, 99, -1, 4])), model.score(UserHistory.of([3, 4]))
    )


def test_save_load_reproduces_scores_exactly(model: SASRec, tmp_path: Path) -> None:
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "state.safetensors",
    ]
    loaded = Recommender.load(tmp_path / "m")
    assert isinstance(loaded, SASRec) and loaded.config == model.config
    hs = [np.array([1, 2, 3]), np.array([19, 0]), np.array([], np.int64), np.arange(30) % N_CHAIN]
    np.testing.assert_array_equal(loaded.score_sequences(hs), model.score_sequences(hs))
    assert loaded.best_epoch == model.best_epoch and loaded.train_log == model.train_log


def test_same_seed_same_model_other_seed_other_model(chain: InteractionDataset) -> None:
    p = {**FAST, "epochs": 2, "dropout": 0.2}
    hs = [np.array([1, 2, 3])]
    a = SASRec(**p).fit(chain, rng=1).score_sequences(hs)
    b = SASRec(**p).fit(chain, rng=1).score_sequences(hs)
    c = SASRec(**p).fit(chain, rng=2).score_sequences(hs)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_fit_leaves_torch_threads_and_global_rng_alone(chain: InteractionDataset) -> None:
    threads = torch.get_num_threads()
    state = torch.random.get_rng_state()
    SASRec(**{**FAST, "epochs": 1, "num_threads": 2}).fit(chain)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.random.get_rng_state(), state)


def test_unseen_item_is_represented_by_its_text(chain: InteractionDataset) -> None:
    text = text_matrix(dim=32)
    text[N_CHAIN] = text[5]  # "new0" reads exactly like item 5; "new1" has its own text
    m = SASRec(**FAST, item_repr="text", text_adaptor="linear").fit(
        chain, rng=3, item_text_embeddings=text
    )
    assert next_item_hit_rate(m) >= 0.8
    for hist in ([3, 4], [10, 11, 12]):
        s = m.score(UserHistory.of(hist))
        np.testing.assert_allclose(s[N_CHAIN], s[5], rtol=1e-5, atol=1e-6)
        assert s[N_CHAIN + 1] != s[N_CHAIN] and np.isfinite(s[N_CHAIN + 1])
    # an unseen item in the history changes the scores: it has a representation of its own
    assert not np.allclose(m.score(UserHistory.of([3, N_CHAIN + 1])), m.score(UserHistory.of([3])))


def test_fused_id_and_text_zeroes_the_id_part_of_unseen_items(
    chain: InteractionDataset, tmp_path: Path
) -> None:
    text = text_matrix(dim=8)
    m = SASRec(**{**FAST, "epochs": 10}, item_repr="id+text", text_adaptor="mlp").fit(
        chain, rng=3, item_text_embeddings=text
    )
    ids = m.net.items.id_emb.weight.detach()
    assert torch.all(ids[N_CHAIN + 1 : N_CHAIN + 3] == 0)  # tokens of new0/new1 (index + 1)
    assert torch.all(ids[1 : N_CHAIN + 1].abs().sum(1) > 0)
    vec = m.net.items(torch.tensor([N_CHAIN + 1, N_CHAIN + 2])).detach()
    assert torch.all(vec.abs().sum(1) > 0) and not torch.allclose(vec[0], vec[1])
    m.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    h = [np.array([1, 2, N_CHAIN])]
    np.testing.assert_array_equal(loaded.score_sequences(h), m.score_sequences(h))


def test_text_embeddings_from_a_config_path(chain: InteractionDataset, tmp_path: Path) -> None:
    text = text_matrix(dim=8)
    np.save(tmp_path / "text.npy", text)
    a = SASRec(
        **{**FAST, "epochs": 2}, item_repr="text", item_text_embeddings=str(tmp_path / "text.npy")
    ).fit(chain, rng=1)
    b = SASRec(**{**FAST, "epochs": 2}, item_repr="text").fit(
        chain, rng=1, item_text_embeddings=text
    )
    np.testing.assert_array_equal(
        a.score_sequences([np.array([1, 2])]), b.score_sequences([np.array([1, 2])])
    )


def test_bad_text_settings_are_refused(chain: InteractionDataset) -> None:
    with pytest.raises(ConfigError, match="item_text_embeddings"):
        SASRec(**FAST, item_repr="text").fit(chain)
    with pytest.raises(ConfigError, match="shape"):
        SASRec(**FAST, item_repr="text").fit(
            chain, item_text_embeddings=np.zeros((3, 4), np.float32)
        )
    with pytest.raises(ConfigError, match="num_heads"):
        SASRec(**{**FAST, "num_heads": 3}).fit(chain)
    with pytest.raises(ConfigError, match="loss"):
        SASRec(loss="hinge")


def test_validation_selects_the_best_epoch(chain: InteractionDataset) -> None:
    sub, valid, _ = leave_one_out(chain)
    m = SASRec(**{**FAST, "epochs": 12, "eval_every": 2, "patience": 10}).fit(
        sub, rng=3, validation=valid
    )
    logged = [e for e in m.train_log if "ndcg@10" in e]
    assert [e["epoch"] for e in logged] == [2, 4, 6, 8, 10, 12]
    best = max(logged, key=lambda e: e["ndcg@10"])
    assert m.best_epoch == best["epoch"]
    res = evaluate_loo(m, sub, valid, scorer=sequence_scorer(m, sub))
    assert res["ndcg@10"] == pytest.approx(best["ndcg@10"], abs=1e-9)
    # without repeats in the histories, the CSR path (order in the values) gives the same figures
    assert evaluate_loo(m, sub, valid)["ndcg@10"] == pytest.approx(res["ndcg@10"], abs=1e-9)


def test_patience_and_time_budget_stop_early(chain: InteractionDataset) -> None:
    sub, valid, _ = leave_one_out(chain)
    m = SASRec(**{**FAST, "epochs": 50, "learning_rate": 1e-6, "patience": 1}).fit(
        sub, validation=valid
    )
    assert len(m.train_log) < 50
    t = SASRec(**{**FAST, "epochs": 50, "time_budget_s": 1e-6}).fit(sub)
    assert len(t.train_log) == 1 and t.best_epoch == 1
    # the epoch where time runs out is validated even off the eval_every schedule
    v = SASRec(**{**FAST, "epochs": 50, "eval_every": 5, "time_budget_s": 1e-6}).fit(
        sub, validation=valid
    )
    assert len(v.train_log) == 1 and "ndcg@10" in v.train_log[0] and v.best_epoch == 1


def test_explain_uses_history_items(model: SASRec) -> None:
    h = UserHistory.of([2, 3, 4])
    item = int(model.recommend(h, k=1)[0][0])
    e = model.explain(h, item)
    assert e.item == item and e.kind == "history"
    assert {c for c, _ in e.contributors} <= {2, 3, 4}
    assert e.contributors[0][0] == 4  # the latest item drives the next one in a chain


def test_helpers() -> None:
    np.testing.assert_array_equal(pad_left([np.array([1, 2]), np.array([3])]), [[1, 2], [0, 3]])
    np.testing.assert_array_equal(pad_left([np.array([1, 2, 3])], 2), [[2, 3]])
    assert [w.tolist() for w in windows(np.arange(7), 3, "chunks")] == [[0], [1, 2, 3], [4, 5, 6]]
    assert [w.tolist() for w in windows(np.arange(7), 4, "chunks", step=3)] == [
        [0, 1, 2, 3],
        [3, 4, 5, 6],
    ]
    assert [w.tolist() for w in windows(np.arange(7), 3, "last")] == [[4, 5, 6]]
    lengths = np.random.default_rng(0).integers(1, 50, size=103)
    batches = batch_order(lengths, 10, 4, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(103))
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_long_histories_train_in_chunks() -> None:
    ds = chain_dataset(n_users=20, seed=4)
    m = SASRec(**{**FAST, "epochs": 3, "max_len": 3, "long_sequences": "chunks"}).fit(ds, rng=1)
    assert np.isfinite(m.score(UserHistory.of(list(range(12))))).all()
