"""Catalogue over HTTP (admin): PUT, PATCH and DELETE reach the served lists at once."""

from __future__ import annotations

from typing import Any

from tests.server.conftest import A, C

SECRET = "jane.doe@example.com"


def _list(client: Any, user: str = "newcomer", k: int = 20, **rules: Any) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"user": user, "k": k}
    if rules:
        body["rules"] = rules
    r = client.post("/v1/recommendations", json=body, headers=C)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def test_put_then_recommendation_shows_new_title_and_price_rule(client: Any) -> None:
    top = _list(client)[0]["item"]
    r = client.put(
        "/v1/items",
        json=[
            {"item": top, "title": "Brand new title", "price": 0.5, "currency": "EUR"},
            {"item": "x-1", "price": SECRET},
        ],
        headers=A,
    )
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["accepted"] == 1 and report["rejected"] == 1
    assert (report["rejects"][0]["line"], report["rejects"][0]["field"]) == (2, "price")
    assert SECRET not in r.text
    shown = {i["item"]: i for i in _list(client)}
    assert shown[top]["title"] == "Brand new title" and shown[top]["price"] == 0.5
    cheap = _list(client, price_max=1.0)
    assert cheap and all(i["price"] <= 1.0 for i in cheap) and top in {i["item"] for i in cheap}


def test_patch_stock_and_in_stock_rule_excludes_at_once(client: Any) -> None:
    stocked = _list(client, in_stock=True)
    item = stocked[0]["item"]
    r = client.patch(f"/v1/items/{item}", json={"stock": 0}, headers=A)
    assert r.status_code == 200, r.text
    assert r.json()["in_stock"] is False
    assert item not in {i["item"] for i in _list(client, in_stock=True)}
    assert client.get(f"/v1/items/{item}", headers=C).json()["in_stock"] is False
    bad = client.patch(f"/v1/items/{item}", json={"price": SECRET}, headers=A)
    assert bad.status_code == 422 and "price" in bad.text and SECRET not in bad.text
    assert client.patch("/v1/items/no-such", json={"stock": 1}, headers=A).status_code == 404


def test_delete_removes_from_lists(client: Any) -> None:
    item = _list(client)[0]["item"]
    r = client.delete(f"/v1/items/{item}", headers=A)
    assert r.status_code == 200 and r.json() == {"item": item, "deleted": True}
    assert item not in {i["item"] for i in _list(client, k=50)}
    assert item not in {i["item"] for i in _list(client, user="shopper-00001", k=50)}
    assert client.delete(f"/v1/items/{item}", headers=A).status_code == 404


def test_client_key_is_forbidden(client: Any) -> None:
    item = _list(client)[0]["item"]
    assert client.put("/v1/items", json=[{"item": item}], headers=C).status_code == 403
    assert client.patch(f"/v1/items/{item}", json={"stock": 0}, headers=C).status_code == 403
    assert client.delete(f"/v1/items/{item}", headers=C).status_code == 403
    assert client.put("/v1/items", json=[{"item": item}]).status_code == 401


def test_bad_bodies(client: Any) -> None:
    assert client.put("/v1/items", json=[], headers=A).status_code == 422
    assert client.put("/v1/items", json={"item": "a"}, headers=A).status_code == 422
    r = client.put("/v1/items", content=b"[{", headers={**A, "content-type": "application/json"})
    assert r.status_code == 400
