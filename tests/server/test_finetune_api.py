"""POST /v1/models/content/finetune: a 202 job with progress; 409/422/401/403 as RFC 9457."""

from __future__ import annotations

import os
import time
from pathlib import Path

from fastapi.testclient import TestClient

from tests.server.conftest import A, C, make_app

os.environ.setdefault("HF_HUB_OFFLINE", "1")

URL = "/v1/models/content/finetune"


def _wait(client, job_id: str, timeout: float = 900.0) -> dict:
    t0 = time.time()
    seen: set[str] = set()
    while time.time() - t0 < timeout:
        j = client.get(f"/v1/jobs/{job_id}", headers=A).json()
        if j.get("progress"):
            seen.add(j["progress"]["stage"])
        if j["status"] in ("succeeded", "failed", "refused", "gated"):
            j["stages_seen"] = seen
            return j
        time.sleep(0.2)
    raise AssertionError("job did not finish")


def test_finetune_job_reports_progress_and_keeps_a_worse_adapter(client, shop_dir: Path) -> None:
    before = client.get("/v1/models", headers=A).json()["models"]
    body = {"max_pairs": 64, "rank": 2, "epochs": 1, "name": "api", "min_gain": 1.0}
    r = client.post(URL, json=body, headers=A)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "finetune" and job["status"] in ("queued", "running")
    done = _wait(client, job["id"])
    assert done["status"] == "succeeded", done
    res = done["result"]
    assert res["adapter"] == "api" and res["deployed"] is False and res["content"] is None
    assert res["reason"].startswith("not deployed")
    assert {"recall@10", "mrr", "ndcg@10"} <= set(res["frozen"]) == set(res["adapted"])
    assert res["data"]["heldout_items"] > 0 and res["data"]["train_pairs"] <= 64
    assert done["progress"]["stage"] == "evaluate" and done["progress"]["fraction"] == 1.0
    assert (shop_dir / "adapters" / "api" / "adapter_config.json").exists()
    after = client.get("/v1/models", headers=A).json()["models"]
    assert ("content" in after) == ("content" in before)  # nothing deployed


def test_finetune_errors_are_problems(client, tmp_path: Path) -> None:
    r = client.post(URL, json={"epochs": 1, "bogus": 1}, headers=A)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "bogus" in r.text
    r = client.post(URL, json={"holdout": 0.9}, headers=A)
    assert r.status_code == 422 and "holdout" in r.text
    r = client.post(URL, json={"name": "../x"}, headers=A)
    assert r.status_code == 422 and "name" in r.text
    assert client.post(URL, json={}).status_code == 401
    assert client.post(URL, json={}, headers=C).status_code == 403

    with TestClient(make_app(tmp_path / "empty"), raise_server_exceptions=False) as empty:
        r = empty.post(URL, json={}, headers=A)
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    assert "needs at least 40" in r.json()["detail"]
