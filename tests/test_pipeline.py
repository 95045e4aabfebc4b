"""The main job on a small demo shop: catalogue import -> gate -> store -> CF, hybrid and DP
models -> evaluation, audit, search, explanations -> one report -> the hybrid served."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from privrec.core.errors import ValidationError
from privrec.core.settings import Settings
from privrec.pipeline import DemoSize, run_demo
from privrec.service import RecSys

# the real demo uses DemoSize(); the test the same steps on a small shop with short training
SMALL = DemoSize(
    n_users=200,
    n_items=150,
    sasrec_epochs=1,
    audit_shadows=4,
    audit_runs=4,
    audit_canaries=8,
    audit_users=100,
)


def test_small_demo_end_to_end(data_dir: Path, tmp_path: Path) -> None:
    stages: list[str] = []
    with RecSys(Settings(data_dir=data_dir)) as rs:
        result = run_demo(
            rs,
            seed=5,
            size=SMALL,
            models=["popularity"],
            out_dir=tmp_path / "rep",
            on_stage=stages.append,
        )
        # the catalogue went through the shop's import path, from a JSONL file in the data dir
        assert result.catalogue["file"] == "demo-catalogue.jsonl"
        assert result.catalogue["accepted"] == SMALL.n_items == result.catalogue["items_written"]
        assert (data_dir / "demo-catalogue.jsonl").is_file()
        assert result.ingest["accepted"] > 0 and result.ingest["rejected"] == 0

        by = {r.model: r for r in result.results}
        # the demo shop has item text: its DP model is DP EASE with the text prior (issue 16)
        assert set(by) == {"popularity", "ease", "hybrid", "dp_ease_prior"}
        assert by["ease"].metrics["ndcg@10"] > by["popularity"].metrics["ndcg@10"]
        assert by["hybrid"].metrics["ndcg@10"] > by["popularity"].metrics["ndcg@10"]
        assert by["dp_ease_prior"].privacy and by["dp_ease_prior"].privacy["epsilon"] == 1.0

        # the served DP model is charged to the data directory's ledger
        releases = rs.ctx.ledger.entries()
        assert [e["model"] for e in releases] == ["dp_ease_prior"]
        assert releases[0]["epsilon"] == pytest.approx(1.0)
        # `privrec serve` afterwards serves the hybrid
        assert result.default_model == "hybrid" == rs.registry.default_name()
        assert rs.registry.active("hybrid") and rs.registry.active("dp_ease_prior")
        assert rs.recommend("shopper-00001", 3).model == "hybrid"
        # item embeddings are cached under the data directory
        assert (data_dir / "cache" / "embeddings" / "vectors.sqlite").is_file()

    # one report: HTML (self-contained), JSON and Markdown with every section
    html = result.report_html.read_text()
    assert "<img" in html and "http://" not in html and "https://" not in html
    for section in (
        'id="results"',
        'id="search"',
        'id="privacy"',
        'id="audit"',
        'id="explanations"',
        "placed by a shop rule",
    ):
        assert section in html, section
    md = result.report_md.read_text() if result.report_md else ""
    for heading in (
        "## Model comparison",
        "## Search quality",
        "## The privacy point",
        "## Explanation examples",
        "## Stages",
    ):
        assert heading in md, heading
    assert "shopper-0" not in html + md, "shoppers' ids never reach the report"
    doc = json.loads(result.report_json.read_text())
    show = doc["showcase"]
    assert show["search"]["examples"] and show["search"]["quality"]["queries"] > 0
    assert all(e["mode"] for e in show["search"]["examples"])
    privacy = show["privacy"]
    assert privacy["model"] == "dp_ease_prior" and privacy["baseline"] == "ease"
    audited = {a["model"]: a for a in privacy["audit"]["models"]}
    assert set(audited) == {"ease", "dp_ease_prior"}
    # the non-private model is visibly attackable on this small shop; the DP one is not
    assert audited["ease"]["lira_auc"] > audited["dp_ease_prior"]["lira_auc"]
    pinned = [e for e in show["explanations"] if e["rules"]]
    assert pinned and pinned[0]["items"][0]["kind"] == "rule"
    assert pinned[0]["items"][0]["because"] == []
    # per-stage times, also in the report
    assert len(result.stages) == len(stages) >= 8
    assert [s["stage"] for s in show["stages"]] == stages[: len(show["stages"])]
    assert doc["evaluation_ledger"]["releases"] == 1  # the DP evaluation release


def test_demo_never_wipes_a_real_store(data_dir: Path) -> None:
    with RecSys(Settings(data_dir=data_dir)) as rs:
        rs.ingest_events([{"user": "u1", "item": "i1", "type": "view", "timestamp": 1_700_000_000}])
        with pytest.raises(ValidationError, match="did not create"):
            run_demo(rs, n_users=60, n_items=60)
        assert rs.store.count() == 1
