"""Recommendations for a shopper (the hot path: computed inline, cached per user).

With the fast path on (the default) `server.fastpath` answers this route without FastAPI's
routing; both serve through `server.personal.recommendations`, which decides what the caller
may see of the shopper's own data.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from privrec.server import personal
from privrec.server.deps import Caller, ShopperToken
from privrec.server.problems import problem_responses
from privrec.server.responses import JSON
from privrec.server.schemas import RecommendationOut, RecommendIn

router = APIRouter(prefix="/v1", tags=["recommendations"])


@router.post(
    "/recommendations",
    response_model=RecommendationOut,
    responses=problem_responses(401, 403, 404, 413, 422, 429, 503),
)
async def recommend(
    request: Request, body: RecommendIn, caller: Caller, token: ShopperToken = None
) -> JSON:
    """Top-k items for a shopper, each with its explanation, under the request's business rules.

    What the caller sees of the shopper's own data depends on who calls:

    - admin key, or client key with an `X-Shopper-Token` naming the body's `user`: full
      explanations ("because you bought X", with `because` naming the shopper's items);
    - client key alone: the list is still ranked for the shopper, but each explanation is
      redacted of their items and actions (`because` is empty; "Picked for you" instead of
      the history; rule, popular, new-arrival and context-item texts stay);
    - client key alone on a server with `PRIVREC_SHOPPER_TOKEN_REQUIRED=true`: the anonymous
      shopper's list, `personalized: false`, with a `note` saying why;
    - a token naming another shopper: 403 `not-this-shopper`; a bad or expired one: 401.

    With `experiment`, the shopper's variant (deterministic from their pseudonym and the
    experiment's salt) decides the model and rules; the response names the experiment, the
    variant and a `recommendation_id` to send back with outcome events.
    """
    return JSON(personal.recommendations(request.app.state, caller, token, body))
