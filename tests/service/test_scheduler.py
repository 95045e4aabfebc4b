"""Scheduled retraining in fast time: triggers, the evaluation gate, deadlines, budget, rollback.

The scheduler is driven by `Scheduler.tick(now)` with an injected clock: nothing sleeps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from privrec.core.errors import ConflictError, ValidationError
from privrec.core.settings import Settings
from privrec.service import RecSys
from privrec.service.scheduler import SCHEDULE_FILE, Scheduler

HOUR = 3600.0


def _shop(
    data_dir: Path, *, held_back: list[pd.DataFrame] | None = None, **settings: object
) -> RecSys:
    """The test shop; with `held_back`, its newest 15% of events are left out and put there."""
    from privrec.data.synthetic import generate_shop

    events, catalogue = generate_shop(n_items=240, n_users=160, seed=5)
    rs = RecSys(Settings(data_dir=data_dir, **settings))
    rs.add_items(catalogue)
    if held_back is not None:
        late = events["timestamp"] > events["timestamp"].quantile(0.85)
        held_back.append(events[late])
        events = events[~late]
    rs.ingest_frame(events)
    return rs


@pytest.fixture()
def recent(data_dir: Path) -> Iterator[tuple[RecSys, pd.DataFrame]]:
    """An item-kNN shop whose newest events arrive after the active version was trained."""
    later: list[pd.DataFrame] = []
    r = _shop(data_dir, held_back=later)
    r.train("itemknn", params={"k": 50, "shrink": 5.0})
    yield r, later[0]
    r.close()


@pytest.fixture()
def rs(data_dir: Path) -> Iterator[RecSys]:
    r = _shop(data_dir)
    r.train("itemknn", params={"k": 50, "shrink": 5.0})
    yield r
    r.close()


def _new_events(rs: RecSys, n: int) -> None:
    """`n` purchases by existing shoppers, a day after the newest stored event."""
    t = float(rs.store.events()["ts"].max()) + 86400
    records = [
        {
            "user": f"shopper-{1 + u % 40:05d}",
            "item": f"sku-{(7 * u) % 240:06d}",
            "type": "purchase",
            "timestamp": t + u,
        }
        for u in range(n)
    ]
    report = rs.ingest_events(records)
    assert report.accepted == n, report.to_dict()


def test_every_n_events_triggers_one_retrain(rs: RecSys) -> None:
    now = time.time()
    before = rs.registry.active("itemknn")
    rs.scheduler.set_policy("itemknn", {"every_events": 50}, now=now)
    assert rs.scheduler.tick(now) == []  # nothing new yet
    _new_events(rs, 30)
    assert rs.scheduler.tick(now + 60) == []  # 30 < 50
    _new_events(rs, 25)
    (job,) = rs.scheduler.tick(now + 120)
    assert job["status"] == "succeeded", job
    assert job["trigger"] == "events" and job["model"] == "itemknn"
    assert job["gate"]["passed"] is True and job["gate"]["metric"] == "ndcg@10"
    assert rs.registry.active("itemknn") == job["version"] != before
    assert rs.scheduler.tick(now + 180) == []  # counted from the retrain again
    assert rs.jobs.recent(5)[0]["id"] == job["id"]


def test_every_t_hours(rs: RecSys) -> None:
    now = time.time()
    rs.scheduler.set_policy("itemknn", {"every_hours": 6}, now=now)
    assert rs.scheduler.tick(now + 5 * HOUR) == []
    (job,) = rs.scheduler.tick(now + 6.5 * HOUR)
    assert job["trigger"] == "hours" and job["status"] == "succeeded"
    assert rs.scheduler.tick(now + 7 * HOUR) == []


def test_a_worse_model_is_gated_and_kept_inactive(recent: tuple[RecSys, pd.DataFrame]) -> None:
    """k=1 neighbour is honestly worse than the active k=50 version on events that neither has
    seen: not activated."""
    rs, later = recent
    rs.ingest_frame(later)
    now = time.time()
    before = rs.registry.active("itemknn")
    rs.scheduler.set_policy("itemknn", {"every_hours": 1, "params": {"k": 1}}, now=now)
    (job,) = rs.scheduler.tick(now + 2 * HOUR)
    assert job["status"] == "gated", job
    gate = job["gate"]
    assert gate["passed"] is False and gate["candidate"] < gate["active"] * 0.98
    assert gate["compared_with"] == "the active version's saved artifact"
    assert "kept inactive" in job["reason"] and "worse than" in job["reason"]
    assert rs.registry.active("itemknn") == before  # still serving the good one
    assert job["version"] in rs.registry.models()["itemknn"].versions  # kept, inactive
    assert rs.registry.config_of("itemknn", job["version"])["config"]["k"] == 1


def test_the_gate_scores_the_active_artifact_not_a_refit(
    recent: tuple[RecSys, pd.DataFrame],
) -> None:
    """Unchanged settings: the candidate has the newer events, the active version is scored as
    saved, so the two numbers differ (a refit of the same settings on one split would tie)."""
    rs, later = recent
    rs.scheduler.set_policy("itemknn", {"every_hours": 1, "gate_tolerance": 0.99})
    (job,) = [rs.scheduler.retrain("itemknn")]
    assert "has not seen" in job["gate"]["skipped"]  # nothing new: nothing to compare on
    rs.ingest_frame(later)
    active = rs.registry.active("itemknn")
    (job,) = [rs.scheduler.retrain("itemknn")]
    gate = job["gate"]
    assert gate["active_version"] == active and gate["candidate"] != gate["active"], gate
    assert gate["test_users"] > 0 and gate["passed"] is True
    assert job["status"] == "succeeded"


def test_erasure_deadline_triggers_a_retrain_before_it(rs: RecSys) -> None:
    rs.train("als", params={"embedding_size": 8, "epochs": 2})
    rs.forget("shopper-00003")
    deadline = rs.rights.pending.read()["als"]["deadline"]
    from privrec.service.scheduler import _deadline_ts

    due = _deadline_ts(deadline)
    rs.scheduler.set_policy("als", {"deadline_margin_hours": 12})
    assert rs.scheduler.tick(due - 13 * HOUR) == []  # not yet inside the margin
    (job,) = rs.scheduler.tick(due - 11 * HOUR)
    assert job["trigger"] == "deadline" and job["status"] == "succeeded", job
    assert "erasure deadline" in job["gate"]["skipped"]
    assert "als" not in rs.rights.pending.read()  # nothing owed any more
    assert rs.registry.active("als") == job["version"]
    assert rs.registry.models()["als"].quarantined == []


def test_dp_retrain_over_budget_is_refused_and_recorded(data_dir: Path) -> None:
    rs = _shop(data_dir, privacy_budget_epsilon=0.8, privacy_budget_delta=0.01)
    try:
        rs.train("dp_popularity", params={"epsilon": 1.0, "expected_users": 160})
        before = rs.registry.active("dp_popularity")
        now = time.time()
        rs.scheduler.set_policy("dp_popularity", {"every_hours": 1, "gate": False}, now=now)
        (job,) = rs.scheduler.tick(now + 2 * HOUR)
        assert job["status"] == "refused", job
        spent = rs.ctx.ledger.spent().epsilon
        assert 0.5 < spent < 0.8
        assert job["reason"] == (
            f"refused: would exceed the privacy budget (epsilon {spent:.4g} of 0.8 spent)"
        )
        assert len(rs.ctx.ledger.entries()) == 1  # nothing charged for the refused release
        assert rs.registry.active("dp_popularity") == before
        assert rs.scheduler.tick(now + 2.5 * HOUR) == []  # backs off; no refusal every tick
        assert rs.jobs.recent(1, status="refused")[0]["id"] == job["id"]
    finally:
        rs.close()


def test_a_dp_model_is_not_gated_on_shoppers_held_out_events(data_dir: Path) -> None:
    rs = _shop(data_dir)
    try:
        rs.train("dp_popularity", params={"epsilon": 1.0, "expected_users": 160})
        (job,) = [rs.scheduler.retrain("dp_popularity", trigger="manual")]
        assert job["status"] == "succeeded", job
        assert "DP model is not compared" in job["gate"]["skipped"]
        assert "test_users" not in job["gate"]  # no exact count of shoppers leaves
        # the first training and the retrain: two releases, no hidden gate fits
        assert len(rs.ctx.ledger.entries()) == 2
    finally:
        rs.close()


def test_rollback_restores_the_previous_version_and_serving_uses_it(rs: RecSys) -> None:
    first = rs.registry.active("itemknn")
    rs.serving.model("itemknn")  # served by this process
    second = rs.train("itemknn", params={"k": 20}).version
    assert rs.recommend("shopper-00001", 5, model="itemknn").version == second
    out = rs.scheduler.rollback("itemknn")
    assert out == {
        "model": "itemknn",
        "active": first,
        "previous": second,
        "reason": "rolled back by the operator",
    }
    assert rs.registry.active("itemknn") == first
    assert rs.serving.model("itemknn").version == first  # at once, no refresh needed
    assert rs.recommend("shopper-00001", 5, model="itemknn").version == first
    assert rs.registry.rolled_back("itemknn", second) == "rolled back by the operator"
    assert rs.jobs.recent(1)[0]["kind"] == "rollback"
    with pytest.raises(ConflictError, match="no earlier good version"):
        rs.scheduler.rollback("itemknn")  # the second was rolled back; nothing before the first


def test_a_failed_post_activation_check_rolls_back(rs: RecSys) -> None:
    first = rs.registry.active("itemknn")
    sched = Scheduler(
        rs.ctx,
        rs.registry,
        rs.training,
        rs.serving,
        rs.rights.pending,
        rs.jobs,
        checks=[lambda name, version: "online click-through 0.1% below the 1% guardrail"],
    )
    job = sched.retrain("itemknn")
    assert job["status"] == "failed"
    assert "post-activation check failed: online click-through" in job["reason"]
    assert f"rolled back to {first}" in job["reason"]
    assert rs.registry.active("itemknn") == first
    assert rs.registry.rolled_back("itemknn", job["version"]) is not None


def test_policies_are_sealed_validated_and_persist(rs: RecSys, data_dir: Path) -> None:
    rs.scheduler.set_policy("itemknn", {"every_events": 100, "every_hours": 24})
    raw = (data_dir / SCHEDULE_FILE).read_bytes()
    assert b"every_events" not in raw and b"itemknn" not in raw  # sealed at rest
    with pytest.raises(ValidationError, match="every_events"):
        rs.scheduler.set_policy("itemknn", {"every_events": 0})
    with pytest.raises(ValidationError, match="gate_tolerance"):
        rs.scheduler.set_policy("itemknn", {"gate_tolerance": 2})
    rs.scheduler.retrain("itemknn")
    rs.close()
    with RecSys(Settings(data_dir=data_dir)) as again:
        assert again.scheduler.policies()["itemknn"]["every_events"] == 100
        assert again.jobs.recent(1)[0]["kind"] == "retrain"
        assert b"itemknn" not in (data_dir / "jobs.log").read_bytes()  # sealed lines
