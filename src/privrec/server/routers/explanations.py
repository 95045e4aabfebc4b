"""Why an item is shown to a shopper: the explanation and how much each of their items counted.

An explanation is built from the shopper's own history ("because you bought X"), so reading it
is reading their data: like `/v1/me/data` it needs the shopper, not just the shop's front end.

- `POST /v1/me/explanations`, `POST /v1/me/explanations/contributions`: the client key plus a
  valid `X-Shopper-Token`; the shopper is the one the token names (the body names the item).
- `POST /v1/explanations`, `POST /v1/explanations/contributions` (the shopper in the body): the
  admin key (the operator, or the shop's backend on a shopper's behalf, as for
  `/v1/admin/users/export`), or the client key together with a token naming that same shopper.
  A client key alone, or with a token for someone else, is refused with 403: it could otherwise
  read any shopper's history through their explanations.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from privrec.server.deps import RS, Caller, ShopperToken, client
from privrec.server.problems import ProblemError, problem_responses
from privrec.server.responses import JSON
from privrec.server.routers.insights import insights_of
from privrec.server.schemas import NAME_PATTERN, ExplainIn, ExplainOut, Id, Strict
from privrec.server.security import Principal
from privrec.server.tokens import HEADER, app_secret, shopper, verify_shopper_token
from privrec.service import RecSys

router = APIRouter(prefix="/v1", tags=["explanations"])
Shopper = Annotated[str, Depends(shopper)]

NOT_YOURS = (
    "a client key cannot read a shopper's explanation: it is made from their history. Send "
    f"the shopper's token ({HEADER}) to POST /v1/me/explanations, or use the admin key"
)
OTHER_SHOPPER = (
    f"the {HEADER} names another shopper than the body's user: a shopper may read only their "
    "own explanations"
)


class MyExplainIn(Strict):
    """An item to explain to the shopper the token names."""

    item: str = Id
    model: str | None = Field(default=None, pattern=NAME_PATTERN)


def _explain(rs: RecSys, user: str, item: str, model: str | None) -> dict[str, Any]:
    return rs.explain(user, item, model=model).to_dict()


def _check_owner(request: Request, caller: Principal, token: str | None, user: str) -> str:
    """`user`, if the caller may read their explanations (see the module docstring)."""
    if caller.allows("admin"):
        return user
    if token is None:
        raise ProblemError(403, NOT_YOURS, slug="shopper-token-required")
    if verify_shopper_token(app_secret(request.app.state), token) != user:
        raise ProblemError(403, OTHER_SHOPPER, slug="not-this-shopper")
    return user


@router.post(
    "/me/explanations",
    response_model=ExplainOut,
    responses=problem_responses(401, 403, 404, 413, 422, 429, 503),
    dependencies=[Depends(client)],
)
async def explain_mine(rs: RS, body: MyExplainIn, user: Shopper) -> JSON:
    """Why this item would be shown to the shopper the token names: score, rank and explanation,
    from their own history and public item data only."""
    return JSON(await run_in_threadpool(_explain, rs, user, body.item, body.model))


@router.post(
    "/me/explanations/contributions",
    responses=problem_responses(401, 403, 404, 413, 422, 429, 503),
    dependencies=[Depends(client)],
)
async def contributions_mine(request: Request, body: MyExplainIn, user: Shopper) -> JSON:
    """How much each of the token's shopper's own items counted for `item`'s score: contributors
    with their action and share (0..1, largest first), from their history as consent allows."""
    ins = insights_of(request)
    return JSON(
        await run_in_threadpool(lambda: ins.contributions(user, body.item, model=body.model))
    )


@router.post(
    "/explanations",
    response_model=ExplainOut,
    responses=problem_responses(401, 403, 404, 413, 422, 429, 503),
)
async def explain(
    request: Request, rs: RS, body: ExplainIn, caller: Caller, token: ShopperToken = None
) -> JSON:
    """The explanation of `item` for the body's user: admin key, or a client key with that
    shopper's token (a client key alone is refused, 403; shoppers use /v1/me/explanations)."""
    user = _check_owner(request, caller, token, body.user)
    return JSON(await run_in_threadpool(_explain, rs, user, body.item, body.model))


@router.post(
    "/explanations/contributions",
    responses=problem_responses(401, 403, 404, 413, 422, 429, 503),
)
async def contributions(
    request: Request, body: ExplainIn, caller: Caller, token: ShopperToken = None
) -> JSON:
    """Contributions for the body's user: admin key, or a client key with that shopper's token
    (a client key alone is refused, 403; shoppers use /v1/me/explanations/contributions)."""
    user = _check_owner(request, caller, token, body.user)
    ins = insights_of(request)
    return JSON(
        await run_in_threadpool(lambda: ins.contributions(user, body.item, model=body.model))
    )
