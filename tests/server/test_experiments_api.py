"""A/B experiments over HTTP: assignment, attribution, report, replay."""

from __future__ import annotations

import time

from tests.server.conftest import A, C, shopper_headers


def test_experiment_round_trip(client) -> None:
    spec = {
        "name": "pop-vs-knn",
        "variants": [
            {"name": "control"},
            {"name": "popular", "model": "popularity"},
            {"name": "diverse", "params": {"diversity": 0.5}},
        ],
    }
    r = client.post("/v1/experiments", json=spec, headers=A)
    assert r.status_code == 201 and "salt" not in r.json()
    assert client.post("/v1/experiments", json=spec, headers=A).status_code == 422  # name taken
    shown = {}
    for u in range(1, 121):
        user = f"shopper-{u:05d}"
        d = client.post(
            "/v1/recommendations",
            json={"user": user, "k": 5, "experiment": "pop-vs-knn"},
            headers=C,
        ).json()
        assert d["experiment"] == "pop-vs-knn" and d["variant"] in ("control", "popular", "diverse")
        again = client.post(
            "/v1/recommendations",
            json={"user": user, "k": 5, "experiment": "pop-vs-knn"},
            headers=C,
        ).json()
        assert (
            again["variant"] == d["variant"]
            and again["recommendation_id"] != d["recommendation_id"]
        )
        if d["variant"] == "popular":
            assert d["model"] == "popularity"
        shown[user] = d
    events = []
    for n, (user, d) in enumerate(shown.items()):
        if n % 2 == 0:
            events.append(
                {
                    "user": user,
                    "item": d["items"][0]["item"],
                    "type": "view",
                    "timestamp": 1719700000,
                    "recommendation_id": d["recommendation_id"],
                }
            )
        if n % 5 == 0:
            events.append(
                {
                    "user": user,
                    "item": d["items"][0]["item"],
                    "type": "purchase",
                    "timestamp": 1719700001,
                    "recommendation_id": d["recommendation_id"],
                    "value": 10.0,
                }
            )
    # an outcome for an item that was not on the list is not attributed
    u0, d0 = next(iter(shown.items()))
    off_list = next(
        f"sku-{j:06d}" for j in range(240) if f"sku-{j:06d}" not in {i["item"] for i in d0["items"]}
    )
    events.append(
        {
            "user": u0,
            "item": off_list,
            "type": "view",
            "timestamp": 1719700002,
            "recommendation_id": d0["recommendation_id"],
        }
    )
    rep = client.post("/v1/events/batch", json={"events": events}, headers=C).json()
    assert rep["accepted"] == len(events) and rep["outcomes_attributed"] == len(events) - 1
    report = client.get("/v1/experiments/pop-vs-knn/report", headers=A).json()
    assert [v["variant"] for v in report["variants"]] == ["control", "popular", "diverse"]
    assert sum(v["units"] for v in report["variants"]) == 120
    assert sum(v["ctr"]["successes"] for v in report["variants"]) == 60
    assert sum(v["conversion"]["successes"] for v in report["variants"]) == 24
    for v in report["variants"][1:]:
        assert v["vs_control"]["ctr"]["test"] == "two-proportion z-test"
        assert v["vs_control"]["revenue_per_unit"]["test"] == "Welch t-test"
    assert (
        report["srm"]["test"] == "chi-square goodness of fit" and report["srm"]["mismatch"] is False
    )
    assert client.post("/v1/experiments/pop-vs-knn/stop", headers=A).json()["status"] == "stopped"
    d = client.post(
        "/v1/recommendations", json={"user": "shopper-00001", "experiment": "pop-vs-knn"}, headers=C
    ).json()
    assert d["experiment"] is None and "stopped" in d["note"]


def test_replay_job(client) -> None:
    client.post(
        "/v1/experiments",
        json={"name": "rp", "variants": [{"name": "a"}, {"name": "b", "model": "popularity"}]},
        headers=A,
    )
    job = client.post(
        "/v1/experiments/rp/replay", json={"k": 10, "max_users": 80, "paired": True}, headers=A
    ).json()
    t0 = time.time()
    while time.time() - t0 < 60:
        j = client.get(f"/v1/jobs/{job['id']}", headers=A).json()
        if j["status"] in ("succeeded", "failed", "refused", "gated"):
            break
        time.sleep(0.1)
    assert j["status"] == "succeeded", j
    res = j["result"]
    assert res["replay"]["held_out_users"] == 80 and [v["units"] for v in res["variants"]] == [
        80,
        80,
    ]
    assert (
        res["variants"][0]["ctr"]["value"] >= res["variants"][1]["ctr"]["value"]
    )  # kNN beats popularity on the shop


def test_erasure_removes_experiment_records(client) -> None:
    client.post(
        "/v1/experiments",
        json={"name": "er", "variants": [{"name": "a"}, {"name": "b"}]},
        headers=A,
    )
    d = client.post(
        "/v1/recommendations", json={"user": "shopper-00007", "experiment": "er"}, headers=C
    ).json()
    receipt = client.delete("/v1/me/data", headers=shopper_headers(client, "shopper-00007")).json()
    assert receipt["experiment_rows_deleted"] >= 1
    assert (
        client.get("/v1/experiments/er/report", headers=A).json()["variants"][0]["impressions"]
        + client.get("/v1/experiments/er/report", headers=A).json()["variants"][1]["impressions"]
        == 0
    )
    assert d["recommendation_id"]
