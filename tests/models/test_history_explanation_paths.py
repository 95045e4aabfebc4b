"""history_explanation's two ways of summing contributions give the same explanation, and
strongest_actions' per-thread memo never hands out a stale or shared dict."""

from __future__ import annotations

import numpy as np
import pytest

import privrec.models.base as base
from privrec.core.types import UserHistory, strongest_actions


@pytest.mark.parametrize("seed", range(40))
def test_the_small_python_path_equals_the_numpy_path(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 30))
    items = rng.integers(0, 8, n)  # repeats: their contributions add up
    contrib = rng.normal(size=n)
    if n and seed % 3 == 0:
        contrib = np.round(contrib, 1)  # ties in the totals: broken by the smaller item
    h = UserHistory.of(items)
    fast = base.history_explanation(h, 99, items, contrib, n=3)
    monkeypatch.setattr(base, "_SMALL", -1)
    slow = base.history_explanation(h, 99, items, contrib, n=3)
    assert (fast.kind, fast.text, fast.contributors) == (slow.kind, slow.text, slow.contributors)


def test_strongest_actions_memo_follows_the_history_object() -> None:
    a = UserHistory(
        items=np.array([3, 3, 5]), weights=None, event_types=np.array([0, 3, 0], np.int8)
    )
    b = UserHistory(items=np.array([3]), weights=None, event_types=np.array([0], np.int8))
    first = strongest_actions(a)
    first[3] = "changed by a caller"
    again = strongest_actions(a)
    assert again != first and again == strongest_actions(a)  # a copy each time
    assert strongest_actions(b) == {3: "view"}  # another history: computed, not the memo
    assert strongest_actions(a) == {3: "favorite", 5: "view"}  # back to a: its own actions
