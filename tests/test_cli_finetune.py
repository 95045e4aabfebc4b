"""`privrec finetune`: JSON result, data directory only (the working directory stays empty)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from privrec.cli import app
from privrec.core.settings import Settings
from privrec.data.synthetic import generate_shop
from privrec.service import RecSys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
runner = CliRunner()


def _store(data_dir: Path, n_users: int) -> None:
    events, catalogue = generate_shop(n_items=50, n_users=n_users, seed=3)
    with RecSys(Settings(data_dir=data_dir)) as rs:
        rs.add_items(catalogue)
        rs.ingest_frame(events)


def test_finetune_writes_only_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    _store(data, n_users=40)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("PRIVREC_DATA_DIR", raising=False)
    monkeypatch.delenv("PRIVREC_TEXT_CACHE_DIR", raising=False)
    args = ["finetune", "--data-dir", str(data), "--max-pairs", "64", "--rank", "2"]
    r = runner.invoke(app, [*args, "--name", "cli", "--min-gain", "1", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["adapter"] == "cli" and res["deployed"] is False
    assert "not deployed" in res["reason"] and res["frozen"]["queries"] > 0
    assert (data / "adapters" / "cli" / "adapter_config.json").exists()
    assert (data / "cache" / "embeddings" / "vectors.sqlite").exists()
    assert not list(cwd.iterdir()), "nothing may be written under the working directory"


def test_finetune_errors_exit_2_with_the_reason(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _store(data, n_users=2)
    r = runner.invoke(app, ["finetune", "--data-dir", str(data)])
    assert r.exit_code == 2 and "needs at least 40" in r.output
    r = runner.invoke(app, ["finetune", "--data-dir", str(data), "--holdout", "0.9"])
    assert r.exit_code == 2 and "--holdout" in r.output
    r = runner.invoke(app, ["finetune", "--data-dir", str(data), "--name", "a/b"])
    assert r.exit_code == 2 and "--name" in r.output


def test_evaluate_and_train_of_text_models_write_only_under_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    _store(data, n_users=40)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("PRIVREC_DATA_DIR", raising=False)
    monkeypatch.delenv("PRIVREC_TEXT_CACHE_DIR", raising=False)
    out = tmp_path / "report"
    r = runner.invoke(
        app, ["evaluate", "--models", "content", "--out", str(out), "--data-dir", str(data)]
    )
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", "--model", "content", "--data-dir", str(data)])
    assert r.exit_code == 0, r.output
    assert (data / "cache" / "embeddings" / "vectors.sqlite").exists()
    assert not list(cwd.iterdir()), "nothing may be written under the working directory"
