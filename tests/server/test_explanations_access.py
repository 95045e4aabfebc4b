"""Explanations read a shopper's history, so only that shopper (by token) or the admin reads them.

A client key with another shopper's id in the body is refused (403 problem saying why); the
shopper's own token works on /v1/me/explanations; the admin key works on the body's user.
"""

from __future__ import annotations

from tests.server.conftest import A, C, shopper_headers

U = "shopper-00001"
OTHER = "shopper-00004"


def _item(client) -> str:
    r = client.post("/v1/recommendations", json={"user": OTHER, "k": 1}, headers=C)
    assert r.status_code == 200, r.text
    return str(r.json()["items"][0]["item"])


def _refused(r, slug: str) -> None:
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    doc = r.json()
    assert doc["type"] == f"urn:privrec:problem:{slug}" and doc["status"] == 403
    assert OTHER not in r.text  # the problem never echoes the user id


def test_a_client_key_cannot_read_another_shoppers_explanation(client) -> None:
    item = _item(client)
    body = {"user": OTHER, "item": item}
    for route in ("/v1/explanations", "/v1/explanations/contributions"):
        r = client.post(route, json=body, headers=C)
        _refused(r, "shopper-token-required")
        assert "history" in r.json()["detail"] and "/v1/me/explanations" in r.json()["detail"]
        # a token for someone else does not open another shopper's explanations either
        r = client.post(route, json=body, headers=shopper_headers(client, U))
        _refused(r, "not-this-shopper")
        assert client.post(route, json=body).status_code == 401  # no key at all


def test_the_shopper_reads_their_own_explanation_with_their_token(client) -> None:
    item = _item(client)
    h = shopper_headers(client, OTHER)
    mine = client.post("/v1/me/explanations", json={"item": item}, headers=h)
    assert mine.status_code == 200, mine.text
    doc = mine.json()
    assert doc["item"] == item and doc["rank"] >= 1 and doc["personalized"]
    assert doc["explanation"]["text"]
    got = client.post("/v1/me/explanations/contributions", json={"item": item}, headers=h)
    assert got.status_code == 200, got.text
    assert got.json()["personalized"] and got.json()["contributors"]
    assert got.json() == client.app.state.insights.contributions(OTHER, item)
    # the token is required, and the body may not name a user
    assert client.post("/v1/me/explanations", json={"item": item}, headers=C).status_code == 401
    named = client.post("/v1/me/explanations", json={"item": item, "user": OTHER}, headers=h)
    assert named.status_code == 422 and "user" in named.text
    # the body route with the client key and a token naming the same shopper is the same answer
    same = client.post("/v1/explanations", json={"user": OTHER, "item": item}, headers=h)
    assert same.status_code == 200 and same.json() == doc


def test_the_admin_reads_any_shoppers_explanation(client) -> None:
    item = _item(client)
    body = {"user": OTHER, "item": item}
    r = client.post("/v1/explanations", json=body, headers=A)
    assert r.status_code == 200, r.text
    assert r.json()["personalized"] and r.json()["explanation"]["text"]
    got = client.post("/v1/explanations/contributions", json=body, headers=A)
    assert got.status_code == 200 and got.json()["contributors"]


def test_the_routes_are_documented(client) -> None:
    paths = client.get("/v1/openapi.json").json()["paths"]
    for route in (
        "/v1/me/explanations",
        "/v1/me/explanations/contributions",
        "/v1/explanations",
        "/v1/explanations/contributions",
    ):
        assert "403" in paths[route]["post"]["responses"], route
    docs = client.get("/docs").text
    assert "/v1/me/explanations" in docs
