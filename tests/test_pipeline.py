"""The main job on a small demo shop: gate -> store -> models -> report -> serving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from privrec.core.errors import ValidationError
from privrec.core.settings import Settings
from privrec.pipeline import run_demo
from privrec.service import RecSys


def test_small_demo_end_to_end(data_dir: Path, tmp_path: Path) -> None:
    with RecSys(Settings(data_dir=data_dir)) as rs:
        result = run_demo(
            rs,
            n_users=300,
            n_items=300,
            seed=5,
            models=["popularity", "itemknn", "ease"],
            out_dir=tmp_path / "rep",
        )
        assert result.ingest["accepted"] > 0 and result.ingest["rejected"] == 0
        by = {r.model: r.metrics["ndcg@10"] for r in result.results}
        assert by["ease"] > by["popularity"] and by["itemknn"] > by["popularity"]
        doc = json.loads(result.report_json.read_text())
        assert json.dumps(doc)  # valid JSON
        html = result.report_html.read_text()
        assert "<img" in html and "http://" not in html and "https://" not in html
        assert result.sample["items"], "the demo serves its best model"
        assert rs.registry.models()[result.best_model].active


def test_demo_never_wipes_a_real_store(data_dir: Path) -> None:
    with RecSys(Settings(data_dir=data_dir)) as rs:
        rs.ingest_events([{"user": "u1", "item": "i1", "type": "view", "timestamp": 1_700_000_000}])
        with pytest.raises(ValidationError, match="did not create"):
            run_demo(rs, n_users=60, n_items=60)
        assert rs.store.count() == 1
