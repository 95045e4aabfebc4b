"""Purchase-oriented training reached by a shop: `privrec train -p ...` and the HTTP train route."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from privrec.cli import app
from privrec.data.synthetic import generate_shop

runner = CliRunner()
SMALL_SASREC = ["-p", "epochs=1", "-p", "embedding_size=8", "-p", "num_blocks=1"]


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    events, _ = generate_shop(n_items=60, n_users=50, seed=4)
    d = tmp_path_factory.mktemp("imbalance")
    path = d / "events.jsonl"
    cols = [c for c in ("user", "item", "type", "timestamp", "rating") if c in events]
    events[cols].to_json(path, orient="records", lines=True)
    data_dir = d / "data"
    result = runner.invoke(app, ["ingest", str(path), "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    return data_dir


def _active_config(data_dir: Path, model: str) -> dict:
    from privrec.core.settings import Settings
    from privrec.service import RecSys

    with RecSys(Settings(data_dir=data_dir)) as rs:
        return rs.serving.model(model).model.config.model_dump()  # type: ignore[no-any-return]


def test_train_takes_purchase_weights_and_resampling(shop_dir: Path) -> None:
    args = ["train", "--model", "sasrec", *SMALL_SASREC, "--data-dir", str(shop_dir)]
    args += ["-p", 'target_weights={"purchase": 5, "cart": 2}', "-p", "resample_ratio=0.3"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    config = _active_config(shop_dir, "sasrec")
    assert config["target_weights"] == {"purchase": 5.0, "cart": 2.0}
    assert config["resample_ratio"] == 0.3


def test_train_takes_cf_event_weights(shop_dir: Path) -> None:
    args = ["train", "--model", "itemknn", "-p", "binary=false", "--data-dir", str(shop_dir)]
    args += ["-p", 'event_weights={"view": 1, "cart": 3, "favorite": 3, "purchase": 10}']
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert _active_config(shop_dir, "itemknn")["event_weights"]["purchase"] == 10.0


@pytest.mark.parametrize(
    ("model", "param", "field"),
    [
        ("sasrec", "resample_ratio=1.5", "resample_ratio"),
        ("bert4rec", 'target_weights={"buy": 5}', "target_weights"),
        ("ease", 'event_weights={"purchase": -1}', "event_weights"),
        ("ease", 'event_weights={"purchase": 5}', "event_weights"),  # binary=true ignores them
    ],
)
def test_train_refuses_a_bad_value_naming_the_field(
    shop_dir: Path, model: str, param: str, field: str
) -> None:
    args = ["train", "--model", model, "-p", param, "--data-dir", str(shop_dir)]
    result = runner.invoke(app, args)
    assert result.exit_code != 0
    assert field in result.output
    assert "Traceback" not in result.output


def test_http_train_route_takes_the_same_params(shop_dir: Path, tmp_path: Path) -> None:

    from fastapi.testclient import TestClient

    from tests.server.conftest import A, make_app

    d = tmp_path / "data"
    shutil.copytree(shop_dir, d)
    with TestClient(make_app(d)) as client:
        bad = client.post(
            "/v1/models/sasrec/train", json={"params": {"resample_ratio": 2}}, headers=A
        )
        assert bad.status_code == 400
        assert bad.headers["content-type"] == "application/problem+json"
        assert "resample_ratio" in bad.json()["detail"]
        params = {"target_weights": {"purchase": 4}, "epochs": 1, "embedding_size": 8}
        job = client.post("/v1/models/sasrec/train", json={"params": params}, headers=A)
        assert job.status_code in (200, 202), job.text
        job_id = job.json()["id"]
        t0 = time.time()
        while time.time() - t0 < 120:
            j = client.get(f"/v1/jobs/{job_id}", headers=A).json()
            if j["status"] not in ("queued", "running"):
                break
            time.sleep(0.2)
        assert j["status"] == "succeeded", json.dumps(j)
    assert _active_config(d, "sasrec")["target_weights"] == {"purchase": 4.0}


def test_evaluate_compares_a_model_with_and_without_event_weights(
    shop_dir: Path, tmp_path: Path
) -> None:
    args = ["evaluate", "--data-dir", str(shop_dir), "--out", str(tmp_path)]
    args += ["--models", "itemknn,itemknn@buy", "-p", "itemknn@buy.binary=false"]
    args += ["-p", 'itemknn@buy.event_weights={"view": 1, "purchase": 10}']
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "report.json").read_text())
    rows = {r["model"]: r for r in doc["results"]}
    assert set(rows) == {"itemknn", "itemknn@buy"}
    assert rows["itemknn@buy"]["params"]["event_weights"] == {"view": 1, "purchase": 10}
    assert "event_weights" not in rows["itemknn"]["params"]


@pytest.mark.parametrize(
    ("param", "field"),
    [
        ('itemknn@buy.event_weights={"buy": 1}', "event_weights"),
        ("itemknn@buy.resample_ratio=0.5", "resample_ratio"),  # not an item-kNN setting
        ("nosuch.k=5", "param"),
    ],
)
def test_evaluate_refuses_a_bad_param_before_reading_data(
    shop_dir: Path, tmp_path: Path, param: str, field: str
) -> None:
    args = ["evaluate", "--data-dir", str(shop_dir), "--out", str(tmp_path)]
    args += ["--models", "itemknn,itemknn@buy", "-p", "itemknn@buy.binary=false", "-p", param]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert field in result.output
    assert not (tmp_path / "report.json").exists()
