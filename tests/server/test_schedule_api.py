"""Scheduled retraining over HTTP: policies, the job history, rollback, the in-server scheduler."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.server.conftest import A, C, make_app


def _wait(client, job_id: str, timeout: float = 60.0) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        j = client.get(f"/v1/jobs/{job_id}", headers=A).json()
        if j["status"] not in ("queued", "running"):
            return j
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def test_schedule_put_get_and_validation(client) -> None:
    assert client.get("/v1/schedule", headers=C).status_code == 403  # admin only
    got = client.get("/v1/schedule", headers=A)
    assert got.status_code == 200 and got.json()["policies"] == {}
    put = client.put(
        "/v1/schedule",
        json={"policies": {"itemknn": {"every_events": 500, "every_hours": 24}}},
        headers=A,
    )
    assert put.status_code == 200, put.text
    body = put.json()
    assert body["policies"]["itemknn"]["every_events"] == 500
    assert body["models"]["itemknn"]["new_events"] == 0 and body["due"] == []
    bad = client.put(
        "/v1/schedule", json={"policies": {"itemknn": {"every_events": -1}}}, headers=A
    )
    assert bad.status_code == 422
    assert "every_events" in bad.json()["detail"]
    for policy, field in (
        ({"gate_metric": "bogus@10"}, "gate_metric"),
        ({"params": {"k": "many"}}, "params"),
        ({"every_hours": 1, "surprise": 1}, "surprise"),
    ):
        bad = client.put("/v1/schedule", json={"policies": {"itemknn": policy}}, headers=A)
        assert bad.status_code == 422 and field in bad.json()["detail"], bad.text
    unknown = client.put("/v1/schedule", json={"policies": {"nosuch": {}}}, headers=A)
    assert unknown.status_code == 404 and "nosuch" in unknown.json()["detail"]
    # a refused PUT changed nothing
    assert client.get("/v1/schedule", headers=A).json()["policies"]["itemknn"]["every_hours"] == 24


def test_train_is_in_the_job_history_and_rollback_serves_the_old_version(client) -> None:
    old = client.get("/v1/models", headers=A).json()["models"]["itemknn"]["active"]
    job = client.post("/v1/models/itemknn/train", json={"params": {"k": 20}}, headers=A).json()
    done = _wait(client, job["id"])
    assert done["status"] == "succeeded" and done["model"] == "itemknn"
    new = done["version"]
    jobs = client.get("/v1/jobs", params={"model": "itemknn"}, headers=A).json()["jobs"]
    assert jobs[0]["id"] == job["id"] and jobs[0]["status"] == "succeeded"

    body = {"user": "shopper-00001", "k": 5, "model": "itemknn"}
    assert client.post("/v1/recommendations", json=body, headers=C).json()["version"] == new
    back = client.post(
        "/v1/models/itemknn/rollback", json={"reason": "conversion dropped"}, headers=A
    )
    assert back.status_code == 200, back.text
    assert back.json() == {
        "model": "itemknn",
        "active": old,
        "previous": new,
        "reason": "conversion dropped",
    }
    # served at once: no refresh interval to wait for
    assert client.post("/v1/recommendations", json=body, headers=C).json()["version"] == old
    rolled = client.get("/v1/jobs", params={"limit": 1}, headers=A).json()["jobs"][0]
    assert rolled["kind"] == "rollback" and rolled["status"] == "succeeded"
    again = client.post("/v1/models/itemknn/rollback", headers=A)
    assert again.status_code == 409 and "no earlier good version" in again.json()["detail"]


def test_jobs_query_is_validated(client) -> None:
    assert client.get("/v1/jobs", params={"status": "bogus"}, headers=A).status_code == 422
    assert client.get("/v1/jobs", params={"limit": 0}, headers=A).status_code == 422
    assert client.get("/v1/jobs", params={"status": "refused"}, headers=A).json() == {"jobs": []}


def test_the_server_runs_the_scheduler(shop_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """New events through the API trigger a retrain inside the server process (APScheduler)."""
    from fastapi.testclient import TestClient

    monkeypatch.setenv("PRIVREC_SCHEDULER_TICK_SECONDS", "0.2")
    app = make_app(shop_dir)
    with TestClient(app, raise_server_exceptions=False) as client:
        before = client.get("/v1/models", headers=A).json()["models"]["itemknn"]["active"]
        put = client.put(
            "/v1/schedule", json={"policies": {"itemknn": {"every_events": 5}}}, headers=A
        )
        assert put.status_code == 200
        events = [
            {
                "user": f"shopper-{u:05d}",
                "item": "sku-000007",
                "type": "purchase",
                "timestamp": time.time(),
            }
            for u in range(1, 7)
        ]
        got = client.post("/v1/events/batch", json={"events": events}, headers=C)
        assert got.status_code == 200 and got.json()["accepted"] == 6, got.text
        t0 = time.time()
        jobs: list[dict] = []
        while time.time() - t0 < 30:
            jobs = client.get("/v1/jobs", params={"model": "itemknn"}, headers=A).json()["jobs"]
            if jobs and jobs[0]["status"] not in ("queued", "running"):
                break
            time.sleep(0.1)
        assert jobs and jobs[0]["trigger"] == "events", jobs
        assert jobs[0]["status"] == "succeeded", jobs[0]
        assert jobs[0]["gate"]["metric"] == "ndcg@10"
        now = client.get("/v1/models", headers=A).json()["models"]["itemknn"]
        assert now["active"] == jobs[0]["version"] != before and now["served"] == now["active"]
