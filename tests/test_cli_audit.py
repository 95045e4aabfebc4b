"""`privrec audit` on a small public dataset folder: LiRA and the canary bound as JSON."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from privrec.cli import app


def _movielens_like(folder: Path) -> Path:
    rng = np.random.default_rng(3)
    lines = []
    for u in range(1, 81):
        for i in rng.choice(np.arange(1, 61), size=12, replace=False):
            lines.append(f"{u}\t{i}\t{int(rng.integers(1, 6))}\t{880000000 + u * 100 + int(i)}")
    folder.mkdir()
    (folder / "u.data").write_text("\n".join(lines) + "\n")
    return folder


def test_audit_prints_lira_and_the_canary_bound(tmp_path: Path) -> None:
    ds = _movielens_like(tmp_path / "ml")
    args = ["audit", "--model", "ease", "-p", "reg=1.0", "--dataset", str(ds)]
    args += ["--shadows", "4", "--runs", "4", "--canaries", "8", "--data-dir", str(tmp_path / "d")]
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    doc = json.loads(next(line for line in res.output.splitlines() if line.startswith("{")))
    assert doc["model"] == "ease" and doc["lira"]["auc"] > 0.6
    assert doc["canary"]["epsilon_lb"] >= 0


def test_audit_names_an_unknown_model(tmp_path: Path) -> None:
    ds = _movielens_like(tmp_path / "ml")
    args = ["audit", "--model", "eaze", "--dataset", str(ds), "--data-dir", str(tmp_path / "d")]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "eaze" in res.output
