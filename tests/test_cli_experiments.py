"""`privrec experiment create|list|report|stop|promote` and `privrec metrics online`."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from privrec.cli import app
from privrec.core.settings import Settings
from privrec.data.synthetic import generate_shop
from privrec.service import RecSys

runner = CliRunner()


def _run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def test_experiment_commands_and_online_metrics(data_dir: Path) -> None:
    events, catalogue = generate_shop(n_items=60, n_users=30, seed=4)
    with RecSys(Settings(data_dir=data_dir)) as rs:
        rs.add_items(catalogue)
        rs.ingest_frame(events)
        rs.train("popularity")
        rs.train("itemknn", params={"k": 20})
        rs.set_default_model("itemknn")
    dd = str(data_dir)
    out = _run(
        "experiment", "create", "knn-vs-pop", "--variant", "control", "--variant",
        "pop=popularity", "--guardrail", "coverage=0.5", "--data-dir", dd,
    )  # fmt: skip
    created = json.loads(out[out.index("{") :])
    assert created["guardrails"] == [{"metric": "coverage", "max_drop": 0.5}]
    bad = _run(
        "experiment", "create", "x", "--variant", "a", "--variant", "b", "--guardrail",
        "coverage", "--data-dir", dd, code=2,
    )  # fmt: skip
    assert "METRIC=MAX_DROP" in bad
    with RecSys(Settings(data_dir=data_dir)) as rs:
        for u in range(20):
            rs.recommend(f"cli-shopper-{u}", k=4, experiment="knn-vs-pop")
    assert "knn-vs-pop" in _run("experiment", "list", "--data-dir", dd)
    out = _run("experiment", "report", "knn-vs-pop", "--data-dir", dd)
    assert "mSPRT" in out and "not ready" in out
    rep = json.loads(_run("experiment", "report", "knn-vs-pop", "--json", "--data-dir", dd))
    assert sum(r["impressions"] for r in rep["online"]) == 20
    refused = _run("experiment", "promote", "knn-vs-pop", "--data-dir", dd, code=2)
    assert "cannot be promoted yet" in refused
    out = _run("experiment", "promote", "knn-vs-pop", "--force", "--arm", "pop", "--data-dir", dd)
    assert json.loads(out[out.index("{") :])["promoted"]["model"] == "popularity"
    doc = json.loads(
        _run("metrics", "online", "--by", "arm", "--days", "2", "--json", "--data-dir", dd)
    )
    assert {r["arm"] for r in doc["totals"]} == {"control", "pop"}
    assert "online metrics by version" in _run("metrics", "online", "--data-dir", dd)
    assert "by: is 'shopper'" in _run(
        "metrics", "online", "--by", "shopper", "--data-dir", dd, code=2
    )
