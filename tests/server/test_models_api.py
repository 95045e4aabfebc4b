"""Model lifecycle over HTTP: list, activate (hot swap), train in the background."""

from __future__ import annotations

import threading
import time

from tests.server.conftest import A, C


def _wait(client, job_id: str, timeout: float = 60.0) -> dict:
    t0 = time.time()
    while time.time() - t0 < timeout:
        j = client.get(f"/v1/jobs/{job_id}", headers=A).json()
        if j["status"] in ("succeeded", "failed", "refused", "gated"):
            return j
        time.sleep(0.1)
    raise AssertionError("job did not finish")


def test_train_then_hot_swap_without_failed_requests(client) -> None:
    old = client.get("/v1/models", headers=A).json()["models"]["itemknn"]["active"]
    job = client.post("/v1/models/itemknn/train", json={"params": {"k": 20}}, headers=A)
    assert job.status_code == 202
    done = _wait(client, job.json()["id"])
    assert done["status"] == "succeeded", done
    new = done["result"]["version"]
    assert new != old and client.get("/health/ready").json()["models"]["itemknn"] == new

    failures: list[int] = []
    versions: set[str] = set()
    stop = threading.Event()

    def hammer() -> None:
        n = 0
        while not stop.is_set():
            r = client.post(
                "/v1/recommendations",
                json={"user": f"shopper-{n % 150 + 1:05d}", "k": 5},
                headers=C,
            )
            n += 1
            if r.status_code != 200:
                failures.append(r.status_code)
            else:
                versions.add(r.json()["version"])

    t = threading.Thread(target=hammer)
    t.start()
    for v in (old, new, old):
        assert (
            client.post("/v1/models/itemknn/activate", json={"version": v}, headers=A).status_code
            == 200
        )
        time.sleep(0.15)
    stop.set()
    t.join()
    assert failures == [] and {old, new} <= versions
    assert client.get("/v1/models", headers=A).json()["models"]["itemknn"]["active"] == old


def test_activate_unknown_version_is_404(client) -> None:
    r = client.post("/v1/models/itemknn/activate", json={"version": "v0-nope"}, headers=A)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"


def test_train_rejects_bad_params_at_once(client) -> None:
    r = client.post("/v1/models/itemknn/train", json={"params": {"no_such": 1}}, headers=A)
    assert r.status_code == 400 and "no_such" in r.json()["detail"]
    assert client.post("/v1/models/nosuch/train", json={}, headers=A).status_code == 404
