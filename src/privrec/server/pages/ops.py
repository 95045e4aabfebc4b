"""The operator console (`/ops`, admin key): charts, the privacy ledger, reports and controls.

Shows events per day, cache hit ratio and latency, models with their guarantees, experiments
with their click-through per variant, the privacy budget as a gauge with the ledger as a table
and what epsilon means for a shopper, the privacy-utility frontier and robustness plots, and an
index of every report (older ones kept in `reports/archive/`).

Controls are HTML forms posted with the operator's session and a CSRF token; each calls the
same service function as its admin API route (train, activate, experiments). A refused control
re-renders the console with the reason (nothing user-supplied is reflected through a URL).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from fastapi import APIRouter, Form, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse, RedirectResponse, Response

from privrec.core.errors import ConflictError, NotFoundError, PrivrecError, ValidationError
from privrec.server.pages import ops_data
from privrec.server.pages.common import (
    OPERATOR,
    OPS_HOURS,
    check_csrf,
    operator,
    render,
    require_operator,
    set_cookie,
    sign,
)
from privrec.service.report_index import index as report_index

router = APIRouter(include_in_schema=False)
NAME = r"^[a-z0-9][a-z0-9_-]{0,63}$"
# what a control that succeeded says after its redirect (fixed texts: nothing reflected)
DONE = {
    "activated": "Version activated: it serves from the next request.",
    "training": "Training started in the background; the new version is activated when done.",
    "experiment-created": "Experiment created and running.",
    "experiment-stopped": "Experiment stopped; its data stays for the report.",
    "finetuning": "Fine-tuning started in the background; the job history shows its progress.",
    "promoted": "Experiment promoted: the winning arm's model version now serves as the default.",
    "rolled-back": "Rolled back: the previous good version serves from the next request.",
    "scheduled": "Retrain policy saved; the scheduler applies it at its next tick.",
}


def _params(text: str) -> dict[str, Any]:
    """`name=value` pairs, one per line or comma-separated; values parsed as JSON where JSON."""
    out: dict[str, Any] = {}
    for part in re.split(r"[\n,]", text or ""):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValidationError("params", f"expected name=value, got {part[:40]!r}")
        k, v = (s.strip() for s in part.split("=", 1))
        if not re.match(r"^[a-z_][a-z0-9_]{0,63}$", k):
            raise ValidationError("params", f"{k[:40]!r} is not a parameter name")
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v
    return out


def _gather(request: Request) -> dict[str, Any]:
    """Everything the console shows (runs in a worker thread)."""
    rs = request.app.state.rs
    state = request.app.state
    from privrec.models.zoo import available_models

    versions = rs.serving.versions()
    for m in versions.values():
        m["privacy_text"] = ops_data.model_privacy(m.get("privacy"))
    files = report_index(rs.reports_dir)
    return {
        "models": versions,
        "trainable": available_models(),
        "can_finetune": hasattr(rs, "finetuning"),
        "budget": ops_data.budget_view(rs.privacy_budget()),
        "experiments": ops_data.experiments_view(rs),
        "serving": ops_data.serving_view(rs.serving.stats(), state.metrics.registry),
        "events": ops_data.events_chart(state.insights.events_per_day(30)),
        "plots": ops_data.plots(files),
        "reports": files,
        "jobs": ops_data.jobs_view(rs.jobs.recent(25)),
        "online": ops_data.feedback_view(rs.experiments.feedback),
        "schedule": rs.scheduler.status(),
        "report": any(f.name == "report.html" for f in files),
    }


async def _console(request: Request, status: int = 200, message: str | None = None) -> Response:
    ctx = await run_in_threadpool(_gather, request)
    return render(
        request,
        "ops.html.j2",
        status,
        title="Operator console",
        shopper=None,  # the operator's page is no shopper's: no shopper header on it
        operator=True,
        message=message,
        **ctx,
    )


@router.get("/ops", response_class=HTMLResponse)
async def ops(request: Request, done: str | None = Query(default=None, max_length=40)) -> Response:
    """The console, or the operator sign-in form."""
    if not operator(request):
        return render(request, "ops_signin.html.j2", title="Operator sign-in", shopper=None)
    return await _console(request, message=DONE.get(done or ""))


@router.post("/ops/signout")
async def ops_signout(request: Request, csrf: str = Form("")) -> Response:
    """End the operator session."""
    check_csrf(request, csrf)
    resp = RedirectResponse("/ops", status_code=303)
    resp.delete_cookie(OPERATOR, path="/")
    return resp


@router.post("/ops/signin")
async def ops_signin(
    request: Request, key: str = Form(min_length=1, max_length=512), csrf: str = Form("")
) -> Response:
    """Start an operator session (8 hours) after an admin key was shown."""
    check_csrf(request, csrf)
    p = request.app.state.keyring.check(key)
    if p is None or p.role != "admin":
        return render(
            request,
            "ops_signin.html.j2",
            401,
            title="Operator sign-in",
            message="That is not an admin key.",
        )
    resp = RedirectResponse("/ops", status_code=303)
    set_cookie(
        resp,
        OPERATOR,
        sign(request.app.state.page_secret, f"admin|{time.time() + OPS_HOURS * 3600}"),
        OPS_HOURS * 3600,
    )
    return resp


async def _control(request: Request, fn: Any, done: str) -> Response:
    """Run a control; on success back to the console, else the console with the reason."""
    try:
        await run_in_threadpool(fn)
    except PrivrecError as exc:
        status = (
            409
            if isinstance(exc, ConflictError)
            else 404
            if isinstance(exc, NotFoundError)
            else 422
        )
        return await _console(request, status, f"Refused: {exc}")
    return RedirectResponse(f"/ops?done={done}", status_code=303)


@router.post("/ops/activate")
async def ops_activate(
    request: Request,
    model: str = Form(..., max_length=64),
    version: str = Form(..., max_length=64),
    csrf: str = Form(""),
) -> Response:
    """Activate a model version (as POST /v1/models/{name}/activate)."""
    require_operator(request, csrf)
    rs = request.app.state.rs
    return await _control(request, lambda: rs.serving.activate(model, version), "activated")


@router.post("/ops/train")
async def ops_train(
    request: Request,
    model: str = Form(..., max_length=64),
    params: str = Form("", max_length=2000),
    csrf: str = Form(""),
) -> Response:
    """Train a model in the background (as POST /v1/models/{name}/train)."""
    require_operator(request, csrf)
    from privrec.models.zoo import available_models, create_model

    rs = request.app.state.rs

    def start() -> None:
        if model not in available_models():
            raise ValidationError("model", f"{model!r} is not a known model")
        p = _params(params)
        create_model(model, **p)  # refuse bad parameters now, not in the background
        request.app.state.jobs.submit(
            "train", lambda: rs.train(model, params=p).to_dict(), model=model
        )

    return await _control(request, start, "training")


@router.post("/ops/experiments")
async def ops_experiment_create(
    request: Request,
    name: str = Form(..., max_length=64),
    control: str = Form(..., max_length=64),
    treatment: str = Form(..., max_length=64),
    treatment_share: float = Form(0.5, gt=0, lt=1),
    description: str = Form("", max_length=500),
    csrf: str = Form(""),
) -> Response:
    """Create and start an A/B experiment of two models (as POST /v1/experiments)."""
    require_operator(request, csrf)
    from pydantic import ValidationError as PydanticError

    from privrec.server.schemas import ExperimentIn

    rs = request.app.state.rs

    def create() -> None:
        try:
            spec = ExperimentIn.model_validate(
                {
                    "name": name,
                    "description": description,
                    "variants": [
                        {"name": "control", "model": control, "weight": 1 - treatment_share},
                        {"name": "treatment", "model": treatment, "weight": treatment_share},
                    ],
                }
            ).model_dump()
        except PydanticError as exc:
            err = exc.errors()[0]
            field = ".".join(str(x) for x in err.get("loc", ()))
            raise ValidationError(field or "experiment", str(err.get("msg"))) from None
        for v in spec["variants"]:
            v["params"] = {}
        rs.experiments.create(spec)

    return await _control(request, create, "experiment-created")


@router.post("/ops/experiments/stop")
async def ops_experiment_stop(
    request: Request, name: str = Form(..., max_length=64, pattern=NAME), csrf: str = Form("")
) -> Response:
    """Stop an experiment (as POST /v1/experiments/{name}/stop)."""
    require_operator(request, csrf)
    rs = request.app.state.rs
    return await _control(request, lambda: rs.experiments.stop(name), "experiment-stopped")


@router.post("/ops/rollback")
async def ops_rollback(
    request: Request,
    model: str = Form(..., max_length=64, pattern=NAME),
    reason: str = Form("rolled back by the operator", min_length=1, max_length=300),
    csrf: str = Form(""),
) -> Response:
    """Serve the model's previous good version (as POST /v1/models/{name}/rollback)."""
    require_operator(request, csrf)
    rs = request.app.state.rs
    return await _control(
        request, lambda: rs.scheduler.rollback(model, reason=reason), "rolled-back"
    )


