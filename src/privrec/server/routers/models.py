"""Models: list versions, activate one (atomic hot swap), train while serving, follow jobs."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool

from privrec.server.deps import RS, admin
from privrec.server.problems import problem_responses
from privrec.server.responses import JSON
from privrec.server.schemas import ActivateIn, JobOut, TrainIn
from privrec.service.finetune import FinetuneOptions

router = APIRouter(prefix="/v1", tags=["models"], dependencies=[Depends(admin)])
ModelName = Path(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")


@router.get("/models", responses=problem_responses(401, 403, 429))
async def list_models(rs: RS) -> JSON:
    """Every model: its versions, the active one, the one served, and its privacy guarantee."""
    return JSON({"models": await run_in_threadpool(rs.serving.versions)})


@router.post("/models/{name}/activate", responses=problem_responses(401, 403, 404, 413, 422, 429))
async def activate(rs: RS, body: ActivateIn, name: str = ModelName) -> JSON:
    """Serve `version`: loaded first, then swapped in atomically; no request fails meanwhile."""
    return JSON(await run_in_threadpool(rs.serving.activate, name, body.version))


@router.post(
    "/models/{name}/train",
    status_code=202,
    response_model=JobOut,
    responses=problem_responses(401, 403, 404, 413, 422, 429),
)
async def train(rs: RS, request: Request, body: TrainIn, name: str = ModelName) -> JSON:
    """Train `name` on the store in the background and hot-swap the new version in when done."""
    from privrec.models.zoo import available_models, create_model

    if name not in available_models():
        from privrec.core.errors import NotFoundError

        raise NotFoundError(
            f"model: {name!r} is not a known model; known: {', '.join(available_models())}"
        )
    create_model(name, **body.params)  # validates the parameters now, not in the background
    job = request.app.state.jobs.submit(
        "train", lambda: rs.train(name, params=body.params).to_dict(), model=name
    )
    return JSON(job, status_code=202)


@router.post(
    "/models/content/finetune",
    status_code=202,
    response_model=JobOut,
    responses=problem_responses(401, 403, 409, 413, 422, 429),
)
async def finetune(rs: RS, request: Request, body: FinetuneOptions) -> JSON:
    """Fine-tune the content encoder (LoRA) on the store's co-interactions in the background.

    The data are prepared now (409 when the store has too few co-interactions, naming how many
    are needed); training, the held-out evaluation against the frozen encoder and the deployment
    (only if better, or with `force`) run as a job whose `progress` and `result` `GET
    /v1/jobs/{id}` shows.
    """
    await run_in_threadpool(rs.finetuning.prepare, body)  # the 409 comes now, not in the job
    # the job prepares again: an erasure while it waited must not reach the adapter
    job = request.app.state.jobs.submit(
        "finetune",
        lambda report: rs.finetuning.run(body, progress=report).to_dict(),
        model="content",
        with_progress=True,
    )
    return JSON(job, status_code=202)


@router.get(
    "/jobs/{job_id}", response_model=JobOut, responses=problem_responses(401, 403, 404, 422, 429)
)
async def job(request: Request, job_id: str = Path(pattern=r"^[0-9a-f]{12}$")) -> JSON:
    """A background job's status and result."""
    return JSON(request.app.state.jobs.get(job_id))
