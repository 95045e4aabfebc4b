"""Item-page widgets: items bought together (the same service code the pages use). How much each
of a shopper's items counted for one item is in `routers.explanations` (it reads their history)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from privrec.server.deps import client
from privrec.server.problems import problem_responses
from privrec.server.responses import JSON
from privrec.service.insights import Insights

router = APIRouter(prefix="/v1", tags=["items"], dependencies=[Depends(client)])


def insights_of(request: Request) -> Insights:
    """The app's one `Insights` (its aggregates are cached), made on first use."""
    state = request.app.state
    got = getattr(state, "insights", None)
    if got is None:
        got = state.insights = Insights(state.rs.serving)
    return got


@router.get(
    "/items/{item}/bought-together", responses=problem_responses(401, 403, 404, 422, 429, 503)
)
async def bought_together(
    request: Request,
    item: str = Path(min_length=1, max_length=256),
    k: int = Query(default=6, ge=1, le=100),
) -> JSON:
    """Items that shoppers who bought `item` also bought, from a user-level DP release (noisy pair
    counts, only pairs above a calibrated threshold; `privacy` gives its epsilon and delta); no
    count is given."""
    ins = insights_of(request)
    return JSON(await run_in_threadpool(ins.bought_together, item, k))
