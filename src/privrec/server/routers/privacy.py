"""The privacy budget: the ledger of differentially private releases and each model's guarantee."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from privrec.server.deps import RS, admin
from privrec.server.problems import problem_responses
from privrec.server.responses import JSON

router = APIRouter(prefix="/v1/privacy", tags=["privacy"], dependencies=[Depends(admin)])


@router.get("/budget", responses=problem_responses(401, 403, 429))
async def budget(rs: RS) -> JSON:
    """Spent and remaining privacy budget and the served models' guarantees."""
    return JSON(await run_in_threadpool(rs.privacy_budget))
