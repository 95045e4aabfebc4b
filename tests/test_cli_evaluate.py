"""`privrec evaluate` on a small shop: any registered model, k-fold CV, tuning, refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from privrec.cli import app
from privrec.core.settings import Settings
from privrec.data.synthetic import generate_shop
from privrec.service import RecSys

runner = CliRunner()


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data directory holding a small shop (few users and items: each run takes seconds)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("PRIVREC_PSEUDONYM_KEY", raising=False)
        mp.delenv("PRIVREC_STORE_KEY", raising=False)
        mp.delenv("PRIVREC_DATA_DIR", raising=False)
        d = tmp_path_factory.mktemp("evaluate") / "privrec-data"
        events, catalogue = generate_shop(n_items=80, n_users=90, seed=3)
        with RecSys(Settings(data_dir=d)) as rs:
            rs.add_items(catalogue)
            rs.ingest_frame(events)
        yield d


def _invoke(shop_dir: Path, out: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["evaluate", "--data-dir", str(shop_dir), "--out", str(out), *args])
    return result.exit_code, result.output


def _ok(shop_dir: Path, out: Path, *args: str) -> tuple[str, dict[str, object]]:
    code, text = _invoke(shop_dir, out, *args)
    assert code == 0, text
    return text, json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("models", ["foo,ease", "eaze", "ease,itemknnn,popularity", ""])
def test_unknown_names_fail_with_exit_2_and_leave_the_old_report(
    shop_dir: Path, tmp_path: Path, models: str
) -> None:
    out = tmp_path / "reports"
    out.mkdir()
    old = b'{"an": "earlier report"}\n'
    (out / "report.json").write_bytes(old)
    code, text = _invoke(shop_dir, out, "--models", models)
    assert code == 2
    flat = " ".join(text.split())
    assert "unknown model" in flat and "known:" in flat and "dp_ease" in flat
    for bad in (m for m in models.split(",") if m and m not in ("ease", "popularity")):
        assert repr(bad) in flat
    assert (out / "report.json").read_bytes() == old
    assert sorted(p.name for p in out.iterdir()) == ["report.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".evaluate-")]


def test_folds_print_and_write_mean_and_spread(shop_dir: Path, tmp_path: Path) -> None:
    text, doc = _ok(shop_dir, tmp_path, "--models", "popularity,ease", "--folds", "3")
    assert "±" in text and "cross-validation" in text
    cv = doc["cross_validation"]
    assert isinstance(cv, dict) and cv["folds"] == 3
    for name in ("popularity", "ease"):
        model = cv["models"][name]
        assert len(model["folds"]) == 3
        assert 0.0 <= model["mean"]["ndcg@10"] <= 1.0
        assert model["std"]["ndcg@10"] >= 0.0
    assert "3-fold" in json.dumps(doc)


def test_folds_below_two_are_refused(shop_dir: Path, tmp_path: Path) -> None:
    code, _ = _invoke(shop_dir, tmp_path, "--models", "ease", "--folds", "1")
    assert code == 2
    assert not (tmp_path / "report.json").exists()


def test_content_hybrid_and_dp_models_are_evaluated_on_their_own_ledger(
    shop_dir: Path, tmp_path: Path
) -> None:
    ledger_before = sorted(p.name for p in shop_dir.rglob("*ledger*"))
    text, doc = _ok(shop_dir, tmp_path, "--models", "content,hybrid,dp_popularity")
    names = [r["model"] for r in doc["results"]]  # type: ignore[union-attr]
    assert names == ["content", "hybrid", "dp_popularity"]
    ledger = doc["evaluation_ledger"]
    assert isinstance(ledger, dict) and ledger["file"] == "evaluation-ledger.jsonl"
    assert (tmp_path / "evaluation-ledger.jsonl").exists()
    assert "not the data directory's ledger" in json.dumps(doc)
    assert "evaluation ledger" in " ".join(text.split())
    # the data directory's own ledger is untouched: these models are measured, not served
    assert sorted(p.name for p in shop_dir.rglob("*ledger*")) == ledger_before


def test_tune_reports_the_chosen_parameters(shop_dir: Path, tmp_path: Path) -> None:
    text, doc = _ok(shop_dir, tmp_path, "--models", "ease,dp_popularity", "--tune")
    tuning = doc["tuning"]
    assert isinstance(tuning, dict)
    ease = tuning["ease"]
    assert ease["tuned"] is True and ease["chosen"]["reg"] in (50.0, 200.0, 500.0)
    assert [p["reg"] for p in ease["grid"]] == [50.0, 200.0, 500.0]
    assert all(0.0 <= p["ndcg@10"] <= 1.0 for p in ease["grid"])
    assert "carved from the training part" in ease["validation"]
    assert tuning["dp_popularity"]["tuned"] is False
    assert "privacy budget" in tuning["dp_popularity"]["note"]
    assert "tuned ease:" in text
    assert "dp_popularity not tuned" in " ".join(text.split())
    params = {r["model"]: r["params"] for r in doc["results"]}  # type: ignore[union-attr]
    assert params["ease"]["reg"] == ease["chosen"]["reg"]


def test_tune_with_folds_chooses_inside_each_fold(shop_dir: Path, tmp_path: Path) -> None:
    text, doc = _ok(shop_dir, tmp_path, "--models", "ease", "--folds", "2", "--tune")
    per_fold = doc["tuning"]["ease"]["per_fold"]  # type: ignore[index]
    assert len(per_fold) == 2 and all(f["tuned"] for f in per_fold)
    folds = doc["cross_validation"]["models"]["ease"]["folds"]  # type: ignore[index]
    assert [f["params"]["reg"] for f in folds] == [f["chosen"]["reg"] for f in per_fold]
    assert "tuned ease (fold 2):" in text


def test_a_run_that_fails_midway_leaves_the_old_report(
    shop_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import privrec.evaluation.compare as compare

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("the fit ran out of memory")

    monkeypatch.setattr(compare, "compare_models", broken)
    out = tmp_path / "reports"
    out.mkdir()
    (out / "report.json").write_bytes(b"old")
    code, _ = _invoke(shop_dir, out, "--models", "ease")
    assert code != 0
    assert (out / "report.json").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["reports"]
