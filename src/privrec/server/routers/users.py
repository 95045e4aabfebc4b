"""A shopper's data: export (right of access) and erasure (with its receipt).

Clients act for the signed-in shopper (`/v1/me/data`): the client key alone is not enough, the
shopper is the one a valid `X-Shopper-Token` names (see `privrec.server.tokens`). Admins act on
a shopper's behalf (`/v1/admin/users/...`, shopper in the body).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from privrec.server.deps import RS, admin, client
from privrec.server.problems import problem_responses
from privrec.server.responses import JSON
from privrec.server.schemas import AdminUserIn
from privrec.server.tokens import shopper

router = APIRouter(tags=["users"])
Shopper = Annotated[str, Depends(shopper)]


@router.get(
    "/v1/me/data", responses=problem_responses(401, 403, 422, 429), dependencies=[Depends(client)]
)
async def export_me(rs: RS, user: Shopper) -> JSON:
    """Everything stored about the shopper, as JSON."""
    doc = await run_in_threadpool(rs.export_user, user)
    return JSON(doc, headers={"Content-Disposition": 'attachment; filename="my-data.json"'})


@router.delete(
    "/v1/me/data", responses=problem_responses(401, 403, 422, 429), dependencies=[Depends(client)]
)
async def erase_me(rs: RS, user: Shopper) -> JSON:
    """Erase the shopper's events, consent, cached results and experiment records; the receipt.

    The models are updated on a background worker (the receipt lists them and their deadline).
    """
    return JSON(await run_in_threadpool(rs.forget, user, background=True))


@router.post(
    "/v1/admin/users/export",
    responses=problem_responses(401, 403, 413, 422, 429),
    dependencies=[Depends(admin)],
)
async def export_user(rs: RS, body: AdminUserIn) -> JSON:
    """Export a shopper's data on their behalf."""
    doc = await run_in_threadpool(rs.export_user, body.user)
    return JSON(doc)


@router.post(
    "/v1/admin/users/erase",
    responses=problem_responses(401, 403, 413, 422, 429),
    dependencies=[Depends(admin)],
)
async def erase_user(rs: RS, body: AdminUserIn) -> JSON:
    """Erase a shopper's data on their behalf; the receipt (models update in the background)."""
    return JSON(await run_in_threadpool(rs.forget, body.user, background=True))
