"""Fine-tuning life cycle: held-out items, frozen vs adapted, deploy only if better, erasure."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from privrec.core.errors import ConflictError
from privrec.core.settings import Settings
from privrec.data.synthetic import generate_shop
from privrec.service import RecSys
from privrec.service.adapters import PENDING_PREFIX
from privrec.service.finetune import FinetuneOptions, rank_metrics

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY = {"max_pairs": 64, "rank": 2, "epochs": 1}


def _shop(data_dir: Path, n_users: int = 40) -> RecSys:
    events, catalogue = generate_shop(n_items=50, n_users=n_users, seed=3)
    rs = RecSys(Settings(data_dir=data_dir))
    rs.add_items(catalogue)
    rs.ingest_frame(events)
    return rs


@pytest.fixture()
def shop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RecSys, Path]]:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # whatever is written must land in the data directory, not here
    rs = _shop(tmp_path / "data")
    yield rs, cwd
    rs.close()


def test_heldout_items_are_never_trained_on(shop: tuple[RecSys, Path]) -> None:
    rs, _ = shop
    prep = rs.finetuning.prepare(FinetuneOptions(holdout=0.2, seed=7, **TINY))
    held = set(prep.heldout_items.tolist())
    assert held and prep.queries.size and prep.train_pairs.size
    assert not held & set(prep.train_pairs.ravel().tolist())
    assert set(prep.queries[:, 0].tolist()) <= held  # each query starts from a held-out item
    assert len(prep.train_pairs) <= TINY["max_pairs"]
    again = rs.finetuning.prepare(FinetuneOptions(holdout=0.2, seed=7, **TINY))
    np.testing.assert_array_equal(again.train_pairs, prep.train_pairs)
    np.testing.assert_array_equal(again.queries, prep.queries)
    other = rs.finetuning.prepare(FinetuneOptions(holdout=0.2, seed=8, **TINY))
    assert set(other.heldout_items.tolist()) != held


def test_rank_metrics_by_hand() -> None:
    emb = np.eye(4, dtype=np.float32)
    emb[1] = [0.9, 0.1, 0.0, 0.0]
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    # query 0 -> partner 1 is its nearest: rank 1; query 0 -> partner 2: ties with 3, rank 2
    m = rank_metrics(emb, np.array([[0, 1], [0, 2]]), np.ones(4, bool))
    assert m["recall@10"] == 1.0
    assert m["mrr"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["ndcg@10"] == pytest.approx((1.0 + 1.0 / np.log2(3.0)) / 2)


def test_not_better_is_kept_not_deployed_then_forced_and_erasure_reaches_it(
    shop: tuple[RecSys, Path],
) -> None:
    rs, cwd = shop
    stages: list[str] = []
    # a gain of 1.0 in recall@10 is impossible: the adapter is judged not good enough
    res = rs.finetune(
        FinetuneOptions(name="kept", min_gain=1.0, **TINY),
        progress=lambda s, d, t: stages.append(s),
    )
    assert {"prepare", "train", "evaluate"} <= set(stages) and "deploy" not in stages
    assert not res.better and not res.deployed and res.content is None
    assert res.reason.startswith("not deployed") and "kept on disk" in res.reason
    assert set(res.frozen) == set(res.adapted) >= {"recall@10", "mrr", "ndcg@10"}
    adapter = rs.data_dir / "adapters" / "kept"
    assert (adapter / "adapter_config.json").exists()
    meta = json.loads((adapter / "privrec_adapter.json").read_text())
    assert meta["finetune"]["deployed"] is False and meta["finetune"]["frozen"] == res.frozen
    assert rs.registry.active("content") is None
    assert any(e["action"] == "finetune" for e in rs.ctx.audit_log().entries())

    forced = rs.finetune(FinetuneOptions(name="forced", min_gain=1.0, force=True, **TINY))
    assert forced.deployed and forced.forced and forced.reason.startswith("deployed anyway")
    version = forced.content["version"]
    assert rs.registry.active("content") == version
    cfg = rs.registry.config_of("content", version)["config"]
    assert cfg["adapter"] == "forced"
    assert (
        Path(cfg["adapters_dir"]) == rs.data_dir and rs.data_dir in Path(cfg["cache_dir"]).parents
    )
    served = rs.recommend("shopper-00001", 5, model="content")
    assert served.items
    assert not list(cwd.iterdir()), "nothing may be written under the working directory"

    # erasing a shopper whose events trained the adapter: the content version cannot forget,
    # the used adapter owes a refit, the unused one goes at once
    with pytest.raises(ConflictError, match="used by the active content"):
        rs.finetuning.prepare(FinetuneOptions(name="forced"))  # would change served vectors

    receipt = rs.forget("shopper-00001")
    status = {m["model"]: m["status"] for m in receipt["models"]}
    assert status["content"] == "retrain"
    assert status[PENDING_PREFIX + "forced"] == "retrain"
    assert status[PENDING_PREFIX + "kept"] == "deleted" and not adapter.exists()
    assert {"content", PENDING_PREFIX + "forced"} <= set(receipt["models_pending_retrain"])
    pending = rs.training.pending.read()
    assert {"content", PENDING_PREFIX + "forced"} <= set(pending)
    with pytest.raises(ConflictError, match="refitted"):
        rs.train("content", params={"adapter": "forced"})
    # the scheduler meets the erasure deadline with the frozen encoder; it never "retrains" an
    # adapter (a refit is `privrec finetune`'s)
    due = {m for m, _, _ in rs.scheduler.due(now=time.time() + 400 * 86_400)}
    assert "content" in due and PENDING_PREFIX + "forced" not in due
    job = rs.scheduler.retrain("content", trigger="deadline")
    assert job["status"] == "succeeded", job
    active = rs.registry.active("content")
    assert (
        active != version and rs.registry.config_of("content", active)["config"]["adapter"] is None
    )
    assert "content" not in rs.training.pending.read()
    # the stale adapter, now unused, goes at the next fine-tuning run and its debt with it
    assert rs.finetuning.prune(rs.training.dataset_with_events()[1]) == ["forced"]
    assert not (rs.data_dir / "adapters" / "forced").exists()
    assert PENDING_PREFIX + "forced" not in rs.training.pending.read()
    assert not list(cwd.iterdir())


def test_too_few_interactions_is_a_conflict_naming_the_need(tmp_path: Path) -> None:
    with _shop(tmp_path / "data", n_users=2) as rs, pytest.raises(ConflictError) as exc:
        rs.finetuning.prepare(FinetuneOptions())
    msg = str(exc.value)
    assert "needs at least 40" in msg and "co-interaction pairs" in msg
