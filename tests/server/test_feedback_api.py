"""The feedback loop over HTTP: list ids on every served list, outcomes through the events
route, online metrics (admin), experiment reports with sequential tests, promotion."""

from __future__ import annotations

import time

from tests.server.conftest import A, C


def _rec(client, user: str, **extra: object) -> dict:
    r = client.post("/v1/recommendations", json={"user": user, "k": 5, **extra}, headers=C)
    assert r.status_code == 200, r.text
    return r.json()


def test_outcomes_of_served_lists_reach_the_online_metrics(client) -> None:
    shown = [_rec(client, f"shopper-{u:05d}") for u in range(1, 11)]
    now = time.time()
    events = []
    for n, d in enumerate(shown):
        user = f"shopper-{n + 1:05d}"
        item = d["items"][0]["item"]
        base = {
            "user": user,
            "item": item,
            "timestamp": now,
            "recommendation_id": d["recommendation_id"],
        }
        if n < 4:
            events.append({**base, "type": "view"})
        if n < 2:
            events.append({**base, "type": "purchase", "value": 20.0})
    r = client.post("/v1/events/batch", json={"events": events}, headers=C)
    assert r.status_code == 200 and r.json()["outcomes_attributed"] == 6
    r = client.get("/v1/metrics/online", params={"by": "version", "days": 1}, headers=A)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["attribution_window_hours"] == 24.0
    (total,) = body["totals"]  # one model version served
    assert total["impressions"] == 10 and total["tracked"] == 10
    assert total["ctr"] == 0.4 and total["conversion"] == 0.2
    assert total["revenue_per_shopper"] == 4.0 and 0 < total["coverage"] <= 1
    assert [d["day"] for d in body["daily"]] == [time.strftime("%Y-%m-%d", time.gmtime())]


def test_online_metrics_need_the_admin_key_and_valid_options(client) -> None:
    assert client.get("/v1/metrics/online", headers=C).status_code == 403
    r = client.get("/v1/metrics/online", params={"by": "shopper"}, headers=A)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "by" in r.json()["detail"]


def test_similar_and_search_lists_carry_a_list_id(client) -> None:
    item = _rec(client, "shopper-00003")["items"][0]["item"]
    sim = client.get(f"/v1/items/{item}/similar", params={"k": 3}, headers=C).json()
    assert len(sim["recommendation_id"]) == 16
    r = client.post("/v1/search", json={"query": "a", "k": 3, "mode": "lexical"}, headers=C)
    assert r.status_code == 200 and len(r.json()["recommendation_id"]) == 16


def test_promotion_over_http(client) -> None:
    spec = {
        "name": "knn-vs-pop",
        "variants": [{"name": "control"}, {"name": "pop", "model": "popularity"}],
        "guardrails": [{"metric": "revenue_per_shopper", "max_drop": 0.1}],
        "tau2": 0.001,
    }
    assert client.post("/v1/experiments", json=spec, headers=A).status_code == 201
    bad = {**spec, "name": "bad-guard", "guardrails": [{"metric": "latency", "max_drop": 0.1}]}
    assert client.post("/v1/experiments", json=bad, headers=A).status_code == 422
    for u in range(1, 31):
        _rec(client, f"shopper-{u:05d}", experiment="knn-vs-pop")
    rep = client.get("/v1/experiments/knn-vs-pop/report", headers=A).json()
    assert rep["experiment"]["tau2"] == 0.001
    assert rep["sequential"]["pop"]["conversion"]["looks"] == 0  # below the minimum sample
    assert not rep["decision"]["concluded"] and rep["decision"]["reason"]
    assert {r["arm"] for r in rep["online"]} == {"control", "pop"}
    r = client.post("/v1/experiments/knn-vs-pop/promote", headers=A)
    assert r.status_code == 409 and "force" in r.json()["detail"]
    assert client.post("/v1/experiments/knn-vs-pop/promote", headers=C).status_code == 403
    r = client.post(
        "/v1/experiments/knn-vs-pop/promote", json={"force": True, "arm": "pop"}, headers=A
    )
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["promoted"]["model"] == "popularity" and done["promoted"]["forced"]
    assert done["experiment"]["status"] == "promoted"
    assert _rec(client, "someone-new")["model"] == "popularity"  # the new default, at once
    assert client.post("/v1/experiments/knn-vs-pop/promote", headers=A).status_code == 409
