"""The closed loop in fast time: a simulated shop driven through the real service path.

One arm = one data directory and one `RecSys` in this process, used as a shop would use it:
the day-0 catalogue is imported, the demo history goes through the privacy gate, the arm's
model is trained; then, day after day, new items are imported on their launch day, each visit
gets a list from `Serving.recommend` (the impression is logged by the serving path), and at
the end of the day the shoppers' events, the list outcomes with their `recommendation_id`
among them, go back through the gate (`Ingestion.batch`, the path of `POST /v1/events/batch`),
where the feedback log attributes them. An arm with a retrain policy has its scheduler ticked
at the start of each day (`Scheduler.tick(now)`), so retrains see every event so far, the
outcomes included. Time is the world's: the feedback log's clock is set to each visit's time.

Each arm runs on its own copy of the world's state (its own store), over the same shoppers and
random numbers as the others (see `privrec.evaluation.loop_world`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from privrec.core.settings import Settings
from privrec.evaluation.loop_world import ShopWorld
from privrec.service.facade import RecSys

logger = logging.getLogger(__name__)

__all__ = ["ArmResult", "ArmSpec", "run_arm"]

_BATCH = 5000  # events per gate call (the HTTP batch route takes the same kind of chunks)


@dataclass(frozen=True)
class ArmSpec:
    """One arm: the model it serves and whether the scheduler retrains it.

    Attributes:
        name: the arm's label.
        model: a registered model name.
        params: its hyper-parameters.
        retrain_every_hours: the retrain policy's period (None: never retrained).
        gate: whether the policy's evaluation gate runs before activation.
    """

    name: str
    model: str
    params: Mapping[str, Any] = field(default_factory=dict)
    retrain_every_hours: float | None = None
    gate: bool = True


@dataclass
class ArmResult:
    """What one arm did, per visit and per day.

    Attributes:
        name: the arm.
        purchases: (visits,) purchases the shopper made from the list (simulated).
        expected: (visits,) the truth's expected purchases for the list served.
        clicks: (visits,) clicked list items.
        day: (visits,) the day of each visit.
        attributed: outcomes the service's feedback log attributed to lists, by type.
        impressions: lists the feedback log recorded.
        jobs: the scheduler's retrain jobs (status, version, reason).
        new_items_shown: share of served list slots that held an item launched after day 0.
        seconds: wall time of the arm (setup included).
    """

    name: str
    purchases: np.ndarray
    expected: np.ndarray
    clicks: np.ndarray
    day: np.ndarray
    attributed: dict[str, int]
    impressions: int
    jobs: list[dict[str, Any]]
    new_items_shown: float
    seconds: float


def run_arm(
    world: ShopWorld,
    arm: ArmSpec,
    data_dir: Path,
    *,
    progress: Callable[[str], None] | None = None,
) -> ArmResult:
    """Simulate `world` for its days with `arm` serving, in a fresh data directory.

    Args:
        world: the simulated shop (read only; visits are recomputed per arm, identically).
        arm: what serves the lists.
        data_dir: an empty directory for the arm's store, keys and models.
        progress: called with a line per day.
    """
    t0 = time.perf_counter()
    say = progress or (lambda line: logger.info("%s", line))
    rs = RecSys(Settings(data_dir=data_dir))
    feedback = rs.experiments.feedback
    now = [world.day_start(1)]
    feedback.clock = lambda: now[0]  # fast time: impressions and attribution on the world's clock
    try:
        rs.add_items(world.launches(0))
        rs.ingest_frame(world.history)
        rs.train(arm.model, params=dict(arm.params))
        rs.set_default_model(arm.model)
        if arm.retrain_every_hours is not None:
            rs.scheduler.set_policy(
                arm.model,
                {"every_hours": arm.retrain_every_hours, "gate": arm.gate},
                now=world.day_start(1),
            )
        purchases: list[int] = []
        expected: list[float] = []
        clicks: list[int] = []
        days: list[int] = []
        new_slots = slots = 0
        jobs: list[dict[str, Any]] = []
        for d in range(1, world.config.days + 1):
            now[0] = world.day_start(d)
            launched = world.launches(d)
            if len(launched):
                rs.add_items(launched)
            if arm.retrain_every_hours is not None:
                jobs += [_job(j) for j in rs.scheduler.tick(now=now[0])]
            records: list[dict[str, Any]] = []
            for visit in world.visits(d):
                now[0] = visit.ts
                rl = rs.recommend(visit.user_id, world.config.k, model=arm.model)
                shown = [str(r["item"]) for r in rl.items]
                idx = [world.item_index.get(s, -1) for s in shown]
                new_slots += sum(1 for i in idx if i >= 0 and world.launch_day[i] > 0)
                slots += len(shown)
                answer, exp = world.respond(visit, shown)
                for e in answer:
                    e["recommendation_id"] = rl.recommendation_id
                records += answer + visit.organic
                purchases.append(sum(1 for e in answer if e["type"] == "purchase"))
                clicks.append(sum(1 for e in answer if e["type"] == "view"))
                expected.append(exp)
                days.append(d)
            now[0] = world.day_start(d) + 86_000.0
            got = {"accepted": 0, "rejected": 0, "outcomes_attributed": 0}
            for s in range(0, len(records), _BATCH):
                res = rs.ingestion.batch(records[s : s + _BATCH])
                for key in got:
                    got[key] += int(res[key])
            n = world.config.visits_per_day
            day_p = purchases[-n:]
            say(
                f"{arm.name} day {d}: {len(day_p)} visits, {sum(day_p)} purchases from lists, "
                f"{got['accepted']} events accepted, {got['rejected']} rejected, "
                f"{got['outcomes_attributed']} outcomes attributed"
            )
        feedback.flush()
        attributed, impressions = _feedback_totals(feedback, world.config.days)
    finally:
        rs.close()
    return ArmResult(
        name=arm.name,
        purchases=np.asarray(purchases, np.int64),
        expected=np.asarray(expected, np.float64),
        clicks=np.asarray(clicks, np.int64),
        day=np.asarray(days, np.int64),
        attributed=attributed,
        impressions=impressions,
        jobs=jobs,
        new_items_shown=new_slots / max(slots, 1),
        seconds=time.perf_counter() - t0,
    )


def _job(job: Mapping[str, Any]) -> dict[str, Any]:
    """A retrain job's record, short."""
    res = job.get("result") or {}
    return {
        "status": job.get("status"),
        "version": res.get("version") if isinstance(res, Mapping) else None,
        "reason": job.get("reason"),
    }


def _feedback_totals(feedback: Any, days: int) -> tuple[dict[str, int], int]:
    """Outcomes attributed by type and lists recorded, from the feedback log's own metrics."""
    rows = feedback.metrics("version", days=days + 2, kind="recommend")
    impressions = sum(int(r.get("impressions") or 0) for r in rows)
    attributed = {
        "clicked_lists": sum(int(r.get("clicked_lists") or 0) for r in rows),
        "carts": sum(int(r.get("carts") or 0) for r in rows),
        "purchases": sum(int(r.get("purchases") or 0) for r in rows),
    }
    return attributed, impressions
