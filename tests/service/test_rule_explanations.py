"""A pinned item is explained as "placed by a shop rule", never by the shopper's own evidence."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from privrec.core.settings import Settings
from privrec.data.catalogue import ItemTable
from privrec.data.synthetic import generate_shop
from privrec.explain.explanations import RULE_TEXT
from privrec.service import RecSys
from privrec.service.rules import Rules, apply_rules


def _table(n: int) -> ItemTable:
    import pandas as pd

    meta = pd.DataFrame(
        {
            "item": [f"i{j}" for j in range(n)],
            "title": [f"Item {j}" for j in range(n)],
            "category": ["A > B" if j % 2 else "A > C" for j in range(n)],
            "in_stock": [j != 3 for j in range(n)],
        }
    )
    return ItemTable.from_meta(meta, popularity=np.ones(n))


def test_pins_come_first_and_respect_the_other_rules() -> None:
    table = _table(10)
    scores = np.arange(10, dtype=np.float64)  # the model likes high indices
    rules = Rules(pin_items=(1, 3, 1, 2), in_stock=True)
    res = apply_rules(scores, 4, rules, table, seen=np.array([2]))
    # 3 is out of stock and 2 was seen: only 1 is pinned (once); the model fills the rest
    assert res.items.tolist() == [1, 9, 8, 7]
    assert res.pinned is not None and res.pinned.tolist() == [True, False, False, False]
    assert not res.filled[0]
    # no pins: nothing marked
    assert apply_rules(scores, 3, Rules(), table).pinned is None


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RecSys]:
    events, catalogue = generate_shop(n_items=150, n_users=90, seed=12)
    with RecSys(Settings(data_dir=tmp_path_factory.mktemp("pins") / "d")) as rs:
        rs.add_items(catalogue)
        rs.ingest_frame(events)
        rs.train("itemknn", params={"k": 30})
        yield rs


def _assert_rule_only(item: dict) -> None:
    exp = item["explanation"]
    assert exp["kind"] == "rule", exp
    assert exp["text"] == RULE_TEXT
    assert exp["because"] == [], "a pinned item names no personal evidence"
    for word in ("because you", "bought", "viewed", "saved", "your cart", "search"):
        assert word not in exp["text"]


def test_a_pinned_item_never_claims_personal_evidence(shop: RecSys) -> None:
    checked = 0
    for n in range(1, 15):
        user = f"shopper-{n:05d}"
        plain = shop.recommend(user, 10)
        # the items the model explains from this shopper's history: pinning one of them must
        # still say that the rule placed it, not "because you bought ..."
        personal = [it for it in plain.items if it["explanation"]["because"]]
        if not personal:
            continue
        target = personal[-1]["item"]
        pinned = shop.recommend(user, 10, rules={"pin_items": [target]})
        assert pinned.items[0]["item"] == target
        _assert_rule_only(pinned.items[0])
        # the rest are the model's, explained as before
        assert all(it["explanation"]["kind"] != "rule" for it in pinned.items[1:])
        assert target not in [it["item"] for it in pinned.items[1:]]
        checked += 1
    assert checked >= 5


def test_pins_are_worded_for_new_visitors_and_the_dp_release(shop: RecSys) -> None:
    pin = "sku-000007"
    served = shop.recommend("someone-new", 5, rules={"pin_items": [pin]})
    assert served.items[0]["item"] == pin
    _assert_rule_only(served.items[0])
    # an anonymous shopper is served from the DP popularity release: the pin is worded there too
    shop.train("dp_popularity", params={"epsilon": 1.0}, activate=True)
    shop.set_consent("shopper-00003", "anonymous")
    served = shop.recommend("shopper-00003", 5, rules={"pin_items": [pin]})
    assert not served.personalized and served.model == "dp_popularity"
    _assert_rule_only(served.items[0])
    assert all(it["explanation"]["kind"] == "popular" for it in served.items[1:])


def test_pinning_through_http_schema_field_name() -> None:
    from privrec.server.schemas import RulesIn
    from privrec.service.rule_spec import RULE_FIELDS

    assert "pin_items" in RulesIn.model_fields and "pin_items" in RULE_FIELDS
