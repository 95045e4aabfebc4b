"""The /v1 API end to end through the ASGI app (in-process)."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest

from tests.server.conftest import ADMIN_KEY, CLIENT_KEY, A, C, make_app, shopper_headers

U = "shopper-00001"


def test_recommendations_carry_explanations_and_ids(client) -> None:
    # the shopper's own token: a client key alone gets their explanations redacted
    # (tests/server/test_personal_evidence.py)
    h = shopper_headers(client, U)
    r = client.post("/v1/recommendations", json={"user": U, "k": 5}, headers=h)
    assert r.status_code == 200
    doc = r.json()
    assert len(doc["items"]) == 5 and doc["personalized"] and len(doc["recommendation_id"]) == 16
    assert doc["model"] == "itemknn" and doc["version"].startswith("v")
    for it in doc["items"]:
        assert it["explanation"]["text"] and it["explanation"]["kind"] in (
            "history",
            "popular",
            "cold_item",
            "context",
        )
    assert any(
        it["explanation"]["kind"] == "history"
        and it["explanation"]["text"].startswith("because you")
        for it in doc["items"]
    )
    assert r.headers["cache-control"] == "no-store"


def test_business_rules_still_return_k(client) -> None:
    body = {
        "user": U,
        "k": 10,
        "rules": {
            "in_stock": True,
            "price_max": 40,
            "category_cap": 2,
            "diversity": 0.3,
            "exclude_categories": ["Grocery"],
        },
    }
    items = client.post("/v1/recommendations", json=body, headers=C).json()["items"]
    assert len(items) == 10
    cats = [it["category"] for it in items]
    assert all(cats.count(c) <= 2 for c in cats)
    assert all(
        it["in_stock"] and it["price"] <= 40 and not it["category"].startswith("Grocery")
        for it in items
    )


def test_context_item_and_similar(client) -> None:
    first = client.get("/v1/items?limit=1", headers=C).json()["items"][0]["item"]
    sim = client.get(f"/v1/items/{first}/similar?k=4", headers=C).json()
    assert len(sim["items"]) == 4 and first not in [i["item"] for i in sim["items"]]
    r = client.post(
        "/v1/recommendations",
        json={"user": "someone-new", "k": 3, "context_item": first},
        headers=C,
    ).json()
    assert r["items"][0]["explanation"]["kind"] in ("context", "popular")
    assert client.get("/v1/items/no-such-item/similar", headers=C).status_code == 404


def test_search_mode_is_labelled(client) -> None:
    r = client.post("/v1/search", json={"query": "tea", "user": U, "k": 5}, headers=C).json()
    assert r["mode"] in ("hybrid", "lexical", "dense")
    assert r["items"] and "tea" in (r["items"][0]["title"] + r["items"][0]["category"]).lower()
    assert r["items"][0]["explanation"]["text"].startswith("matches your search 'tea'")


def test_explanation_endpoint(client) -> None:
    item = client.post("/v1/recommendations", json={"user": U, "k": 1}, headers=C).json()["items"][
        0
    ]["item"]
    h = shopper_headers(client, U)  # an explanation reads the shopper's history: their token
    r = client.post("/v1/me/explanations", json={"item": item}, headers=h).json()
    assert r["rank"] >= 1 and r["explanation"]["text"]


def test_consent_anonymous_gives_non_personalised_and_stops_storing(client) -> None:
    h = shopper_headers(client, U)
    assert client.get("/v1/me/consent", headers=h).json()["level"] == "personalized"
    assert (
        client.put("/v1/me/consent", json={"level": "anonymous"}, headers=h).json()["previous"]
        == "personalized"
    )
    r = client.post("/v1/recommendations", json={"user": U, "k": 4}, headers=C).json()
    assert not r["personalized"] and all(i["explanation"]["kind"] == "popular" for i in r["items"])
    before = client.get("/v1/me/data", headers=h).json()["n_events"]
    rep = client.post(
        "/v1/events",
        json={"user": U, "item": "sku-000001", "type": "view", "timestamp": 1719700000},
        headers=C,
    ).json()
    assert rep["consent_dropped"] == 1 and rep["accepted"] == 0
    assert client.get("/v1/me/data", headers=h).json()["n_events"] == before


def test_purchases_only_keeps_purchases(client) -> None:
    r = client.put(
        "/v1/me/consent",
        json={"level": "purchases_only"},
        headers=shopper_headers(client, "po-user"),
    )
    assert r.status_code == 200
    ev = [
        {"user": "po-user", "item": "sku-000002", "type": t, "timestamp": 1719700000 + i}
        for i, t in enumerate(["view", "cart", "purchase"])
    ]
    rep = client.post("/v1/events/batch", json={"events": ev}, headers=C).json()
    assert rep["accepted"] == 1 and rep["consent_dropped"] == 2


def test_new_events_invalidate_cached_lists(client) -> None:
    u = "fresh-shopper"
    first = client.post("/v1/recommendations", json={"user": u, "k": 3}, headers=C).json()
    assert all(i["explanation"]["kind"] == "popular" for i in first["items"])
    item = first["items"][0]["item"]
    client.post(
        "/v1/events",
        json={"user": u, "item": item, "type": "purchase", "timestamp": 1719700000},
        headers=C,
    )
    second = client.post("/v1/recommendations", json={"user": u, "k": 3}, headers=C).json()
    assert item not in [i["item"] for i in second["items"]]  # bought: excluded at once
    assert any(i["explanation"]["kind"] == "history" for i in second["items"])


def test_export_and_erase_with_receipt(client) -> None:
    h = shopper_headers(client, "shopper-00002")
    exp = client.get("/v1/me/data", headers=h)
    assert (
        exp.status_code == 200
        and exp.json()["n_events"] > 0
        and "attachment" in exp.headers["content-disposition"]
    )
    receipt = client.delete("/v1/me/data", headers=h).json()
    assert (
        receipt["events_deleted"] > 0 and receipt["erased_at"] and len(receipt["pseudonym"]) == 32
    )
    # the trained models are updated exactly on a background worker; the receipt says which
    assert set(receipt["models_updating_exactly"]) == {"popularity", "itemknn"}
    assert client.get("/v1/me/data", headers=h).json()["n_events"] == 0
    r = client.post("/v1/recommendations", json={"user": "shopper-00002", "k": 3}, headers=C).json()
    assert all(i["explanation"]["kind"] == "popular" for i in r["items"])
    assert (
        client.post("/v1/admin/users/erase", json={"user": "shopper-00003"}, headers=C).status_code
        == 403
    )
    assert (
        client.post("/v1/admin/users/erase", json={"user": "shopper-00003"}, headers=A).json()[
            "events_deleted"
        ]
        > 0
    )


def test_batch_reports_rejects_by_position(client) -> None:
    # the raw id holds non-hex letters so it can never occur inside a hex pseudonym by chance
    raw = "shopper-raw-id"
    ev = [
        {"user": raw, "item": "sku-000001", "type": "view", "timestamp": 1719700000},
        {"user": raw, "item": "sku-000001", "type": "teleport", "timestamp": 1719700000},
        "not an object",
    ]
    rep = client.post("/v1/events/batch", json={"events": ev}, headers=C).json()
    assert rep["accepted"] == 1 and rep["rejected"] == 2
    assert {r["line"] for r in rep["rejects"]} == {2, 3}
    assert "type" in rep["rejects"][0]["reason"] and raw not in json.dumps(rep["rejects"])


def test_errors_are_problem_json(client) -> None:
    cases = [
        client.post("/v1/recommendations", json={"user": U}),  # no key
        client.post(
            "/v1/recommendations",
            json={"user": U},
            headers={"Authorization": "Bearer wrong-key-wrong-key"},
        ),
        client.get("/v1/models", headers=C),  # wrong role
        client.post("/v1/recommendations", json={"user": U, "k": 0}, headers=C),
        client.post(
            "/v1/recommendations",
            content=b"{not json",
            headers={**C, "content-type": "application/json"},
        ),
        client.post("/v1/recommendations", json={"user": U, "model": "nosuchmodel"}, headers=C),
        client.get("/v1/does-not-exist", headers=C),
        client.delete("/v1/recommendations", headers=C),
        client.post(
            "/v1/events/batch", content=b"[]", headers={**C, "content-type": "application/json"}
        ),
    ]
    assert [r.status_code for r in cases] == [401, 401, 403, 422, 422, 404, 404, 405, 422]
    for r in cases:
        assert r.headers["content-type"] == "application/problem+json"
        doc = r.json()
        assert (
            doc["status"] == r.status_code
            and doc["title"]
            and len(doc["detail"]) > 10
            and doc["type"].startswith("urn:privrec:problem:")
        )
    assert "k" in cases[3].json()["detail"]


def test_body_size_limit(shop_dir: Path) -> None:
    from fastapi.testclient import TestClient

    with TestClient(make_app(shop_dir, max_body_bytes=2048), raise_server_exceptions=False) as c:
        r = c.post(
            "/v1/recommendations",
            content=b'{"user": "' + b"x" * 5000 + b'"}',
            headers={**C, "content-type": "application/json"},
        )
        assert r.status_code == 413 and r.headers["content-type"] == "application/problem+json"


def test_rate_limit_per_key(shop_dir: Path) -> None:
    from fastapi.testclient import TestClient

    with TestClient(make_app(shop_dir, rate_client=2.0), raise_server_exceptions=False) as c:
        codes = [c.get("/v1/categories", headers=C).status_code for _ in range(8)]
        assert codes[:4] == [200] * 4 and 429 in codes
        r = c.get("/v1/categories", headers=C)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert c.get("/v1/models", headers=A).status_code == 200  # another key, its own bucket


def test_cors_off_unless_configured(shop_dir: Path) -> None:
    from fastapi.testclient import TestClient

    with TestClient(make_app(shop_dir), raise_server_exceptions=False) as c:
        r = c.options(
            "/v1/recommendations",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in r.headers
    with TestClient(
        make_app(shop_dir, cors_origins=["https://shop.example"]), raise_server_exceptions=False
    ) as c:
        r = c.options(
            "/v1/recommendations",
            headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "POST"},
        )
        assert r.headers["access-control-allow-origin"] == "https://shop.example"


def test_keys_file_created_0600_and_used(shop_dir: Path) -> None:
    from fastapi.testclient import TestClient

    from privrec.core.settings import Settings
    from privrec.server.app import create_app
    from privrec.server.security import load_or_create_keys
    from privrec.server.settings import ServerSettings

    keys, created = load_or_create_keys(shop_dir / "keys")
    assert created and {r for r, _ in keys} == {"client", "admin"}
    path = shop_dir / "keys" / "api-keys.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_keys(shop_dir / "keys") == (keys, False)
    app = create_app(Settings(data_dir=shop_dir), server=ServerSettings(pages="off"))
    with TestClient(app) as c:
        key = dict(keys)["client"]
        assert (
            c.get("/v1/categories", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        )
        assert (
            c.get("/v1/categories", headers={"Authorization": f"Bearer {CLIENT_KEY}"}).status_code
            == 401
        )


def test_no_raw_ids_or_keys_in_logs(client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    logging.getLogger("privrec.server.access").setLevel(logging.INFO)
    secret_user = "alice.secret@example.com"
    client.post("/v1/recommendations", json={"user": secret_user, "k": 2}, headers=C)
    h = shopper_headers(client, secret_user)
    assert client.get("/v1/me/data", headers=h).status_code == 200
    assert client.delete("/v1/me/data", headers=h).status_code == 200
    client.get("/v1/me/data", headers={**C, "X-User-Id": secret_user})  # refused, and not logged
    client.post(
        "/v1/events",
        json={"user": secret_user, "item": "sku-000001", "type": "view", "timestamp": 1},
        headers=C,
    )
    client.post(
        "/v1/recommendations",
        json={"user": secret_user},
        headers={"Authorization": "Bearer " + ADMIN_KEY + "x"},
    )
    text = caplog.text
    assert "route=/v1/recommendations" in text
    assert secret_user not in text and CLIENT_KEY not in text and ADMIN_KEY not in text
    assert h["X-Shopper-Token"] not in text and h["X-Shopper-Token"].split(".")[1] not in text


def test_health_and_metrics(client) -> None:
    assert client.get("/health/live").json() == {"status": "live"}
    ready = client.get("/health/ready").json()
    assert (
        ready["status"] == "ready"
        and set(ready["models"]) >= {"itemknn"}
        and ready["default_model"] == "itemknn"
    )
    client.post("/v1/recommendations", json={"user": U}, headers=C)
    m = client.get("/metrics").text
    assert (
        'privrec_request_seconds_bucket{le="0.001",method="POST",route="/v1/recommendations"}' in m
    )
    assert "privrec_model_active" in m and "privrec_cache_misses" in m


def test_openapi_is_versioned_and_documents_problems(client) -> None:
    schema = client.get("/v1/openapi.json").json()
    assert schema["info"]["title"] == "privrec"
    assert all(p.startswith(("/v1/", "/health/", "/metrics")) for p in schema["paths"])
    op = schema["paths"]["/v1/recommendations"]["post"]
    assert "application/problem+json" in op["responses"]["422"]["content"]
    assert "bearer" in schema["components"]["securitySchemes"]


def test_fast_path_matches_the_fastapi_route(shop_dir: Path) -> None:
    from fastapi.testclient import TestClient

    bodies = [
        {"user": U, "k": 4, "rules": {"diversity": 0.2}},
        {"user": U, "k": 0},
        {"user": U, "extra": 1},
        {"user": U, "model": "nosuchmodel"},
        {"user": U, "context_item": "no-such-item"},
    ]
    answers = []
    for fast in (True, False):
        with TestClient(make_app(shop_dir, fast_path=fast), raise_server_exceptions=False) as c:
            got = []
            for b in bodies:
                r = c.post("/v1/recommendations", json=b, headers=C)
                doc = r.json()
                doc.pop("recommendation_id", None)
                got.append((r.status_code, r.headers["content-type"], doc))
            r = c.post("/v1/recommendations", json=bodies[0])
            got.append((r.status_code, r.headers["content-type"], r.json()))
            answers.append(got)
    assert [a[:2] for a in answers[0]] == [a[:2] for a in answers[1]]
    assert answers[0][0][2] == answers[1][0][2]  # the same list, explanations and all
    for (_, _, a), (_, _, b) in zip(answers[0][1:], answers[1][1:], strict=True):
        assert a["status"] == b["status"] and a["type"] == b["type"] and a["detail"] == b["detail"]
