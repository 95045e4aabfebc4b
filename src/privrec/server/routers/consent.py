"""The shopper's consent level.

The shopper is the one a valid `X-Shopper-Token` names (never the URL, never a bare id): the
client key alone cannot read or change anyone's consent.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from privrec.privacy.consent import LEVEL_TEXTS
from privrec.server.deps import RS, client
from privrec.server.problems import problem_responses
from privrec.server.responses import JSON
from privrec.server.schemas import ConsentIn, ConsentOut
from privrec.server.tokens import shopper

router = APIRouter(prefix="/v1/me", tags=["consent"], dependencies=[Depends(client)])
Shopper = Annotated[str, Depends(shopper)]

# the privacy layer's texts, so the API says exactly what the policy does
LEVELS: dict[str, str] = {lv.value: text.description for lv, text in LEVEL_TEXTS.items()}


@router.get("/consent", response_model=ConsentOut, responses=problem_responses(401, 403, 422, 429))
async def get_consent(rs: RS, user: Shopper) -> JSON:
    """The shopper's consent level."""
    return JSON({"level": rs.consent(user), "levels": LEVELS})


@router.put(
    "/consent", response_model=ConsentOut, responses=problem_responses(401, 403, 413, 422, 429)
)
async def put_consent(rs: RS, body: ConsentIn, user: Shopper) -> JSON:
    """Set the shopper's consent level; it applies from the next request."""
    change = await run_in_threadpool(rs.set_consent, user, body.level)
    return JSON(change.to_dict())
