"""`privrec robustness-report`: a thin command over evaluation.robustness, on a small shop."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from privrec.cli import app
from privrec.data.synthetic import generate_shop

runner = CliRunner()


def test_robustness_report_from_the_store(tmp_path: Path, data_dir: Path) -> None:
    events, _ = generate_shop(n_items=150, n_users=150, seed=4)
    path = tmp_path / "events.jsonl"
    cols = [
        c
        for c in ("user", "item", "type", "timestamp", "rating", "query", "session", "event_id")
        if c in events
    ]
    events[cols].to_json(path, orient="records", lines=True)
    dd = str(data_dir)
    assert (
        runner.invoke(
            app, ["ingest", str(path), "--data-dir", dd], catch_exceptions=False
        ).exit_code
        == 0
    )
    out = tmp_path / "report"
    res = runner.invoke(
        app,
        [
            "robustness-report",
            "--data-dir",
            dd,
            "--out",
            str(out),
            "--attacks",
            "bandwagon",
            "--fractions",
            "0.05",
            "--defences",
            "detect",
            "--epochs",
            "2",
        ],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    report = json.loads((out / "robustness.json").read_text())
    assert [r["defence"] for r in report["defended"][0]["rows"]] == ["none", "detect"]
    assert (
        (out / "robustness.md").exists()
        and (out / "robustness.html").exists()
        and (out / "attacks.png").exists()
    )
    page = (out / "robustness.html").read_text()
    assert "<table>" in page and "<pre>" not in page  # tables, not raw Markdown
    bad = runner.invoke(app, ["robustness-report", "--data-dir", dd, "--defences", "prayer"])
    assert bad.exit_code != 0 and "defences" in bad.output
