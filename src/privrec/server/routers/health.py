"""Liveness and readiness (no key needed; no personal data)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from privrec.server.problems import ProblemError, problem_responses
from privrec.server.responses import JSON

router = APIRouter(prefix="/health", tags=["health"])


@router.get("/live")
async def live() -> JSON:
    """The process is up."""
    return JSON({"status": "live"})


@router.get("/ready", responses=problem_responses(503))
async def ready(request: Request) -> JSON:
    """Ready to serve: histories loaded and a default model active; lists the served versions."""
    st = request.app.state
    if not st.ready:
        raise ProblemError(
            503, st.not_ready_reason or "starting: loading histories and models", slug="not-ready"
        )
    stats = st.rs.serving.stats()
    return JSON(
        {
            "status": "ready",
            "models": stats.get("models", {}),
            "default_model": st.rs.serving.default_model_name(),
        }
    )
