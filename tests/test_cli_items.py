"""`privrec items import`: the report as JSON, exit 2 when nothing was accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from privrec.cli import app
from privrec.core.settings import Settings
from privrec.service import RecSys

runner = CliRunner()
SECRET = "not-a-price-jane@example.com"


def _trained(data_dir: Path) -> None:
    rows = [
        {"user": f"u{u}", "item": f"p{i}", "type": "view", "timestamp": 1e9 + u * 10 + i}
        for u in range(8)
        for i in range(5)
        if (u + i) % 2
    ]
    with RecSys(Settings(data_dir=data_dir)) as rs:
        rs.ingest_frame(pd.DataFrame(rows))
        rs.train("popularity")


def test_import_round_trip(data_dir: Path, tmp_path: Path) -> None:
    _trained(data_dir)
    f = tmp_path / "catalogue.csv"
    f.write_text(
        "item,title,category,price,stock\n"
        "p0,Mug,Home > Kitchen,4.5,3\n"
        f"p1,Cup,Home > Kitchen,{SECRET},0\n"
        "p2,Pot,Home,20,0\n"
    )
    res = runner.invoke(app, ["items", "import", str(f), "--data-dir", str(data_dir)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["accepted"] == 2 and report["items_written"] == 2
    assert report["rejects"] == [
        {"line": 3, "field": "price", "reason": report["rejects"][0]["reason"]}
    ]
    assert SECRET not in res.output
    with RecSys(Settings(data_dir=data_dir)) as rs:
        got = {r["item"]: r for r in rs.recommend("someone", 5).items}
        assert got["p0"]["title"] == "Mug" and got["p0"]["price"] == 4.5
        assert got["p2"]["in_stock"] is False
        stocked = {r["item"] for r in rs.recommend("someone", 5, rules={"in_stock": True}).items}
        assert "p2" not in stocked and "p0" in stocked


def test_every_row_rejected_exits_2(data_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(
        json.dumps({"title": SECRET}) + "\n" + json.dumps({"item": "a", "price": -1}) + "\n"
    )
    res = runner.invoke(app, ["items", "import", str(f), "--data-dir", str(data_dir)])
    assert res.exit_code == 2
    assert SECRET not in res.output
    assert '"rejected": 2' in res.output


def test_unknown_file_type_is_one_clear_error(data_dir: Path, tmp_path: Path) -> None:
    f = tmp_path / "catalogue.xml"
    f.write_text("<items/>")
    res = runner.invoke(app, ["items", "import", str(f), "--data-dir", str(data_dir)])
    assert res.exit_code == 2
    assert "path" in res.output
