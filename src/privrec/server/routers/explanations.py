"""Explanation of one item for one shopper."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from privrec.server.deps import RS, client
from privrec.server.problems import problem_responses
from privrec.server.responses import JSON
from privrec.server.schemas import ExplainIn, ExplainOut

router = APIRouter(prefix="/v1", tags=["explanations"], dependencies=[Depends(client)])


@router.post(
    "/explanations",
    response_model=ExplainOut,
    responses=problem_responses(401, 403, 404, 413, 422, 429, 503),
)
async def explain(rs: RS, body: ExplainIn) -> JSON:
    """Why this item would be shown to this shopper: score, rank and explanation, from their own
    history and public item data only."""
    return JSON(rs.explain(body.user, body.item, model=body.model).to_dict())
