"""Online metrics of served lists from the feedback log (impressions and their outcomes).

Impressions are logged by the serving path itself when a list is served; outcomes arrive as
events (`POST /v1/events` with the list's `recommendation_id`).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from privrec.server.deps import RS, admin
from privrec.server.problems import problem_responses
from privrec.server.responses import JSON

router = APIRouter(prefix="/v1/metrics", tags=["feedback"], dependencies=[Depends(admin)])


@router.get("/online", responses=problem_responses(401, 403, 422, 429))
async def online(
    rs: RS,
    by: Literal["version", "arm"] = Query(default="version"),
    days: int = Query(default=7, ge=1, le=3660),
    experiment: str | None = Query(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$"),
    kind: Literal["recommend", "search", "similar"] | None = Query(default=None),
) -> JSON:
    """Impressions, CTR, conversion, revenue per shopper and catalogue coverage per model
    version (`by=version`) or experiment arm (`by=arm`): `daily` (per UTC day) and `totals`
    (over the window), with the attribution window in hours."""
    fb = rs.experiments.feedback

    def compute() -> dict[str, object]:
        opts = {"experiment": experiment, "kind": kind}
        return {
            "by": by,
            "days": days,
            "attribution_window_hours": fb.window_s / 3600.0,
            "daily": fb.metrics(by, days, **opts),
            "totals": fb.summary(by, days, **opts),
        }

    return JSON(await run_in_threadpool(compute))
