"""Explanation of one item for one shopper."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from privrec.server.deps import client, recsys
from privrec.server.problems import problem_responses
from privrec.server.responses import JSON
from privrec.server.schemas import ExplainIn, ExplainOut

router = APIRouter(prefix="/v1", tags=["explanations"], dependencies=[Depends(client)])


@router.post(
    "/explanations",
    response_model=ExplainOut,
    responses=problem_responses(401, 403, 404, 413, 422, 429, 503),
)
async def explain(body: ExplainIn, rs: Any = Depends(recsys)) -> JSON:
    """Why this item would be shown to this shopper: score, rank and explanation, from their own
    history and public item data only."""
    return JSON(rs.explain_for(body.user, body.item, model=body.model))
