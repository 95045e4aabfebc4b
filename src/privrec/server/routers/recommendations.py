"""Recommendations for a shopper (the hot path: computed inline, cached per user)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from privrec.server.deps import RS, client
from privrec.server.problems import problem_responses
from privrec.server.responses import JSON
from privrec.server.schemas import RecommendationOut, RecommendIn

router = APIRouter(prefix="/v1", tags=["recommendations"])


@router.post(
    "/recommendations",
    response_model=RecommendationOut,
    responses=problem_responses(401, 403, 404, 413, 422, 429, 503),
    dependencies=[Depends(client)],
)
async def recommend(rs: RS, body: RecommendIn) -> JSON:
    """Top-k items for a shopper, each with its explanation, under the request's business rules.

    With `experiment`, the shopper's variant (deterministic from their pseudonym and the
    experiment's salt) decides the model and rules; the response names the experiment, the
    variant and a `recommendation_id` to send back with outcome events.
    """
    rules = body.rules.model_dump(exclude_defaults=True) if body.rules is not None else None
    out = rs.recommend(
        body.user,
        body.k,
        model=body.model,
        rules=rules,
        context_item=body.context_item,
        experiment=body.experiment,
    )
    return JSON(out.to_dict())
