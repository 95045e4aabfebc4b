"""FastAPI dependencies: the RecSys and the caller's role.

Async: a sync dependency would cost a thread hop per request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from privrec.server.security import Principal, authorize
from privrec.server.tokens import HEADER
from privrec.service import RecSys


async def recsys(request: Request) -> RecSys:
    """The app's RecSys."""
    rs: RecSys = request.app.state.rs
    return rs


RS = Annotated[RecSys, Depends(recsys)]
"""A route parameter that receives the app's RecSys."""


async def client(request: Request) -> Principal:
    """A caller with the client (or admin) role."""
    st = request.app.state
    p = authorize(st.keyring, st.limiter, request.headers, "client")
    request.scope["privrec.key"] = p.key_id
    return p


async def admin(request: Request) -> Principal:
    """A caller with the admin role."""
    st = request.app.state
    p = authorize(st.keyring, st.limiter, request.headers, "admin")
    request.scope["privrec.key"] = p.key_id
    return p


Caller = Annotated[Principal, Depends(client)]
"""A route parameter that receives the calling client (or admin) key's principal."""

ShopperToken = Annotated[
    str | None,
    Header(
        alias=HEADER,
        description="a shopper token naming the body's user (from the shop's backend): with a "
        "client key, answers name the shopper's own items only with it",
    ),
]
"""A route parameter that receives the X-Shopper-Token header, if sent."""
