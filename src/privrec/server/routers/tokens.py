"""Shopper tokens for the shop's backend: `POST /v1/admin/shopper-tokens` (admin key).

The backend asks for a token for the shopper it has signed in and hands it to that shopper's
browser, which sends it as `X-Shopper-Token` to `/v1/me/*`.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request

from privrec.server.deps import admin
from privrec.server.problems import problem_responses
from privrec.server.responses import JSON
from privrec.server.schemas import ShopperTokenIn, ShopperTokenOut
from privrec.server.tokens import app_secret, app_ttl, issue_shopper_token

router = APIRouter(tags=["users"])


@router.post(
    "/v1/admin/shopper-tokens",
    response_model=ShopperTokenOut,
    responses=problem_responses(401, 403, 413, 422, 429),
    dependencies=[Depends(admin)],
)
async def create_shopper_token(request: Request, body: ShopperTokenIn) -> JSON:
    """A short-lived token that lets one shopper use `/v1/me/*` (their data and consent)."""
    state = request.app.state
    ttl = body.ttl_seconds or app_ttl(state)
    now = int(time.time())
    token = issue_shopper_token(app_secret(state), body.user, ttl, now=now)
    expires = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + ttl))
    return JSON({"token": token, "expires_at": expires})
