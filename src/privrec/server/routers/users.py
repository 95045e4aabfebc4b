"""A shopper's data: export (right of access) and erasure (with its receipt).

Clients act for the signed-in shopper (`/v1/me/data`, shopper in the `X-User-Id` header); admins
act on a shopper's behalf (`/v1/admin/users/...`, shopper in the body).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header
from starlette.concurrency import run_in_threadpool

from privrec.server.deps import RS, admin, client
from privrec.server.problems import problem_responses
from privrec.server.responses import JSON
from privrec.server.schemas import AdminUserIn

router = APIRouter(tags=["users"])
UserHeader = Header(
    alias="X-User-Id", min_length=1, max_length=256, description="the shopper's id in the shop"
)


@router.get(
    "/v1/me/data", responses=problem_responses(401, 403, 422, 429), dependencies=[Depends(client)]
)
async def export_me(rs: RS, user: str = UserHeader) -> JSON:
    """Everything stored about the shopper, as JSON."""
    doc = await run_in_threadpool(rs.export_user, user)
    return JSON(doc, headers={"Content-Disposition": 'attachment; filename="my-data.json"'})


@router.delete(
    "/v1/me/data", responses=problem_responses(401, 403, 422, 429), dependencies=[Depends(client)]
)
async def erase_me(rs: RS, user: str = UserHeader) -> JSON:
    """Erase the shopper's events, consent record, cached results and experiment records; returns the receipt.

    The models are updated on a background worker (the receipt lists them and their deadline)."""
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
    """Erase a shopper's data on their behalf; returns the receipt (models are updated in the background)."""
    return JSON(await run_in_threadpool(rs.forget, body.user, background=True))
