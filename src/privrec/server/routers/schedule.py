"""Scheduled retraining over HTTP: the policies, the job history and rollback (admin key).

The router's lifespan starts the retrain scheduler (APScheduler, `Scheduler.start`) in the
server process: the embedded store admits one writer process, so while the server runs nothing
else can retrain (`privrec worker` is for when no server runs). Settings:
``PRIVREC_SCHEDULER_ENABLED`` (default true) and ``PRIVREC_SCHEDULER_TICK_SECONDS`` (default 60).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.concurrency import run_in_threadpool

from privrec.server.deps import RS, admin
from privrec.server.problems import problem_responses
from privrec.server.responses import JSON
from privrec.service.jobs import STATUSES


class SchedulerSettings(BaseSettings):
    """Whether and how often the server's scheduler looks for due retrains."""

    model_config = SettingsConfigDict(env_prefix="PRIVREC_SCHEDULER_", extra="ignore")

    enabled: bool = True
    tick_seconds: float = Field(default=60.0, gt=0)


class ScheduleIn(BaseModel):
    """Every model's retrain policy (replaces the current ones; a model left out has none)."""

    model_config = ConfigDict(extra="forbid")

    policies: dict[str, dict[str, Any]] = Field(
        description="model -> {every_events, every_hours, deadline_margin_hours, params, gate, "
        "gate_metric, gate_tolerance, holdout_days, enabled}",
        max_length=64,
    )


class RollbackIn(BaseModel):
    """Why the operator rolls back (recorded in the rolled-back version and the job history)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(default="rolled back by the operator", min_length=1, max_length=300)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the retrain scheduler with the server; stop it with the server."""
    rs = app.state.rs
    settings = SchedulerSettings()
    rs.jobs.interrupted()  # jobs a previous server left queued or running will never finish
    if settings.enabled:
        rs.scheduler.start(settings.tick_seconds, run=app.state.jobs.run_exclusive)
    try:
        yield
    finally:
        rs.scheduler.shutdown()


router = APIRouter(
    prefix="/v1", tags=["schedule"], dependencies=[Depends(admin)], lifespan=lifespan
)
ModelName = Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")


@router.get("/schedule", responses=problem_responses(401, 403, 429))
async def get_schedule(rs: RS) -> JSON:
    """The retrain policies, per-model counters, erasure deadlines and what is due now."""
    status = await run_in_threadpool(rs.scheduler.status)
    return JSON({"policies": {m: s["policy"] for m, s in status["models"].items()}, **status})


@router.put("/schedule", responses=problem_responses(401, 403, 404, 413, 422, 429))
async def put_schedule(rs: RS, body: ScheduleIn) -> JSON:
    """Replace the retrain policies (each validated: unknown fields or models are refused)."""
    await run_in_threadpool(rs.scheduler.replace_policies, body.policies)
    return await get_schedule(rs)


@router.get("/jobs", responses=problem_responses(401, 403, 422, 429))
async def list_jobs(
    rs: RS,
    limit: int = Query(default=50, ge=1, le=1000),
    model: str | None = Query(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$"),
    status: str | None = Query(default=None, pattern=f"^({'|'.join(STATUSES)})$"),
) -> JSON:
    """The job history, newest first: status, reason, times, model, version, gate metrics."""
    jobs = await run_in_threadpool(rs.jobs.recent, limit, model=model, status=status)
    return JSON({"jobs": jobs})


@router.post("/models/{name}/rollback", responses=problem_responses(401, 403, 404, 409, 422, 429))
async def rollback(rs: RS, body: RollbackIn | None = None, name: str = ModelName) -> JSON:
    """Serve the model's previous good version at once (409 when there is none)."""
    reason = body.reason if body is not None else RollbackIn().reason
    return JSON(await run_in_threadpool(lambda: rs.scheduler.rollback(name, reason=reason)))
