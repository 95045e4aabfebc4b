"""A/B experiments: create, list, stop, report, promote, and replay offline."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, Request
from starlette.concurrency import run_in_threadpool

from privrec.server.deps import RS, admin
from privrec.server.problems import problem_responses
from privrec.server.responses import JSON
from privrec.server.schemas import ExperimentIn, JobOut, PromoteIn, ReplayIn

router = APIRouter(prefix="/v1/experiments", tags=["experiments"], dependencies=[Depends(admin)])
ExpName = Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")


@router.post("", status_code=201, responses=problem_responses(401, 403, 413, 422, 429))
async def create(rs: RS, body: ExperimentIn) -> JSON:
    """Create and start an experiment; the first variant is the control."""
    spec = body.model_dump()
    for v in spec["variants"]:
        v["params"] = (
            {k: val for k, val in (v.get("params") or {}).items() if val not in (None, [], ())}
            if v.get("params")
            else {}
        )
    return JSON(await run_in_threadpool(rs.experiments.create, spec), status_code=201)


@router.get("", responses=problem_responses(401, 403, 429))
async def list_all(rs: RS) -> JSON:
    """All experiments."""
    return JSON({"experiments": rs.experiments.all()})


@router.get("/{name}", responses=problem_responses(401, 403, 404, 422, 429))
async def get_one(rs: RS, name: str = ExpName) -> JSON:
    """One experiment."""
    return JSON(await run_in_threadpool(rs.experiments.get, name))


@router.post("/{name}/stop", responses=problem_responses(401, 403, 404, 422, 429))
async def stop(rs: RS, name: str = ExpName) -> JSON:
    """Stop an experiment (its data stays for the report)."""
    return JSON(await run_in_threadpool(rs.experiments.stop, name))


@router.get("/{name}/report", responses=problem_responses(401, 403, 404, 422, 429))
async def report(
    rs: RS,
    name: str = ExpName,
    alpha: float | None = Query(default=None, gt=0, lt=0.5),
) -> JSON:
    """CTR, conversion and revenue per variant with confidence intervals, significance tests
    against the control (statsmodels) and the sample-ratio-mismatch check; the always-valid
    sequential tests (mSPRT) per arm, the guardrails, per-arm online metrics from the feedback
    log (over the run and per day) and the promotion `decision`."""
    return JSON(await run_in_threadpool(rs.experiments.report, name, alpha=alpha))


@router.post("/{name}/promote", responses=problem_responses(401, 403, 404, 409, 413, 422, 429))
async def promote(rs: RS, body: PromoteIn | None = None, name: str = ExpName) -> JSON:
    """Make the winning arm's model version the default (hot-swapped) and end the experiment.

    Refused with 409 while the sequential test has not concluded or the winner breaches a
    guardrail (the report's `decision` says which), unless `force` is true; `arm` names the arm
    to promote with `force`.
    """
    opts = body or PromoteIn()
    out = await run_in_threadpool(
        rs.experiments.promote_served, rs.serving, name, force=opts.force, arm=opts.arm
    )
    return JSON(out)


@router.post(
    "/{name}/replay",
    status_code=202,
    response_model=JobOut,
    responses=problem_responses(401, 403, 404, 413, 422, 429),
)
async def replay(rs: RS, request: Request, body: ReplayIn, name: str = ExpName) -> JSON:
    """Estimate the experiment offline from held-out data (a background job)."""
    await run_in_threadpool(rs.experiments.get, name)  # 404 now rather than in the job
    job = request.app.state.jobs.submit(
        "replay",
        lambda: rs.replay_experiment(name, k=body.k, paired=body.paired, max_users=body.max_users),
    )
    return JSON(job, status_code=202)
