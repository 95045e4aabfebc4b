"""A pin through the HTTP API: first in the list, explained as placed by a shop rule."""

from __future__ import annotations

from tests.server.conftest import C

U = "shopper-00001"


def test_a_pinned_item_comes_first_and_says_so(client) -> None:
    plain = client.post("/v1/recommendations", json={"user": U, "k": 5}, headers=C).json()
    target = plain["items"][-1]["item"]
    body = {"user": U, "k": 5, "rules": {"pin_items": [target, "no-such-item"]}}
    r = client.post("/v1/recommendations", json=body, headers=C)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert items[0]["item"] == target
    assert items[0]["explanation"] == {
        "kind": "rule",
        "text": "placed by a shop rule",
        "because": [],
    }
    assert [it["item"] for it in items].count(target) == 1


def test_too_many_pins_is_a_problem_naming_the_field(client) -> None:
    body = {"user": U, "k": 5, "rules": {"pin_items": [f"i{n}" for n in range(101)]}}
    r = client.post("/v1/recommendations", json=body, headers=C)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "pin_items" in r.text
