"""`privrec privacy-report` on a small synthetic shop (few epsilons and models: it stays fast)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from privrec.cli import app
from privrec.core.settings import Settings
from privrec.data.synthetic import generate_shop
from privrec.service import RecSys

runner = CliRunner()


@pytest.fixture()
def shop_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for var in ("PRIVREC_PSEUDONYM_KEY", "PRIVREC_STORE_KEY", "PRIVREC_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    d = tmp_path / "data"
    events, catalogue = generate_shop(n_items=120, n_users=200, seed=4)
    with RecSys(Settings(data_dir=d)) as rs:
        rs.add_items(catalogue)
        rs.ingest_frame(events)
        rs.train(
            "dp_popularity", params={"epsilon": 1.0}
        )  # a release for the data directory's ledger
    return d


def test_privacy_report_writes_png_html_json_with_the_ledger(
    shop_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    args = [
        "privacy-report",
        "--data-dir",
        str(shop_dir),
        "--out",
        str(out),
        "--epsilons",
        "1,inf",
        "--models",
        "dp_popularity,dp_itemknn",
        "--audit-users",
        "120",
    ]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "privacy frontier done" in result.output
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "privacy_report.html").read_text()
    assert "Privacy-budget ledger" in html and "<img" in html
    doc = json.loads((out / "privacy_report.json").read_text())
    assert {(p["model"], p["epsilon"]) for p in doc["points"]} == {
        ("dp_popularity", 1.0),
        ("dp_popularity", "inf"),
        ("dp_itemknn", 1.0),
        ("dp_itemknn", "inf"),
    }
    assert all(p["attack_auc"] is not None for p in doc["points"])
    # the store's data: the frontier's two finite-epsilon releases join the data directory's
    # one ledger, after the release that was made for serving
    assert doc["ledger"]["releases"] == 3
    with RecSys(Settings(data_dir=shop_dir)) as rs:
        assert len(rs.ctx.ledger.entries()) == 3


def test_privacy_report_names_bad_options(shop_dir: Path, tmp_path: Path) -> None:
    bad = runner.invoke(app, ["privacy-report", "--data-dir", str(shop_dir), "--models", "ease"])
    assert bad.exit_code == 2 and "models" in bad.output
    bad = runner.invoke(app, ["privacy-report", "--data-dir", str(shop_dir), "--epsilons", "one"])
    assert bad.exit_code == 2 and "--epsilons" in bad.output
    bad = runner.invoke(
        app, ["privacy-report", "--data-dir", str(shop_dir), "--dataset", str(tmp_path / "nope")]
    )
    assert bad.exit_code == 2 and "dataset" in bad.output


def test_forget_several_users_as_one_batch(shop_dir: Path) -> None:
    with RecSys(Settings(data_dir=shop_dir)) as rs:
        rs.train("itemknn", params={"k": 20})
    result = runner.invoke(
        app,
        ["forget", "shopper-00001", "shopper-00002", "--data-dir", str(shop_dir)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    receipts = json.loads(result.output[result.output.index("[") :])
    assert [r["batch_size"] for r in receipts] == [2, 2]
    assert all(
        r["models_updated_exactly"] == ["itemknn"]
        and r["models_pending_retrain"] == ["dp_popularity"]
        for r in receipts
    )
    assert all(r["retrain_deadline"] for r in receipts)
