"""The contract helpers added for the classic models: input_matrix, history checks, explanations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from privrec.core.types import EVENT_CODE, UserHistory
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


def test_history_explanation_orders_and_names() -> None:
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
    assert e.text == "because you added to your cart item 5 and bought item 3"
    none = history_explanation(h, 7, np.array([3]), np.array([0.0]))
    assert none.kind == "model" and none.contributors == []
    plain = history_explanation(UserHistory.of([3]), 7, np.array([3]), np.array([1.0]))
    assert plain.text == "because you interacted with item 3"
