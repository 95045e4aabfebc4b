"""`privrec train --ray/--shards` and `privrec precompute` end to end on a small shop: the sharded
fit saves the same model as the ordinary one, and the precomputed lists are what serving
recommends. The Ray case skips without Ray (the optional `scale` extra)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from privrec.cli import app
from privrec.core.settings import Settings
from privrec.data.synthetic import generate_shop
from privrec.models.ease import EASE
from privrec.service.facade import RecSys
from tests.conftest import assert_no_raw_ids

runner = CliRunner()


@pytest.fixture(scope="module")
def shop_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    events, _catalogue = generate_shop(n_items=120, n_users=90, seed=5)
    path = tmp_path_factory.mktemp("shop") / "events.jsonl"
    events[["user", "item", "type", "timestamp", "event_id"]].to_json(
        path, orient="records", lines=True
    )
    return path, sorted(set(events["user"].astype(str)))


def _run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


def _json(out: str) -> dict[str, object]:
    return dict(json.loads(out[out.index("{") :]))


def test_sharded_train_and_precompute(
    shop_file: tuple[Path, list[str]], data_dir: Path, request: pytest.FixtureRequest
) -> None:
    path, users = shop_file
    dd = str(data_dir)
    _run("ingest", str(path), "--data-dir", dd)
    _run("train", "--model", "ease", "--data-dir", dd)
    _run("train", "--model", "ease", "--shards", "3", "--data-dir", dd)
    with RecSys(Settings(data_dir=data_dir)) as rs:
        v1, v2 = rs.registry.history("ease")[-2:]
        a, _ = rs.registry.load("ease", v1)
        b, _ = rs.registry.load("ease", v2)
    assert isinstance(a, EASE) and isinstance(b, EASE)
    assert np.array_equal(a.weights, b.weights)
    assert np.array_equal(a.gram.toarray(), b.gram.toarray())

    res = _json(_run("precompute", "--k", "5", "--shards", "2", "--data-dir", dd))
    assert res["model"] == "ease" and res["version"] == v2 and res["k"] == 5
    assert res["users"] == len(users) and not res["ray"]
    file = Path(str(res["path"]))
    assert file.is_relative_to(data_dir / "precomputed" / "ease" / v2)
    with RecSys(Settings(data_dir=data_dir)) as rs:
        lists = _read(rs, file)
        items = rs.registry.items_of("ease", v2).keys
        for user in users[:5]:  # each list is what serving recommends to that shopper
            served = [r["item"] for r in rs.recommend(user, 5, model="ease").items]
            pseudo = rs.ctx.pseudonymiser.pseudonymise(user)
            row = int(np.flatnonzero(lists["users"] == pseudo)[0])
            assert [items[i] for i in lists["items"][row]] == served
    assert_no_raw_ids(data_dir, users)  # the lists hold pseudonyms, sealed

    _run("train", "--model", "als", "--shards", "2", "--data-dir", dd, code=2)
    # a DP model through the sharded path: one release, charged once to the data dir's ledger
    _run("train", "--model", "dp_ease", "-p", "top_items=40", "--shards", "2", "--data-dir", dd)
    with RecSys(Settings(data_dir=data_dir)) as rs:
        entries = rs.ctx.ledger.entries()
    assert [e["model"] for e in entries] == ["dp_ease"]
    _run("precompute", "--k", "0", "--data-dir", dd, code=2)

    if pytest.importorskip("ray", reason="Ray is not installed") is not None:
        res = _json(_run("precompute", "--k", "5", "--ray", "--data-dir", dd))
        assert res["ray"] and res["shards"] == 2
        with RecSys(Settings(data_dir=data_dir)) as rs:
            again = _read(rs, Path(str(res["path"])))
        assert np.array_equal(again["items"], lists["items"])
        assert np.array_equal(again["scores"], lists["scores"])
        _run("train", "--model", "ease", "--ray", "--data-dir", dd)
        with RecSys(Settings(data_dir=data_dir)) as rs:
            c, _ = rs.registry.load("ease", rs.registry.history("ease")[-1])
        assert isinstance(c, EASE) and np.array_equal(a.weights, c.weights)


def _read(rs: RecSys, file: Path) -> dict[str, np.ndarray]:
    from privrec.service.precompute import Precompute

    return Precompute(rs.ctx, rs.registry, rs.training).read_lists(file)