@router.post("/ops/schedule")
async def ops_schedule(
    request: Request,
    model: str = Form(..., max_length=64, pattern=NAME),
    every_events: str = Form("", max_length=12),
    every_hours: str = Form("", max_length=12),
    gate: str = Form(""),
    enabled: str = Form(""),
    csrf: str = Form(""),
) -> Response:
    """Set one model's retrain policy (the scheduler's `set_policy`, as PUT /v1/schedule)."""
    require_operator(request, csrf)
    rs = request.app.state.rs

    def number(field: str, text: str, kind: type) -> Any:
        if not text.strip():
            return None
        try:
            return kind(text.strip())
        except ValueError:
            raise ValidationError(field, f"must be a {kind.__name__} or empty") from None

    def save() -> None:
        rs.scheduler.set_policy(
            model,
            {
                "every_events": number("every_events", every_events, int),
                "every_hours": number("every_hours", every_hours, float),
                "gate": gate == "on",
                "enabled": enabled == "on",
            },
        )

    return await _control(request, save, "scheduled")


@router.post("/ops/experiments/promote")
async def ops_experiment_promote(
    request: Request,
    name: str = Form(..., max_length=64, pattern=NAME),
    force: str = Form(""),
    csrf: str = Form(""),
) -> Response:
    """Promote the winning arm (as POST /v1/experiments/{name}/promote); `force` overrides an
    unconcluded test or a breached guardrail, and the result records that it did."""
    require_operator(request, csrf)
    rs = request.app.state.rs
    return await _control(
        request,
        lambda: rs.experiments.promote_served(rs.serving, name, force=force == "on"),
        "promoted",
    )


@router.post("/ops/finetune")
async def ops_finetune(
    request: Request,
    epochs: int = Form(1, ge=1, le=20),
    force: str = Form(""),
    csrf: str = Form(""),
) -> Response:
    """Fine-tune the content encoder (as POST /v1/models/content/finetune): the data are
    checked now (too few co-interactions: refused with the number needed), the training, the
    held-out evaluation and the deployment (only if better, or with `force`) run as a job."""
    require_operator(request, csrf)
    rs = request.app.state.rs
    if not hasattr(rs, "finetuning"):
        return await _console(request, 404, "Refused: fine-tuning is not available here.")
    from privrec.service.finetune import FinetuneOptions

    opts = FinetuneOptions(epochs=epochs, force=force == "on")

    def start() -> None:
        rs.finetuning.prepare(opts)  # refuse now, not in the background
        request.app.state.jobs.submit(
            "finetune",
            lambda report: rs.finetuning.run(opts, progress=report).to_dict(),
            with_progress=True,
        )

    return await _control(request, start, "finetuning")
