"""Reports: valid JSON with every figure, a self-contained HTML page, a rich table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from privrec.evaluation import report_results
from privrec.evaluation.report import (
    BEAUTY_LOO_FULL_RANKING,
    MS_RECOMMENDERS_ML100K,
    ModelResult,
    render_table,
    write_report,
)


def _results() -> tuple[ModelResult, dict[str, Any], dict[str, Any]]:
    a = ModelResult.from_eval(
        "ItemKNN",
        {
            "map@10": 0.11,
            "ndcg@10": 0.38,
            "precision@10": 0.33,
            "recall@10": 0.17,
            "n_users": 942,
            "k": 10,
            "eval_seconds": 0.09,
        },
        train_seconds=0.4,
        params={"k": 100},
    )
    b = {
        "model": "DP-ALS <eps=1>",
        "metrics": {"map@10": 0.07, "ndcg@10": 0.30, "precision@10": 0.27, "recall@10": 0.12},
        "train_seconds": 3.2,
        "privacy": {"epsilon": 1.0, "delta": 1e-6, "unit": "user"},
    }
    c = {
        "model": "Popularity",
        "map@10": 0.05,
        "ndcg@10": float("nan"),
        "train_seconds": 0.01,
    }  # flat form
    return a, b, c


def test_model_result_coercion() -> None:
    a, b, c = _results()
    assert a.metrics == {"map@10": 0.11, "ndcg@10": 0.38, "precision@10": 0.33, "recall@10": 0.17}
    assert a.n_users == 942 and a.eval_seconds == 0.09 and a.train_seconds == 0.4
    rb = ModelResult.coerce(b)
    assert rb.privacy is not None and rb.privacy["epsilon"] == 1.0
    rc = ModelResult.coerce(c)
    assert set(rc.metrics) == {"map@10", "ndcg@10"} and rc.train_seconds == 0.01
    with pytest.raises(ValueError, match="model"):
        ModelResult.coerce({"ndcg@10": 0.1})


def test_write_report_json_and_html(tmp_path: Path) -> None:
    html_path, json_path = write_report(
        _results(),
        tmp_path / "out",
        title="ML-100K <benchmark>",
        dataset_info={
            "name": "MovieLens-100K",
            "users": 943,
            "items": 1682,
            "split": "stratified 75/25, seed 42",
        },
        anchors=MS_RECOMMENDERS_ML100K,
    )
    assert html_path.exists() and json_path.exists()
    doc = json.loads(json_path.read_text())  # strict JSON: NaN became null
    assert doc["title"] == "ML-100K <benchmark>"
    assert doc["dataset"]["users"] == 943
    assert [r["model"] for r in doc["results"]] == ["ItemKNN", "DP-ALS <eps=1>", "Popularity"]
    assert doc["results"][0]["metrics"]["ndcg@10"] == 0.38
    assert doc["results"][2]["metrics"]["ndcg@10"] is None
    assert doc["results"][1]["privacy"]["unit"] == "user"
    assert doc["metrics"][:4] == ["map@10", "ndcg@10", "precision@10", "recall@10"]
    sar = next(a for a in doc["anchors"] if a["model"] == "SAR")
    assert sar["metrics"]["ndcg@10"] == 0.382
    lightgcn = next(a for a in doc["anchors"] if a["model"] == "LightGCN")
    assert lightgcn["metrics"]["map@10"] == [0.089, 0.122]
    assert {c["metric"] for c in doc["charts"]} == {"ndcg@10", "recall@10"}
    for c in doc["charts"]:
        png = (tmp_path / "out" / c["file"]).read_bytes()
        assert png.startswith(b"\x89PNG")
        assert b"http" not in png

    html = html_path.read_text()
    assert html.lstrip().startswith("<!DOCTYPE html>")
    assert '<table id="results">' in html
    assert html.count("<img ") == 2 and 'src="data:image/png;base64,' in html
    assert not re.search(r"https?://", html), "the page must not reference anything outside itself"
    assert "<link" not in html and "<script" not in html
    # escaped user text, our rows and the published rows
    assert "ML-100K &lt;benchmark&gt;" in html and "DP-ALS &lt;eps=1&gt;" in html
    assert "ItemKNN" in html and "0.3800" in html
    assert "SAR" in html and "0.382" in html and "0.089–0.122" in html
    assert "published" in html
    assert "ε=1" in html
    assert "Full ranking" in html  # the protocol description


def test_write_report_without_anchors_and_loo(tmp_path: Path) -> None:
    res = [ModelResult("SASRec", {"hr@10": 0.06, "ndcg@10": 0.03, "mrr": 0.02})]
    html_path, json_path = write_report(
        res,
        tmp_path,
        title="Beauty",
        dataset_info={"name": "Amazon Beauty"},
        anchors=BEAUTY_LOO_FULL_RANKING[:3],
        name="beauty",
    )
    assert html_path.name == "beauty.html" and json_path.name == "beauty.json"
    doc = json.loads(json_path.read_text())
    assert {c["metric"] for c in doc["charts"]} == {"ndcg@10", "hr@10"}
    html_path2, _ = write_report(res, tmp_path / "b", title="t", dataset_info={})
    assert "published" not in html_path2.read_text()


def test_render_table() -> None:
    table = render_table(_results(), anchors=MS_RECOMMENDERS_ML100K[:2], title="ML-100K")
    assert table.row_count == 5
    headers = [c.header for c in table.columns]
    assert headers[:5] == ["model", "map@10", "ndcg@10", "precision@10", "recall@10"]
    console = Console(record=True, width=200)
    console.print(table)
    text = console.export_text()
    assert "ItemKNN" in text and "BiVAE (published)" in text and "0.3800" in text


def test_model_result_stays_importable_from_report() -> None:
    # the pipeline and the comparison module import it from report
    from privrec.evaluation import report

    assert report.ModelResult is report_results.ModelResult
    assert "ModelResult" in report.__all__
