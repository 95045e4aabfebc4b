"""The contract helpers added for the classic models: input_matrix, history checks, explanations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from privrec.core.errors import ConfigError
from privrec.core.types import EVENT_CODE, UserHistory, strongest, strongest_actions
from privrec.data.dataset import InteractionDataset
from privrec.models.base import history_explanation
from privrec.models.ease import EASE
from privrec.models.popularity import Popularity


def test_input_matrix_follows_the_config(two_groups: InteractionDataset) -> None:
    weighted = Popularity().input_matrix(two_groups)
    binary = EASE().input_matrix(two_groups)
    np.testing.assert_array_equal(weighted.toarray() > 0, binary.toarray() > 0)
    assert set(np.unique(binary.data)) == {1.0}
    assert set(np.unique(weighted.data)) == {1.0, 5.0}  # views and purchases
    custom = Popularity(event_weights={"view": 2.0, "purchase": 3.0}).input_matrix(two_groups)
    assert set(np.unique(custom.data)) == {2.0, 3.0}


def test_histories_must_have_one_column_per_item(two_groups: InteractionDataset) -> None:
    m = EASE(reg=5.0).fit(two_groups)
    with pytest.raises(ValueError, match="item columns"):
        m.score_matrix(sp.csr_matrix((1, 3), dtype=np.float32))


def test_binary_models_ignore_history_weights(two_groups: InteractionDataset) -> None:
    m = EASE(reg=5.0).fit(two_groups)
    np.testing.assert_array_equal(
        m.score(UserHistory.of([1, 2], weights=[5.0, 0.5])), m.score(UserHistory.of([1, 2]))
    )
    # an explicit zero weight is no event at all
    np.testing.assert_array_equal(
        m.score(UserHistory.of([1, 2], weights=[1.0, 0.0])), m.score(UserHistory.of([1]))
    )


def test_history_explanation_orders_and_says_what_the_user_did() -> None:
    h = UserHistory(
        items=np.array([3, 5, 3, 9]),
        event_types=np.array(
            [EVENT_CODE["view"], EVENT_CODE["cart"], EVENT_CODE["purchase"], EVENT_CODE["view"]],
            dtype=np.int8,
        ),
    )
    e = history_explanation(h, 7, np.array([3, 5, 9]), np.array([0.2, 0.5, -0.1]))
    assert e.kind == "history" and e.item == 7
    assert e.contributors == [(5, 0.5), (3, 0.2)]
    assert e.actions == {5: "cart", 3: "purchase"}
    # the wording of what the user did is privrec.explain's, not the model's
    assert "bought" not in e.text and "cart" not in e.text
    none = history_explanation(h, 7, np.array([3]), np.array([0.0]))
    assert none.kind == "model" and none.contributors == [] and none.actions == {}
    plain = history_explanation(UserHistory.of([3]), 7, np.array([3]), np.array([1.0]))
    assert plain.contributors == [(3, 1.0)] and plain.actions == {}
    # per-entry shares of a repeated item add up to the item's share
    per_entry = history_explanation(h, 7, h.items, np.array([0.1, 0.5, 0.3, 0.0]))
    assert per_entry.contributors == [(5, 0.5), (3, 0.4)]


def test_strongest_keeps_the_largest_value_per_key() -> None:
    keys, vals, pos = strongest(np.array([4, 2, 4, 2, 7]), np.array([1.0, 5.0, 3.0, 5.0, 0.5]))
    assert keys.tolist() == [2, 4, 7] and vals.tolist() == [5.0, 3.0, 0.5]
    assert pos.tolist() == [3, 2, 4]  # among equal values the latest entry
    empty = strongest(np.zeros(0, np.int64), np.zeros(0))
    assert all(len(a) == 0 for a in empty)


def test_strongest_actions_follow_intent_not_order() -> None:
    h = UserHistory(
        items=np.array([1, 1, 2, 2]),
        event_types=np.array(
            [EVENT_CODE["purchase"], EVENT_CODE["view"], EVENT_CODE["search"], EVENT_CODE["cart"]],
            dtype=np.int8,
        ),
    )
    assert strongest_actions(h) == {1: "purchase", 2: "cart"}
    assert strongest_actions(UserHistory.of([1, 2])) == {}


def test_history_entries_point_at_the_strongest_entry(two_groups: InteractionDataset) -> None:
    weighted = Popularity().fit(two_groups)
    h = UserHistory.of([3, 1, 3, 99, -1, 2], weights=[1.0, 2.0, 5.0, 1.0, 1.0, 0.0])
    items, w, pos = weighted.history_entries(h)
    assert items.tolist() == [1, 3] and w.tolist() == [2.0, 5.0] and pos.tolist() == [1, 2]
    binary = EASE(reg=5.0).fit(two_groups)
    assert binary.history_entries(h)[1].tolist() == [1.0, 1.0]


def test_models_without_exact_unlearning_refuse_by_name(two_groups: InteractionDataset) -> None:
    decayed = Popularity(half_life_days=30.0).fit(two_groups)
    assert not decayed.can_forget
    with pytest.raises(ConfigError, match="half_life_days"):
        decayed.forget(two_groups)
    assert Popularity().can_forget and EASE().can_forget
