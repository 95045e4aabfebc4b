"""FastAPI dependencies: the RecSys, and the caller's role (async: a sync dependency would cost a thread hop per request)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from privrec.server.security import Principal, authorize


async def recsys(request: Request) -> Any:
    """The app's RecSys."""
    return request.app.state.rs


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
