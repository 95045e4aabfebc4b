"""Class imbalance: purchase-oriented sequence-model training, event weights of the CF models.

The toy log (`imbalance_fixtures`): after trigger x most people view v(x), the buyers buy p(x).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from privrec.core.errors import ConfigError
from privrec.core.types import EVENT_CODE, UserHistory
from privrec.data.dataset import InteractionDataset
from privrec.data.vocab import Vocabulary
from privrec.models.als import ALS
from privrec.models.bert4rec import BERT4Rec
from privrec.models.bpr import BPR
from privrec.models.ease import EASE
from privrec.models.imbalance import n_resampled
from privrec.models.itemknn import ItemKNN
from privrec.models.nn.tokens import PAD
from privrec.models.sasrec import SASRec
from privrec.models.sequential_data import type_sequences

from .imbalance_fixtures import N_TRIGGERS, bought, toy_dataset, trigger, viewed

pytest.importorskip("torch")

FAST: dict[str, Any] = {
    "embedding_size": 16,
    "num_blocks": 1,
    "epochs": 5,
    "batch_size": 32,
    "learning_rate": 0.01,
    "dropout": 0.1,
    "num_threads": 1,
}
TRAIN: dict[str, Any] = {**FAST, "epochs": 30, "dropout": 0.0}

# Scores of the history [1, 5] after training with FAST (5 epochs) on `toy_dataset()`, computed by
# the code before purchase-oriented training existed (commit f745b45): the default config must
# still give them.
BEFORE = {
    ("sasrec", "full_softmax"): [
        -1.22157, 0.77332, -2.36579, -0.41285, 0.41926, 5.22472,
        0.21511, -0.64268, -0.3226, 3.16691, -0.57529, -0.91667,
    ],
    ("bert4rec", "sampled_softmax"): [
        -1.28149, 0.42238, -1.34816, -1.80793, 0.30698, 2.7676,
        0.54378, -2.7224, 0.61652, 2.04854, -0.04265, -0.90707,
    ],
    ("sasrec", "bce"): [
        -1.86123, -0.69642, -2.63899, -1.28926, 0.576, 3.24178,
        -1.09801, -1.01287, 0.34296, 1.11248, -1.92471, -0.94678,
    ],
}  # fmt: skip
MODELS = {"sasrec": SASRec, "bert4rec": BERT4Rec}


@pytest.fixture(scope="module")
def toy() -> InteractionDataset:
    return toy_dataset()


def purchase_margin(model: SASRec | BERT4Rec) -> float:
    """Mean over triggers of score(bought) - score(viewed) after the history [trigger]."""
    s = model.score_sequences([np.array([trigger(x)]) for x in range(N_TRIGGERS)])
    return float(np.mean([s[x, bought(x)] - s[x, viewed(x)] for x in range(N_TRIGGERS)]))


# ---- default: identical to before ----
@pytest.mark.parametrize(("name", "loss"), sorted(BEFORE))
def test_default_config_trains_exactly_as_before(
    toy: InteractionDataset, name: str, loss: str
) -> None:
    m = MODELS[name](loss=loss, n_negatives=5, **FAST).fit(toy)
    got = m.score_sequences([np.array([1, 5])])[0]
    np.testing.assert_allclose(got, BEFORE[(name, loss)], atol=2e-5)


def test_unit_weights_match_the_unweighted_loss(toy: InteractionDataset) -> None:
    plain = SASRec(**FAST).fit(toy).score_sequences([np.array([1, 5])])
    ones = SASRec(**FAST, target_weights={"view": 1.0, "purchase": 1.0}).fit(toy)
    np.testing.assert_allclose(ones.score_sequences([np.array([1, 5])]), plain, atol=1e-4)


# ---- the weighted loss and resampling move purchases up ----
@pytest.mark.parametrize("loss", ["full_softmax", "sampled_softmax", "bce"])
def test_purchase_weights_rank_the_bought_item_first(toy: InteractionDataset, loss: str) -> None:
    params = {**TRAIN, "loss": loss, "n_negatives": 6}
    plain = SASRec(**params).fit(toy)
    weighted = SASRec(**params, target_weights={"purchase": 10.0}).fit(toy)
    # views outnumber purchases 4:1, so the plain model prefers the viewed follow-up ...
    assert purchase_margin(plain) < 0
    # ... and the purchase-weighted one (10 x 1 against 4 x 1) the bought one
    assert purchase_margin(weighted) > 0


def test_resampling_ranks_the_bought_item_first(toy: InteractionDataset) -> None:
    plain = SASRec(**TRAIN).fit(toy)
    resampled = SASRec(**TRAIN, resample_ratio=0.7).fit(toy)
    assert purchase_margin(plain) < 0 < purchase_margin(resampled)


def test_bert4rec_purchase_weights_move_the_bought_item_up(toy: InteractionDataset) -> None:
    params = {**TRAIN, "epochs": 40, "mask_prob": 0.5}
    plain = BERT4Rec(**params).fit(toy)
    weighted = BERT4Rec(**params, target_weights={"purchase": 10.0}).fit(toy)
    assert purchase_margin(weighted) > purchase_margin(plain) + 1.0


@pytest.mark.parametrize("name", ["sasrec", "bert4rec"])
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.9])
def test_resampling_reaches_the_ratio(toy: InteractionDataset, name: str, ratio: float) -> None:
    m = MODELS[name](**FAST, resample_ratio=ratio, target_weights={"purchase": 3.0})
    seqs = toy.sequences()
    m._fit_types = m._checked_types(seqs, type_sequences(toy))
    m.n_items = toy.n_items
    gen = np.random.default_rng(0)
    batches = list(m._epoch_batches([np.asarray(s, np.int64) for s in seqs], toy.n_items, gen))
    tt = np.concatenate([b.target_types.ravel() for b in batches])  # type: ignore[union-attr]
    n_targets = int((tt != PAD).sum())
    n_purchase = int((tt == EVENT_CODE["purchase"] + 1).sum())
    # the smallest number of extra purchase targets that reaches the ratio
    assert ratio <= n_purchase / n_targets < ratio + 1.0 / n_targets
    # every extra example ends at a real purchase of the log, with its own item as the target
    bought_items = {bought(x) + 1 for x in range(N_TRIGGERS)}
    for b in batches:
        t = b.target[b.target_types == EVENT_CODE["purchase"] + 1]  # type: ignore[operator]
        assert set(t.tolist()) <= bought_items
        # the weights follow the target types: purchase 3, view 1, padding 0
        w = b.weights
        assert w is not None
        assert np.all(w[b.target_types == EVENT_CODE["purchase"] + 1] == 3.0)
        assert np.all(w[b.target_types == EVENT_CODE["view"] + 1] == 1.0)
        assert np.all(w[b.target == PAD] == 0.0)


def test_n_resampled_is_the_smallest_count() -> None:
    assert n_resampled(100, 2, 0.5) == 96  # (2 + 96) / (100 + 96) = 0.5
    assert n_resampled(100, 60, 0.5) == 0  # already above the ratio
    for t, p, r in [(97, 3, 0.2), (1000, 21, 0.33), (10, 0, 0.9)]:
        m = n_resampled(t, p, r)
        assert (p + m) / (t + m) >= r > (p + m - 1) / (t + m - 1)


def test_resampling_is_seeded(toy: InteractionDataset) -> None:
    a = SASRec(**FAST, resample_ratio=0.5).fit(toy).score_sequences([np.array([0])])
    b = SASRec(**FAST, resample_ratio=0.5).fit(toy).score_sequences([np.array([0])])
    np.testing.assert_array_equal(a, b)


# ---- bad values are refused, naming the field ----
@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"target_weights": {"buy": 2.0}}, "target_weights"),
        ({"target_weights": {"purchase": -1.0}}, "target_weights"),
        ({"target_weights": {"purchase": float("nan")}}, "target_weights"),
        ({"target_weights": {"view": 0.0}}, "target_weights"),
        ({"resample_ratio": 1.0}, "resample_ratio"),
        ({"resample_ratio": 0.0}, "resample_ratio"),
        ({"resample_type": "buy"}, "resample_type"),
    ],
)
def test_bad_sequence_settings_are_refused(params: dict[str, Any], field: str) -> None:
    for cls in (SASRec, BERT4Rec):
        with pytest.raises(ConfigError, match=field):
            cls(**params)


def test_dp_sasrec_refuses_purchase_oriented_training() -> None:
    from privrec.models.dp.sasrec import DPSASRec

    with pytest.raises(ConfigError, match="target_weights"):
        DPSASRec(loss="bce", target_weights={"purchase": 5.0})


def test_sequences_without_types_are_refused() -> None:
    m = SASRec(**FAST, target_weights={"purchase": 5.0})
    with pytest.raises(ConfigError, match="target_weights: needs each training event's type"):
        m.fit_sequences([np.array([0, 1, 2])], 3)
    with pytest.raises(ConfigError, match="align"):
        m.fit_sequences([np.array([0, 1, 2])], 3, event_types=[np.array([0, 4])])


# ---- CF models: event-type weights on the interaction matrix ----
def small_log() -> InteractionDataset:
    rows = [
        ("a", "i0", "view", 1.0),
        ("a", "i1", "cart", 2.0),
        ("a", "i2", "purchase", 3.0),
        ("a", "i2", "view", 4.0),
        ("b", "i0", "favorite", 5.0),
        ("b", "i1", "view", 6.0),
    ]
    ev = pd.DataFrame(rows, columns=["user", "item", "type", "ts"])
    return InteractionDataset.from_events(ev, items=Vocabulary(["i0", "i1", "i2"]))


CF = [ItemKNN, EASE, ALS, BPR]
WEIGHTS = {"view": 1.0, "cart": 2.0, "favorite": 2.0, "purchase": 6.0}


@pytest.mark.parametrize("cls", CF)
def test_cf_event_weights_set_the_matrix(cls: type) -> None:
    ds = small_log()
    x = cls(binary=False, event_weights=WEIGHTS).input_matrix(ds).toarray()
    # strongest event per (user, item): a's i2 is a purchase (6), not its later view (1)
    np.testing.assert_array_equal(x, [[1.0, 2.0, 6.0], [2.0, 1.0, 0.0]])
    summed = cls(binary=False, event_weights=WEIGHTS, aggregate="sum").input_matrix(ds)
    np.testing.assert_array_equal(summed.toarray(), [[1.0, 2.0, 7.0], [2.0, 1.0, 0.0]])
    # the default stays the 0/1 matrix
    np.testing.assert_array_equal(cls().input_matrix(ds).toarray(), [[1, 1, 1], [1, 1, 0]])


@pytest.mark.parametrize("cls", CF)
def test_cf_serving_histories_use_the_models_weights(cls: type) -> None:
    ds = small_log()
    m = (
        cls(binary=False, event_weights=WEIGHTS, epochs=2, embedding_size=4).fit(ds)
        if cls
        in (
            ALS,
            BPR,
        )
        else cls(binary=False, event_weights=WEIGHTS).fit(ds)
    )
    # the service sends its own (settings) weights; the model reads the types with its own table
    h = UserHistory(
        items=np.array([0, 2]),
        weights=np.array([1.0, 5.0], np.float32),
        event_types=np.array([EVENT_CODE["view"], EVENT_CODE["purchase"]], np.int8),
    )
    np.testing.assert_array_equal(m.history_matrix([h]).toarray(), [[1.0, 0.0, 6.0]])


def test_cf_purchase_weight_lifts_what_goes_with_a_purchase() -> None:
    # (item-kNN: EASE's regression undoes a column's scale, so there the weights only matter
    # where one item's events mix types)
    # a0 and a1 are always viewed together; b1 goes with the bought b0 less surely
    rows = []
    for u in range(10):
        rows += [(f"a{u}", "a0", "view", 1.0), (f"a{u}", "a1", "view", 2.0)]
        rows.append((f"b{u}", "b0", "purchase", 1.0))
        if u < 8:
            rows.append((f"b{u}", "b1", "view", 2.0))
    for u in range(4):
        rows.append((f"c{u}", "b1", "view", 1.0))
    ev = pd.DataFrame(rows, columns=["user", "item", "type", "ts"])
    ds = InteractionDataset.from_events(ev, items=Vocabulary(["a0", "a1", "b0", "b1"]))
    # a shopper who viewed a0 and bought b0
    h = UserHistory(
        items=np.array([0, 2]),
        event_types=np.array([EVENT_CODE["view"], EVENT_CODE["purchase"]], np.int8),
    )
    plain = ItemKNN().fit(ds).score(h)
    weights = {"view": 1.0, "purchase": 5.0}
    weighted = ItemKNN(binary=False, event_weights=weights).fit(ds).score(h)
    assert plain[1] > plain[3]  # unweighted: the surer view-view pair wins
    assert weighted[3] > weighted[1]  # the purchase counts 5 views: what goes with it wins


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"binary": False, "event_weights": {"buy": 1.0}}, "event_weights: unknown event type"),
        ({"binary": False, "event_weights": {"view": -1.0}}, "event_weights: the weight of"),
        ({"binary": False, "event_weights": {"view": 0.0}}, "event_weights: every weight is 0"),
        ({"event_weights": {"view": 1.0}}, "event_weights: has no effect with binary=true"),
    ],
)
@pytest.mark.parametrize("cls", CF)
def test_bad_cf_event_weights_are_refused(cls: type, params: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        cls(**params)
